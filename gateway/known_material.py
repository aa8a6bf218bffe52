"""Known-material matching: the `[csam] hash_lists` files, loaded into an index, and the signals a
prepared message gets from them and from the term list (issue 19).

Where it runs: in the intake process, after the preparation child has hashed the attachments
(parsers/content_hashes.py) — the index is hundreds of MB for ten million digests and the child's address
space is capped; loaded once per worker, again on SIGHUP (a fresh worker in `process` mode, `reload` in
`thread` mode), and cached by file identity so a reload with unchanged lists costs a `stat` per file.

The index: per exact algorithm the digests as an (N, bytes) uint8 array sorted by their first 8 bytes,
with that prefix as a uint64 array for `np.searchsorted` (24–40 bytes per digest: ten million fit in a few
hundred MB, where a Python set of bytes would take over a GB); PDQ as an (N, 4) uint64 array compared by
XOR and popcount (`np.bitwise_count`), all N at once.

Signals, never verdicts: a match adds `hash_match:<label>:<algorithm>:<distance>` to the message's
`csam_signals`; a person's report whose subject or text has a configured wording adds `terms:<language>`.
Terms are not looked for in machine reports (a feed says CSAM in its category, which already marks the case
`csam`) nor in automatic mail (a bounce or an auto-reply quotes what it returns — our own acknowledgement
of a CSAM report would mark every bounce of it); hashes are matched in every kind of message, because a
known image is the same evidence whoever sent it.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gateway.config import CsamConfig
from parsers.csam_terms import DEFAULT_TERMS, TermMatcher
from parsers.hash_lists import DIGEST_BYTES, HashList, parse_hash_list, split_spec
from parsers.types import ContentHash
from storage.store import PreparedMessage

log = logging.getLogger("abuse_gateway.known_material")

EXACT = ("md5", "sha1", "sha256")


@dataclass(frozen=True)
class _Exact:
    prefix: np.ndarray  # (N,) uint64, sorted: the first 8 bytes, big-endian
    digests: np.ndarray  # (N, bytes) uint8, in the same order
    labels: np.ndarray  # (N,) int32, into KnownMaterial.labels

    def find(self, digest: bytes) -> list[int]:
        if len(digest) != self.digests.shape[1] or not len(self.prefix):
            return []
        key = np.frombuffer(digest[:8], dtype=">u8").astype(np.uint64)[0]
        lo, hi = np.searchsorted(self.prefix, key, "left"), np.searchsorted(self.prefix, key, "right")
        if lo == hi:
            return []
        wanted = np.frombuffer(digest, dtype=np.uint8)
        same = np.all(self.digests[lo:hi] == wanted, axis=1)
        return [int(self.labels[lo + i]) for i in np.nonzero(same)[0]]


def _exact(digests: np.ndarray, labels: np.ndarray) -> _Exact:
    prefix = np.ascontiguousarray(digests[:, :8]).view(">u8").reshape(-1).astype(np.uint64)
    order = np.argsort(prefix, kind="stable")
    return _Exact(prefix[order], digests[order], labels[order].astype(np.int32))


@dataclass
class KnownMaterial:
    """Every configured list, indexed; `match` is one image's (or file's) lookup. Not thread-safe (its
    PDQ buffers): one worker, one index."""

    labels: tuple[str, ...]
    exact: dict[str, _Exact]
    pdq: np.ndarray  # (N, 4) uint64
    pdq_labels: np.ndarray  # (N,) int32
    pdq_distance: int = 31
    _xor: np.ndarray | None = field(default=None, repr=False)
    _counts: np.ndarray | None = field(default=None, repr=False)

    @classmethod
    def empty(cls) -> KnownMaterial:
        return cls.from_arrays({}, np.zeros((0, 4), np.uint64), np.zeros(0, np.int32), ())

    @classmethod
    def from_arrays(
        cls,
        exact: dict[str, tuple[np.ndarray, np.ndarray]],
        pdq: np.ndarray,
        pdq_labels: np.ndarray,
        labels: Sequence[str],
        pdq_distance: int = 31,
    ) -> KnownMaterial:
        """`exact`: algorithm → ((N, bytes) uint8 digests, (N,) label indices); `pdq`: (N, 32) uint8 or
        (N, 4) uint64. The benchmark builds its random lists this way."""
        index = {}
        for algorithm in EXACT:
            digests, which = exact.get(
                algorithm, (np.zeros((0, DIGEST_BYTES[algorithm]), np.uint8), np.zeros(0, np.int32))
            )
            index[algorithm] = _exact(digests, which)
        if pdq.dtype == np.uint8:
            pdq = np.ascontiguousarray(pdq).view(">u8").astype(np.uint64)
        return cls(tuple(labels), index, pdq.reshape(-1, 4), pdq_labels.astype(np.int32), pdq_distance)

    @classmethod
    def from_lists(cls, lists: Sequence[HashList], pdq_distance: int = 31) -> KnownMaterial:
        labels: list[str] = []
        columns: dict[str, tuple[list[np.ndarray], list[np.ndarray]]] = {a: ([], []) for a in (*EXACT, "pdq")}
        for hash_list in lists:
            offset = len(labels)
            labels += hash_list.labels
            for algorithm, (digests, which) in columns.items():
                width = DIGEST_BYTES[algorithm]
                digests.append(np.frombuffer(hash_list.digests[algorithm], dtype=np.uint8).reshape(-1, width))
                which.append(np.frombuffer(hash_list.label_of[algorithm], dtype=np.int32) + offset)

        def arrays(algorithm: str) -> tuple[np.ndarray, np.ndarray]:
            digests, which = columns[algorithm]
            if not digests:
                return np.zeros((0, DIGEST_BYTES[algorithm]), np.uint8), np.zeros(0, np.int32)
            return np.concatenate(digests), np.concatenate(which)

        pdq, pdq_labels = arrays("pdq")
        return cls.from_arrays({a: arrays(a) for a in EXACT}, pdq, pdq_labels, labels, pdq_distance)

    def size(self) -> int:
        return sum(len(e.prefix) for e in self.exact.values()) + len(self.pdq)

    def nbytes(self) -> int:
        exact = sum(e.prefix.nbytes + e.digests.nbytes + e.labels.nbytes for e in self.exact.values())
        buffers = self.pdq.nbytes + self.pdq.shape[0] * 4  # _xor and _counts, allocated at first match
        return exact + self.pdq.nbytes + self.pdq_labels.nbytes + buffers

    def match(self, digest: ContentHash) -> list[str]:
        """`label:algorithm:distance` of every list entry `digest` matches (each once)."""
        found: dict[str, None] = {}
        for algorithm in EXACT:
            for label in self.exact[algorithm].find(bytes.fromhex(getattr(digest, algorithm))):
                found[f"{self.labels[label]}:{algorithm}:0"] = None
        if digest.pdq and len(self.pdq):
            query = np.frombuffer(bytes.fromhex(digest.pdq), dtype=">u8").astype(np.uint64)
            near = self._pdq_candidates(query)
            distances = np.bitwise_count(self.pdq[near] ^ query).sum(axis=1, dtype=np.uint16)
            for i in np.argsort(distances, kind="stable"):
                if distances[i] <= self.pdq_distance:
                    found.setdefault(f"{self.labels[self.pdq_labels[near[i]]]}:pdq:{int(distances[i])}")
        return list(found)

    def _pdq_candidates(self, query: np.ndarray) -> np.ndarray:
        """Rows within the distance, and (rarely) rows exactly 256 bits away, which the caller drops.

        In place into buffers kept for the purpose (the worker matches one image at a time): XOR, popcount
        per 64-bit word (4 bytes a row), then the row's 4 counts summed by one multiply of the 4 bytes seen
        as a uint32 (the top byte of `x * 0x01010101` is their sum, mod 256: only a distance of 256 wraps,
        to 0). Temporaries of 32 MB per million hashes made the plain expression twice as slow."""
        if self._xor is None or len(self._xor) != len(self.pdq):
            self._xor = np.empty_like(self.pdq)
            self._counts = np.empty(self.pdq.shape, dtype=np.uint8)
        assert self._counts is not None
        np.bitwise_xor(self.pdq, query, out=self._xor)
        np.bitwise_count(self._xor, out=self._counts)
        sums = self._counts.view(np.uint32).reshape(-1)
        np.multiply(sums, np.uint32(0x01010101), out=sums)
        return np.nonzero(sums <= np.uint32((self.pdq_distance << 24) | 0xFFFFFF))[0]


# The last index built, by the identity of its files ((path, mtime_ns, size, declared) each) and distance:
# a worker rebuilt on SIGHUP with unchanged lists reuses it instead of reading ten million lines again.
# Only the last: two indexes of hundreds of MB side by side is what the cache must not cause.
_LAST: tuple[object, KnownMaterial] | None = None


def load_lists(specs: Sequence[str], pdq_distance: int = 31) -> KnownMaterial:
    """The configured lists, indexed. A list that cannot be read is logged and skipped (the others still
    match): config validation has already checked that each file exists at start."""
    global _LAST
    identity: list[tuple[str, int, int, str | None]] = []
    for spec in specs:
        declared, path = split_spec(spec)
        try:
            stat = os.stat(path)
        except OSError as exc:
            log.error("hash list unreadable: path=%s error=%s", path, type(exc).__name__)
            continue
        identity.append((path, stat.st_mtime_ns, stat.st_size, declared))
    key = (tuple(identity), pdq_distance)
    if _LAST is not None and _LAST[0] == key:
        return _LAST[1]
    _LAST = None  # the old index may go before the new one is built
    lists: list[HashList] = []
    for path, _, _, declared in identity:
        try:
            text = Path(path).read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            log.error("hash list unreadable: path=%s error=%s", path, type(exc).__name__)
            continue
        hash_list = parse_hash_list(text, Path(path).stem, declared)
        del text
        if hash_list.bad_lines:
            log.warning("hash list: path=%s bad_lines=%d", path, hash_list.bad_lines)
        lists.append(hash_list)
    known = KnownMaterial.from_lists(lists, pdq_distance)
    if specs:
        log.info("hash lists loaded: lists=%d digests=%d bytes=%d", len(lists), known.size(), known.nbytes())
    _LAST = (key, known)
    return known


class CsamSignals:
    """The term matcher and the hash index of one configuration; `apply` gives a prepared message its
    `csam_signals`."""

    def __init__(self, terms: TermMatcher, known: KnownMaterial) -> None:
        self.terms, self.known = terms, known

    @classmethod
    def from_config(cls, config: CsamConfig) -> CsamSignals:
        terms = (*DEFAULT_TERMS, *config.terms) if config.default_terms else config.terms
        return cls(TermMatcher(terms), load_lists(config.hash_lists, config.pdq_distance))

    def signals(self, item: PreparedMessage) -> tuple[str, ...]:
        found: dict[str, None] = {}
        if item.kind == "report":
            for language in self.terms.languages(item.parsed.subject, item.parsed.text):
                found[f"terms:{language}"] = None
        if item.content_hashes is not None and self.known.size():
            for digest in item.content_hashes.all():
                for hit in self.known.match(digest):
                    found[f"hash_match:{hit}"] = None
        return tuple(found)

    def apply(self, item: PreparedMessage) -> PreparedMessage:
        signals = self.signals(item)
        if not signals:
            return item
        return dataclasses.replace(item, csam_signals=tuple(dict.fromkeys((*item.csam_signals, *signals))))
