"""The text of a known-material hash list, read into digests per algorithm (pure: text in, data out).

What a provider receives (NCMEC, IWF, Meta's ThreatExchange for PDQ) comes in a few shapes, all accepted:

* one hex digest per line; `#` starts a comment, blank lines are skipped. The algorithm is the length:
  32 hex digits MD5, 40 SHA-1, 64 SHA-256 — or PDQ when the list is declared `pdq` (a PDQ hash is also
  64 hex digits, so a PDQ list must say so: `pdq:/path` in `[csam] hash_lists`, or a CSV header);
* CSV with a header row naming its columns: any of `md5`, `sha1`, `sha256`, `pdq` (a digest each, empty
  cells skipped) and optionally `label` (what a match is reported as; otherwise the list's own name).
  `hash` is accepted for the digest column of a headerless-style list (the algorithm then by length or
  declaration). Other columns are ignored.

A line that is not a digest is counted (`bad_lines`), never fatal: one stray line in a list of millions
must not switch matching off.
"""

from __future__ import annotations

import csv
import io
from array import array
from dataclasses import dataclass, field

ALGORITHMS = ("md5", "sha1", "sha256", "pdq")
DIGEST_BYTES = {"md5": 16, "sha1": 20, "sha256": 32, "pdq": 32}
_BY_LENGTH = {32: "md5", 40: "sha1", 64: "sha256"}
_HEX = frozenset("0123456789abcdefABCDEF")


@dataclass
class HashList:
    """Digests per algorithm, concatenated (`DIGEST_BYTES` each: ten million MD5s are 160 MB here, where a
    list of bytes objects would be 600), each with the index of its label in `labels` (0: the list's name)."""

    name: str
    labels: list[str] = field(default_factory=list)
    digests: dict[str, bytearray] = field(default_factory=lambda: {a: bytearray() for a in ALGORITHMS})
    label_of: dict[str, array[int]] = field(default_factory=lambda: {a: array("i") for a in ALGORITHMS})
    bad_lines: int = 0

    def count(self) -> int:
        return sum(len(d) // DIGEST_BYTES[a] for a, d in self.digests.items())

    def of(self, algorithm: str) -> list[bytes]:
        """The digests of one algorithm, one by one (tests, tools; the index reads `digests` whole)."""
        width, data = DIGEST_BYTES[algorithm], self.digests[algorithm]
        return [bytes(data[i : i + width]) for i in range(0, len(data), width)]


def split_spec(spec: str) -> tuple[str | None, str]:
    """`pdq:/lists/tx.csv` → ("pdq", "/lists/tx.csv"); a plain path has no declared algorithm."""
    head, sep, rest = spec.partition(":")
    if sep and head.lower() in ALGORITHMS:
        return head.lower(), rest
    return None, spec


def _algorithm(digest: str, declared: str | None) -> str | None:
    if declared is not None:
        return declared if len(digest) == 2 * DIGEST_BYTES[declared] else None
    return _BY_LENGTH.get(len(digest))


def _is_hex(value: str) -> bool:
    return bool(value) and all(c in _HEX for c in value)


def parse_hash_list(text: str, name: str, declared: str | None = None) -> HashList:
    """Every digest in `text`; `name` labels the matches of rows without a label of their own."""
    result = HashList(name=name, labels=[name])
    labels = {name: 0}
    lines = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    if not lines:
        return result
    first = [cell.strip().lower() for cell in lines[0].split(",")]
    columns = [c for c in first if c in (*ALGORITHMS, "hash")]
    if not columns:  # no header: one digest per line, an optional label after a comma
        rows: list[dict[str, str]] = []
        for line in lines:
            digest, _, label = line.partition(",")
            rows.append({"hash": digest, "label": label})
    else:
        rows = list(csv.DictReader(io.StringIO("\n".join(lines[1:])), fieldnames=first))
    for row in rows:
        label = (row.get("label") or "").strip() or name
        index = labels.setdefault(label, len(labels))
        if index == len(result.labels):
            result.labels.append(label)
        found = False
        for column in columns or ["hash"]:
            digest = (row.get(column) or "").strip()
            if not digest:
                continue
            algorithm = _algorithm(digest, declared if column == "hash" else column)
            if algorithm is None or not _is_hex(digest):
                result.bad_lines += 1
                found = True
                continue
            result.digests[algorithm] += bytes.fromhex(digest)
            result.label_of[algorithm].append(index)
            found = True
        if not found:
            result.bad_lines += 1
    return result
