"""The MIME tree of one message, parsed once and bounded, for every parser of the intake (issue 18).

`parse_tree` is the only place that hands raw bytes to the stdlib `email` parser: `parse_message`, the
machine-report, forward and bounce parsers all read the `MimeTree` it returns. The tree stays in the
process that parsed it (it is never part of a pickled ParsedMessage). Two stdlib traits shape the code,
measured on CPython 3.11:

* the feed parser keeps every header and recurses once per multipart level (RecursionError near 1000
  levels), so the top-level header block is cut to `ParseLimits` before it sees the bytes, and a nesting
  that exhausts the recursion limit is read headers-only;
* the tree's own walk() is recursive, so the walks here are iterative and bounded by `ParseLimits`.

Headers are fetched through `GuardedHeaderFactory` (policy.default's registry behind a cap and a budget);
a consumer that needs a header exactly as sent (as compat32 gave it) reads `raw_header`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email import policy as email_policy
from email.message import Message
from email.parser import BytesParser
from itertools import islice
from typing import TypeVar

from parsers.headers import GuardedHeaderFactory

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class ParseLimits:
    """Bounds on the work one message may cost; beyond them the parse stops descending and says so.

    The defaults leave every real report alone (the shared corpus peaks at a few dozen parts) while keeping
    a hostile message to a bounded cost on a 2-core gateway.
    """

    max_headers: int = 1000
    max_header_bytes: int = 1024 * 1024  # the whole top-level header block
    max_mime_depth: int = 20
    max_parts: int = 500


DEFAULT_LIMITS = ParseLimits()

# Line ends as the stdlib feed parser sees them: CRLF, bare CR or bare LF (email.feedparser.NLCRE_crack).
_EOL = rb"(?:\r\n|\r(?!\n)|\n)"
# The top-level header block as email.feedparser recognises header lines (its headerRE) and continuations.
_HEADER_BLOCK_RE = re.compile(rb"(?:(?:From |[\x21-\x39\x3b-\x7e]*:|[ \t])[^\r\n]*" + _EOL + rb")*")
_FIELD_START_RE = re.compile(rb"(?:\A|(?<=\n)|(?<=\r)(?!\n))(?=[^ \t\r\n])")
_CAMEL_RE = (re.compile(r"([A-Z]+)([A-Z][a-z])"), re.compile(r"([a-z0-9])([A-Z])"))


@dataclass(frozen=True, slots=True)
class MimeTree:
    """One parsed message: the root, the parts `parse_message` visits and its leaves, within `limits`.

    `parse_defects` (input and header-block problems) and `walk_defects` (parts not visited) are kept apart
    so `parse_message` reports them in the order a reader of the message meets them.
    """

    root: Message
    parts: tuple[Message, ...]
    leaves: tuple[Message, ...]  # message/* parts are leaves: a forwarded message is evidence
    limits: ParseLimits
    factory: GuardedHeaderFactory
    parse_defects: tuple[str, ...] = ()
    walk_defects: tuple[str, ...] = ()
    empty: bool = False


def parse_tree(raw: bytes, limits: ParseLimits = DEFAULT_LIMITS) -> MimeTree:
    """The bounded MIME tree of `raw`; never raises (what cannot be parsed is an empty tree and a defect)."""
    factory = GuardedHeaderFactory()
    defects: list[str] = []
    try:
        if not isinstance(raw, bytes | bytearray | memoryview):
            raise TypeError("raw must be bytes")
        raw = bytes(raw)
        if not raw.strip(b" \t\r\n"):
            return MimeTree(Message(), (), (), limits, factory, empty=True)
        if b"\x00" in raw:
            defects.append("nul_bytes")
        raw = _limit_header_block(raw, limits, defects)
        root = _parse(raw, factory, defects)
        return subtree(root, limits, factory, tuple(defects), nested=False)
    except Exception as exc:  # last resort: the normal path handles bad input itself
        defects.append(f"parse_error: {type(exc).__name__}")
        return MimeTree(Message(), (), (), limits, factory, tuple(defects))


def subtree(
    root: Message,
    limits: ParseLimits,
    factory: GuardedHeaderFactory,
    parse_defects: tuple[str, ...] = (),
    *,
    nested: bool = True,
) -> MimeTree:
    """A tree rooted at an already-parsed message, e.g. one forwarded inside a report."""
    walk_defects: list[str] = []
    parts, leaves = walk_tree(root, limits, walk_defects)
    empty = nested and not root.keys() and not root.get_payload()
    return MimeTree(
        root, tuple(parts), tuple(leaves), limits, factory, parse_defects, tuple(walk_defects), empty
    )


def as_tree(source: bytes | MimeTree, limits: ParseLimits = DEFAULT_LIMITS) -> MimeTree:
    """Callers that hold only the bytes (tests, the CLI) get the same tree the intake parses once."""
    return source if isinstance(source, MimeTree) else parse_tree(source, limits)


def raw_header(msg: Message, name: str) -> str | None:
    """The first `name` header as sent (unfolding aside), as compat32 returned it: no registry parse, no
    RFC 2047 decoding, no cap. For values compared as protocol tokens (Message-ID, X-ARF: YES)."""
    wanted = name.lower()
    for key, value in msg.raw_items():
        if key.lower() == wanted:
            return str(value)
    return None


def all_parts(root: Message, limits: ParseLimits) -> Iterator[Message]:
    """Every part in document order, descending into message/* too (what Message.walk() visits), without
    recursion and within `limits`."""
    stack: list[tuple[Message, int]] = [(root, 0)]
    seen = 0
    while stack and seen < limits.max_parts:
        part, depth = stack.pop()
        seen += 1
        yield part
        payload = part.get_payload()
        if isinstance(payload, list) and depth < limits.max_mime_depth:
            stack.extend((child, depth + 1) for child in reversed(payload) if isinstance(child, Message))


def _limit_header_block(raw: bytes, limits: ParseLimits, defects: list[str]) -> bytes:
    """Cut the top-level header block to the limits before the stdlib sees it.

    Why here: the feed parser keeps every header and `Message.get` scans them linearly in Python, so a
    hostile block costs time long before any limit could be applied to the parsed tree.
    """
    end = _HEADER_BLOCK_RE.match(raw).end()  # type: ignore[union-attr]  # matches the empty string at worst
    block = raw[:end]
    cut = len(block)
    if cut > limits.max_header_bytes:
        defects.append(f"too_complex: header block over {limits.max_header_bytes} bytes")
        limit = limits.max_header_bytes
        cut = max(block.rfind(b"\n", 0, limit), block.rfind(b"\r", 0, limit)) + 1
        if cut == 0:  # one line longer than the limit: keep its start as a header of its own
            return block[: limits.max_header_bytes] + b"\r\n" + raw[end:]
    if block.count(b"\n") + block.count(b"\r") < limits.max_headers:  # fewer lines than fields allowed
        return raw if cut == end else raw[:cut] + raw[end:]
    beyond = next(islice(_FIELD_START_RE.finditer(block, 0, cut), limits.max_headers, None), None)
    if beyond is not None:
        defects.append(f"too_complex: more than {limits.max_headers} headers")
        cut = beyond.start()
    return raw if cut == end else raw[:cut] + raw[end:]


def _parse(raw: bytes, factory: GuardedHeaderFactory, defects: list[str]) -> Message:
    """Build the MIME tree; a nesting deep enough to exhaust the recursion limit is read headers-only."""
    policy = email_policy.default.clone(header_factory=factory)
    try:
        return BytesParser(policy=policy).parsebytes(raw)
    except RecursionError:
        defects.append("too_complex: MIME nesting beyond the parser's recursion limit")
        return BytesParser(policy=policy).parsebytes(raw, headersonly=True)


def walk_tree(root: Message, limits: ParseLimits, defects: list[str]) -> tuple[list[Message], list[Message]]:
    """Every visited part and the leaves, in document order, without recursion.

    message/* parts are leaves: a forwarded message is evidence, not the reporter's own text (and the
    stdlib's own walk() is recursive).
    """
    parts: list[Message] = []
    leaves: list[Message] = []
    stack: list[tuple[Message, int]] = [(root, 0)]
    while stack:
        part, depth = stack.pop()
        if len(parts) >= limits.max_parts:
            defects.append(f"too_complex: more than {limits.max_parts} MIME parts")
            break
        parts.append(part)
        maintype = guard(part.get_content_maintype, "text", defects, "bad_header: content-type")
        if maintype == "message" or not part.is_multipart():
            leaves.append(part)
        elif depth >= limits.max_mime_depth:
            defects.append(f"too_complex: MIME nesting deeper than {limits.max_mime_depth}")
        else:
            children = part.get_payload()
            stack.extend((child, depth + 1) for child in reversed(children) if isinstance(child, Message))
    return parts, leaves


def defect_name(defect: object) -> str:
    """`MissingHeaderBodySeparatorDefect` -> `missing_header_body_separator_defect`: stable, greppable."""
    name = type(defect).__name__
    for pattern in _CAMEL_RE:
        name = pattern.sub(r"\1_\2", name)
    return name.lower()


def guard(call: Callable[[], T], fallback: T, defects: list[str], defect: str) -> T:
    """Run one stdlib accessor that may raise on hostile input; record `defect` and go on if it does."""
    try:
        return call()
    except Exception:
        defects.append(defect)
        return fallback
