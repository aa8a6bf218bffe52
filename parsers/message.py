"""Turn the raw bytes of one inbound message into a `ParsedMessage`, whatever the bytes are.

The desk must see every report, so this module never raises: malformed input is decoded as far as it
goes and the damage is recorded in `defects`. The MIME tree comes from the stdlib `email` package
(policy.default). Three stdlib traits shape the code, all measured on CPython 3.11:

* the policy.default header parser is pure Python and super-linear (a 2 KB value costs ~14 ms, a 400 KB
  folded Subject ~7 s, `((((` raises RecursionError), so it only ever sees short structured values
  (`_GuardedHeaderFactory`) and unstructured text is RFC 2047-decoded by a linear decoder here;
* the feed parser recurses once per multipart level (RecursionError near 1000 levels);
* `html.parser` raises AssertionError on unknown `<![...` marked sections.

mail-parser is not called on this path: it costs ~0.9 ms per 2 KB message (as much as everything else)
and ~0.1 ms per Received header for its sender-IP scan, so the Received walk below does the same job with
the stdlib. Its defect categories are the stdlib defect classes, which are collected here directly.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import hashlib
import ipaddress
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import policy as email_policy
from email.generator import BytesGenerator
from email.headerregistry import BaseHeader
from email.message import Message
from email.parser import BytesParser
from email.utils import getaddresses, parsedate_to_datetime
from html.parser import HTMLParser
from io import BytesIO
from itertools import islice
from typing import TypeVar

from parsers.types import Attachment, ParsedMessage

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

# Structured MIME header values (Content-Type, Content-Disposition, ...) handed to the policy.default
# registry: each is cut to this length, and once a message has spent the budget only the essentials
# (type and boundary) are parsed. Real values are under 300 characters; the parser costs ~7 µs per char.
_MAX_STRUCTURED_CHARS = 2048
_STRUCTURED_BUDGET = 64 * 1024
# Address headers go through the (correct but slow) registry up to this length, then through
# email.utils.getaddresses, which is linear, on at most _MAX_ADDRESS_CHARS.
_MAX_REGISTRY_ADDRESS_CHARS = 1024
_MAX_ADDRESS_CHARS = 64 * 1024
_MAX_DATE_CHARS = 256
_MAX_RECEIVED_SCAN = 4096  # a genuine Received header is a few hundred characters
# html.parser is pure Python (~1 s per 10 MB) and has super-linear paths on malformed markup.
_MAX_HTML_CHARS = 1024 * 1024
_MAX_MARKED_SECTIONS = 500  # Outlook's conditional comments number in the dozens

# Line ends as the stdlib feed parser sees them: CRLF, bare CR or bare LF (email.feedparser.NLCRE_crack).
_EOL = rb"(?:\r\n|\r(?!\n)|\n)"
# The top-level header block as email.feedparser recognises header lines (its headerRE) and continuations.
_HEADER_BLOCK_RE = re.compile(rb"(?:(?:From |[\x21-\x39\x3b-\x7e]*:|[ \t])[^\r\n]*" + _EOL + rb")*")
_FIELD_START_RE = re.compile(rb"(?:\A|(?<=\n)|(?<=\r)(?!\n))(?=[^ \t\r\n])")
_CRLF_RE = re.compile(r"\r\n?|\n")
_SPACE_RE = re.compile(r"\s+")
_BLANK_LINES_RE = re.compile(r"\n{3,}")
_FOLD_RE = re.compile(r"[\r\n]+")
# RFC 2047 §2 encoded-word; the optional *lang suffix is RFC 2231 §5.
_ENCODED_WORD_RE = re.compile(r"=\?([^?\s*]+)(?:\*[^?\s]*)?\?([bBqQ])\?([^?\s]*)\?=")
_MSG_ID_RE = re.compile(r"<\s*([^<>\s]+?)\s*>")
_ADDR_SPEC_RE = re.compile(r"[^\s<>,;:\"()@]+@[^\s<>,;:\"()@]+")
_BOUNDARY_RE = re.compile(r"""boundary\s*=\s*("[^"]{1,200}"|[^\s;"]{1,200})""", re.IGNORECASE)
_CAMEL_RE = (re.compile(r"([A-Z]+)([A-Z][a-z])"), re.compile(r"([a-z0-9])([A-Z])"))
# Received (RFC 5321 §4.4): scan tokens that change nesting or end the from-clause.
_RECEIVED_FROM_RE = re.compile(r"\s*from\s+", re.IGNORECASE)
_RECEIVED_TOKEN_RE = re.compile(r"\\.|[()\[\]]|(?<![\w.-])by(?=\s)|;", re.IGNORECASE)
_HELO_ARG_RE = re.compile(r"\be?helo[=\s][^)\]]*", re.IGNORECASE)
_GROUPED_IP_RE = re.compile(r"[(\[]\s*(?:IPv6:)?([0-9A-Fa-f:.]{2,45})\s*[\])]", re.IGNORECASE)
_BRACKET_IP_RE = re.compile(r"^\[\s*(?:IPv6:)?([0-9A-Fa-f:.]{2,45})\s*\]$", re.IGNORECASE)

_ADDRESS_HEADERS = ("from", "to", "cc", "reply-to")


# --------------------------------------------------------------------------------------------- public


def parse_message(raw: bytes, limits: ParseLimits = DEFAULT_LIMITS) -> ParsedMessage:
    """Parse one message; never raises.

    Each stage writes into a draft as it goes, so if something unforeseen still raises, the message is
    returned with what was gathered plus a `parse_error: <type>` defect instead of being lost.
    """
    draft = _Draft()
    try:
        if not isinstance(raw, bytes | bytearray | memoryview):
            raise TypeError("raw must be bytes")
        _fill(draft, bytes(raw), limits)
    except Exception as exc:  # last resort: the normal path handles bad input itself
        draft.defects.append(f"parse_error: {type(exc).__name__}")
    return draft.build()


# --------------------------------------------------------------------------------------------- draft


@dataclass(slots=True)
class _Draft:
    """Mutable collection point, so a late failure keeps everything parsed before it."""

    fields: dict[str, object] = field(default_factory=dict)
    defects: list[str] = field(default_factory=list)

    def build(self) -> ParsedMessage:
        return ParsedMessage(**self.fields, defects=tuple(dict.fromkeys(self.defects)))  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class _Header:
    """One top-level header: `unfolded` keeps RFC 2047 words for structured parsers, `text` is decoded."""

    name: str
    unfolded: str
    text: str


def _fill(draft: _Draft, raw: bytes, limits: ParseLimits) -> None:
    defects = draft.defects
    if not raw.strip(b" \t\r\n"):
        defects.append("empty_message")
        return
    if b"\x00" in raw:
        defects.append("nul_bytes")
    raw = _limit_header_block(raw, limits, defects)
    factory = _GuardedHeaderFactory()
    msg = _parse_tree(raw, factory, defects)

    headers = _decoded_headers(msg, limits, defects)
    if not headers:
        defects.append("no_headers")
    draft.fields["headers"] = tuple((h.name, h.text) for h in headers)
    draft.fields.update(_header_fields(headers, defects))
    content_type = _guard(msg.get_content_type, "text/plain", defects, "bad_header: content-type")
    draft.fields["content_type"] = content_type

    parts, leaves = _walk(msg, limits, defects)
    draft.fields.update(_body_fields(leaves, defects))
    for part in parts:  # after decoding: get_payload(decode=True) appends transfer-encoding defects
        defects.extend(_defect_name(d) for d in part.defects)
    defects.extend(factory.notes)


# ------------------------------------------------------------------------------------- MIME parsing


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


def _parse_tree(raw: bytes, factory: _GuardedHeaderFactory, defects: list[str]) -> Message:
    """Build the MIME tree; a nesting deep enough to exhaust the recursion limit is read headers-only."""
    policy = email_policy.default.clone(header_factory=factory)
    try:
        return BytesParser(policy=policy).parsebytes(raw)
    except RecursionError:
        defects.append("too_complex: MIME nesting beyond the parser's recursion limit")
        return BytesParser(policy=policy).parsebytes(raw, headersonly=True)


class _GuardedHeaderFactory:
    """policy.default's header registry behind a per-message cache, a per-value cap and a budget.

    Why: the feed parser and the Message accessors re-parse Content-Type on every call (there is no cache
    in the stdlib), and the registry's parser is super-linear, so an attacker controls its cost through
    long or numerous MIME headers. Past the budget only the type and boundary are parsed, which keeps the
    tree's shape while bounding the time.
    """

    def __init__(self) -> None:
        self._cache: dict[tuple[str, str], BaseHeader] = {}
        self._budget = _STRUCTURED_BUDGET
        self.notes: list[str] = []

    def __call__(self, name: str, value: str) -> BaseHeader:
        key = (name, value)
        cached = self._cache.get(key)
        if cached is None:
            cached = self._cache[key] = self._parse(name, value)
        return cached

    def _parse(self, name: str, value: str) -> BaseHeader:
        text = value
        if len(text) > _MAX_STRUCTURED_CHARS:
            self.notes.append(f"too_complex: {name.lower()} header over {_MAX_STRUCTURED_CHARS} chars")
            text = text[:_MAX_STRUCTURED_CHARS]
        if len(text) > self._budget:
            self.notes.append("too_complex: MIME header budget spent")
            text = _essential_mime_value(text)
        self._budget -= len(text)
        try:
            return _header_class(name)(name, text)
        except Exception:  # e.g. RecursionError on nested comments: the part keeps its default type
            self.notes.append(f"bad_header: {name.lower()}")
            return _header_class(name)(name, "")


_HEADER_CLASSES: dict[str, type[BaseHeader]] = {}


def _header_class(name: str) -> type[BaseHeader]:
    """The registry's class for `name`, built once: HeaderRegistry.__call__ builds a new class per call.

    Keyed by the registry's known names only, so the cache cannot grow with attacker-chosen names.
    """
    registry = email_policy.default.header_factory
    key = name.lower() if name.lower() in registry.registry else ""  # "": the unstructured default
    cls = _HEADER_CLASSES.get(key)
    if cls is None:
        cls = _HEADER_CLASSES[key] = registry[key or "x-unstructured"]
    return cls


def _essential_mime_value(value: str) -> str:
    """`type/subtype; boundary=...` only: what the feed parser needs to keep splitting multiparts."""
    head = value.split(";", 1)[0][:100]
    boundary = _BOUNDARY_RE.search(value)
    return f"{head}; boundary={boundary.group(1)}" if boundary else head


def _walk(root: Message, limits: ParseLimits, defects: list[str]) -> tuple[list[Message], list[Message]]:
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
        maintype = _guard(part.get_content_maintype, "text", defects, "bad_header: content-type")
        if maintype == "message" or not part.is_multipart():
            leaves.append(part)
        elif depth >= limits.max_mime_depth:
            defects.append(f"too_complex: MIME nesting deeper than {limits.max_mime_depth}")
        else:
            children = part.get_payload()
            stack.extend((child, depth + 1) for child in reversed(children) if isinstance(child, Message))
    return parts, leaves


def _defect_name(defect: object) -> str:
    """`MissingHeaderBodySeparatorDefect` -> `missing_header_body_separator_defect`: stable, greppable."""
    name = type(defect).__name__
    for pattern in _CAMEL_RE:
        name = pattern.sub(r"\1_\2", name)
    return name.lower()


def _guard(call: Callable[[], T], fallback: T, defects: list[str], defect: str) -> T:
    """Run one stdlib accessor that may raise on hostile input; record `defect` and go on if it does."""
    try:
        return call()
    except Exception:
        defects.append(defect)
        return fallback


# ------------------------------------------------------------------------------------------ headers


def _decoded_headers(msg: Message, limits: ParseLimits, defects: list[str]) -> list[_Header]:
    """Top-level headers, unfolded (RFC 5322 §2.2.3) and decoded, from the raw values.

    Raw values are used because policy.default's accessors may raise and are too slow for long values.
    """
    headers = []
    for name, value in islice(msg.raw_items(), limits.max_headers):
        clean_name = _clean(str(name)).strip()
        key = clean_name.lower()
        unfolded = str(value)
        if "\n" in unfolded or "\r" in unfolded:
            unfolded = _FOLD_RE.sub("", unfolded)
        unfolded = unfolded.strip()
        if _has_surrogates(unfolded):
            defects.append(f"undeclared_8bit_header: {key}")
            unfolded = _undeclared_8bit(unfolded)
        text, problems = _decode_words(unfolded)
        defects.extend(p if p.startswith("unknown_charset") else f"{p}: {key}" for p in problems)
        headers.append(_Header(clean_name, _clean(unfolded), _clean(text)))
    return headers


def _has_surrogates(text: str) -> bool:
    """BytesParser carries undeclared 8-bit bytes as lone surrogates (surrogateescape)."""
    return not text.isascii() and any("\udc80" <= ch <= "\udcff" for ch in text)


def _undeclared_8bit(text: str) -> str:
    """Recover the raw bytes; UTF-8 if they are UTF-8 (RFC 6532), else latin-1, which keeps every byte."""
    data = text.encode("utf-8", "surrogateescape")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _decode_words(text: str) -> tuple[str, list[str]]:
    """RFC 2047 decoding in linear time (policy.default's unstructured parser is super-linear).

    Whitespace between adjacent encoded words is dropped (RFC 2047 §6.2), and adjacent words in the same
    charset are decoded together so a character or an ID split across two words comes out whole.
    Malformed words stay as literal text.
    """
    if "=?" not in text:
        return text, []
    out: list[str] = []
    problems: list[str] = []
    run_charset: str | None = None
    run: list[bytes] = []  # decoded bytes of the encoded words since the last literal text
    pos = 0
    for match in _ENCODED_WORD_RE.finditer(text):
        data = _decode_word_payload(match.group(2), match.group(3))
        if data is None:
            problems.append("bad_header")
            continue  # left in place: the next literal slice includes it
        between = text[pos : match.start()]
        charset = match.group(1).lower()
        adjacent = bool(run) and not between.strip()
        if run and (not adjacent or charset != run_charset):
            out.append(_decode_charset(b"".join(run), run_charset, problems))
            run = []
        if not adjacent:
            out.append(between)
        run_charset = charset
        run.append(data)
        pos = match.end()
    if run:
        out.append(_decode_charset(b"".join(run), run_charset, problems))
    out.append(text[pos:])
    return "".join(out), problems


def _decode_word_payload(encoding: str, payload: str) -> bytes | None:
    try:
        data = payload.encode("ascii")
        if encoding in "bB":
            return base64.b64decode(data + b"=" * (-len(data) % 4), validate=True)
        return binascii.a2b_qp(data, header=True)  # RFC 2047 §4.2: "_" is a space
    except (UnicodeError, binascii.Error, ValueError):
        return None


def _decode_charset(data: bytes, charset: str | None, problems: list[str]) -> str:
    """Header text in its declared charset; an unknown charset is read as UTF-8 and recorded."""
    try:
        return data.decode(charset or "utf-8", "replace")
    except (LookupError, ValueError, TypeError):
        problems.append(f"unknown_charset: {_clean(charset or '')[:64]}")
        return data.decode("utf-8", "replace")


def _clean(text: str) -> str:
    """Text safe to store: no lone surrogates, no NUL (PostgreSQL text rejects it; RFC 5322 forbids it)."""
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            text = text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    return text.replace("\x00", "\ufffd") if "\x00" in text else text


_HEADER_SCAN = 256 * 1024
_NULL_ADDRESS = re.compile(r"<\s*>")
_RETURN_PATH = re.compile(rb"^Return-Path:[ \t]*<?([^<>\s]*)>?[ \t]*\r?$", re.IGNORECASE | re.MULTILINE)


def return_path(raw: bytes) -> str | None:
    """The envelope sender the last delivering MTA recorded (RFC 5321 §4.4): the topmost Return-Path of
    the header block; "" for the null sender `<>`, None when there is none. What `ingest` of a file takes
    for the envelope it was not given. Never raises."""
    head = raw[:_HEADER_SCAN]
    end = re.search(rb"\r?\n\r?\n", head)
    match = _RETURN_PATH.search(head[: end.start()] if end else head)
    return match.group(1).decode("utf-8", "backslashreplace") if match else None


def _header_fields(headers: list[_Header], defects: list[str]) -> dict[str, object]:
    first: dict[str, _Header] = {}
    for header in headers:
        first.setdefault(header.name.lower(), header)
    fields: dict[str, object] = {}
    if "subject" in first:
        fields["subject"] = first["subject"].text
    addresses = {name: _addresses(first[name], defects) for name in _ADDRESS_HEADERS if name in first}
    sender = addresses.get("from", [])
    if sender and sender[0][1] != "<>":
        fields["from_addr"] = sender[0][1].lower()
        fields["from_name"] = sender[0][0] or None
    elif "from" in first and _NULL_ADDRESS.search(first["from"].unfolded):
        # `From: <>` / `From: MAILER-DAEMON <>`: the null sender (RFC 5321 §4.5.5) written into the header
        # by bounce generators; "" (not None, which means no From at all) so classify can tell.
        fields["from_addr"] = ""
        fields["from_name"] = (sender[0][0] if sender else "") or None
    fields["to"] = tuple(addr for _, addr in addresses.get("to", []))
    fields["cc"] = tuple(addr for _, addr in addresses.get("cc", []))
    fields["reply_to"] = tuple(addr for _, addr in addresses.get("reply-to", []))
    if "message-id" in first:
        ids = _message_ids(first["message-id"].unfolded)
        fields["message_id"] = ids[0] if ids else None
    if "in-reply-to" in first:
        fields["in_reply_to"] = _message_ids(first["in-reply-to"].unfolded)
    if "references" in first:
        fields["references"] = _message_ids(first["references"].unfolded)
    if "date" in first:
        fields["date"] = _parse_date(first["date"].unfolded)
        if fields["date"] is None:
            defects.append("bad_date")
    received = tuple(h.text for h in headers if h.name.lower() == "received")
    fields["received"] = received
    fields["sender_ip"] = _sender_ip(received)
    return fields


def _addresses(header: _Header, defects: list[str]) -> list[tuple[str, str]]:
    """(display name, addr-spec) pairs.

    Encoded words are decoded only inside display names, by the address parser: decoding first would let
    `=?utf-8?q?=3Cx@evil=3E?=` smuggle an address in (RFC 2047 §5).
    """
    name = header.name.lower()
    value = header.unfolded
    if len(value) <= _MAX_REGISTRY_ADDRESS_CHARS:
        try:
            parsed = _header_class(name)(name, value)
            pairs = [(_clean(a.display_name), _clean(a.addr_spec)) for a in parsed.addresses]  # type: ignore[attr-defined]
            return [(display, spec) for display, spec in pairs if spec]
        except Exception:
            defects.append(f"bad_header: {name}")
    elif len(value) > _MAX_ADDRESS_CHARS:
        defects.append(f"too_complex: {name} header over {_MAX_ADDRESS_CHARS} chars")
        value = value[:_MAX_ADDRESS_CHARS]
    try:
        pairs = [(_decode_words(display)[0], spec) for display, spec in getaddresses([value])]
        return [(_clean(display), _clean(spec)) for display, spec in pairs if "@" in spec]
    except Exception:
        defects.append(f"bad_header: {name}")
        return [("", spec) for spec in _ADDR_SPEC_RE.findall(value)]


def _message_ids(value: str) -> tuple[str, ...]:
    """Message-IDs without angle brackets, in header order (RFC 5322 §3.6.4); bare tokens if unbracketed."""
    ids = _MSG_ID_RE.findall(value)
    if ids:
        return tuple(ids)
    tokens = (token.strip("<>,;") for token in value.split())
    return tuple(token for token in tokens if token and not token.startswith("("))


def _parse_date(value: str) -> datetime | None:
    """An aware datetime; `-0000` (RFC 5322 §3.3: no zone information) is read as UTC."""
    try:
        parsed = parsedate_to_datetime(value[:_MAX_DATE_CHARS])
    except (TypeError, ValueError, OverflowError, IndexError):
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


# ------------------------------------------------------------------------------------ Received chain


def _sender_ip(received: Iterable[str]) -> str | None:
    """The client IP of the newest hop that came from a public address, walking newest first.

    Hops from private addresses are our own relays; every header below the first public hop was written
    by machines the sender controls, so the walk stops there.
    """
    for header in received:
        candidate = _received_client_ip(header)
        if candidate is not None and _is_public(candidate):
            return candidate
    return None


def _received_client_ip(header: str) -> str | None:
    """The IP the receiving MTA recorded in the from-clause's TCP-info (RFC 5321 §4.4), if any.

    The first token is the client's HELO argument and a `helo=` comment repeats it: both are chosen by
    the sender, so neither is trusted, except for Exim's `from [ip] (helo=name)` where the MTA moved the
    HELO into the comment and wrote the address itself.
    """
    text = header[:_MAX_RECEIVED_SCAN]
    start = _RECEIVED_FROM_RE.match(text)
    if start is None:
        return None
    clause = text[start.end() : _from_clause_end(text, start.end())].strip()
    helo, _, rest = clause.partition(" ")
    candidates = _GROUPED_IP_RE.findall(_HELO_ARG_RE.sub("", rest))
    if candidates:
        return candidates[-1]
    literal = _BRACKET_IP_RE.match(helo)
    return literal.group(1) if literal and _HELO_ARG_RE.search(rest) else None


def _from_clause_end(text: str, pos: int) -> int:
    """Where the from-clause ends: the first `by` or `;` outside comments and brackets."""
    depth = 0
    for token in _RECEIVED_TOKEN_RE.finditer(text, pos):
        char = token.group()
        if char in "([":
            depth += 1
        elif char in ")]":
            depth = max(0, depth - 1)
        elif depth == 0 and not char.startswith("\\"):
            return token.start()
    return len(text)


def _is_public(candidate: str) -> bool:
    try:
        ip = ipaddress.ip_address(candidate)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global


# ----------------------------------------------------------------------------------- bodies and files


def _body_fields(leaves: list[Message], defects: list[str]) -> dict[str, object]:
    """The reporter's text, the HTML body as text, and every other leaf as an attachment.

    The body is the first inline text/plain and the first inline text/html; everything else (including
    further text parts and every message/* part) is a file to hash.
    """
    plain: Message | None = None
    html: Message | None = None
    attachments: list[Attachment] = []
    for part in leaves:
        ctype = _guard(part.get_content_type, "application/octet-stream", defects, "bad_header: content-type")
        if ctype.startswith("message/") or not _is_inline_body(part, defects):
            attachments.append(_attachment(part, ctype, defects))
        elif plain is None and (ctype == "text/plain" or ctype.startswith("multipart/")):
            plain = part  # a multipart left unsplit (no boundary) is shown as its text
        elif html is None and ctype == "text/html":
            html = part
        else:
            attachments.append(_attachment(part, ctype, defects))
    fields: dict[str, object] = {"attachments": tuple(attachments)}
    if html is not None:
        html_text, links = _html_to_text(_part_text(html, defects), defects)
        fields.update(html_text=html_text, html_links=links, text=html_text)
    if plain is not None:
        fields["text"] = _part_text(plain, defects)
    return fields


def _is_inline_body(part: Message, defects: list[str]) -> bool:
    """Body candidates: not `attachment`, and unnamed unless explicitly `inline` (RFC 2183 §2.1, §2.3)."""
    disposition = _guard(part.get_content_disposition, None, defects, "bad_header: content-disposition")
    if disposition == "attachment":
        return False
    return disposition == "inline" or _filename(part, defects) is None


def _filename(part: Message, defects: list[str]) -> str | None:
    """RFC 2231 (by the stdlib) and, as many mailers send it, RFC 2047 inside the quoted value."""
    name = _guard(part.get_filename, None, defects, "bad_header: content-disposition")
    if not name:
        return None
    text = _undeclared_8bit(name) if _has_surrogates(name) else name
    return _clean(_FOLD_RE.sub("", _decode_words(text)[0])) or None


def _attachment(part: Message, ctype: str, defects: list[str]) -> Attachment:
    try:
        data = _message_bytes(part) if ctype.startswith("message/") else _payload_bytes(part)
    except Exception as exc:  # e.g. RecursionError flattening a deeply nested forwarded message
        defects.append(f"parse_error: {type(exc).__name__}")
        data = b""
    return Attachment(_filename(part, defects), ctype, len(data), hashlib.sha256(data).hexdigest())


def _payload_bytes(part: Message) -> bytes:
    data = part.get_payload(decode=True)
    return data if isinstance(data, bytes) else b""


def _message_bytes(part: Message) -> bytes:
    """The enclosed message(s) re-serialised with their original header folding.

    The stdlib keeps no offsets into the raw bytes, so these are the generator's bytes (CRLF line ends);
    the raw message stays the evidence.
    """
    payload = part.get_payload()
    if not isinstance(payload, list):
        return _payload_bytes(part)
    out = BytesIO()
    generator = BytesGenerator(out, mangle_from_=False, policy=_FLATTEN_POLICY)
    for sub in payload:
        if isinstance(sub, Message):
            generator.flatten(sub)
    return out.getvalue()


# refold_source="none": headers are written as they arrived, never through the slow registry.
_FLATTEN_POLICY = email_policy.default.clone(refold_source="none", linesep="\r\n")


def _part_text(part: Message, defects: list[str]) -> str:
    """The decoded body of one text part with line ends normalised to LF."""
    data = _payload_bytes(part)
    charset = _guard(part.get_content_charset, None, defects, "bad_header: content-type")
    return _clean(_CRLF_RE.sub("\n", _decode_body(data, charset, defects)))


def _decode_body(data: bytes, charset: str | None, defects: list[str]) -> str:
    """Declared charset first; a mislabelled UTF-8 body (common) is recognised; else replacement chars."""
    if not charset or charset in ("us-ascii", "ascii"):
        return data.decode("utf-8", "replace")  # UTF-8 is an ASCII superset; RFC 6532 mail uses it
    try:
        codecs.lookup(charset)
        return data.decode(charset)
    except UnicodeDecodeError:
        pass
    except Exception:  # LookupError, or a bytes-to-bytes codec such as "base64"
        defects.append(f"unknown_charset: {_clean(charset)[:64]}")
        return data.decode("utf-8", "replace")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode(charset, "replace")
    defects.append(f"charset_mismatch: {_clean(charset)[:64]}")
    return text


# ------------------------------------------------------------------------------------------ HTML


_BLOCK_TAGS = frozenset(
    "address article aside blockquote br center dd div dl dt fieldset figure footer form h1 h2 h3 h4 h5 h6 "
    "header hr li main nav ol p pre section table tbody thead tfoot tr ul".split()
)
_CELL_TAGS = frozenset({"td", "th"})
_SKIP_TAGS = frozenset({"script", "style"})
_LINK_TAGS = frozenset({"a", "area"})


class _HtmlToText(HTMLParser):
    """Readable text from an HTML body, with each link's target written beside its anchor text.

    Phishing reports are mostly about where a link really goes, so the target is shown, not hidden.
    """

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.links: list[str] = []
        self._skip = 0
        self._pre = 0
        self._anchor: tuple[str, int] | None = None  # (href, index in out where the anchor text starts)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP_TAGS:
            self._skip += 1
        elif tag in _BLOCK_TAGS:
            self.out.append("\n")
        elif tag in _CELL_TAGS:
            self.out.append(" ")
        if tag == "pre":
            self._pre += 1
        if tag in _LINK_TAGS:
            href = next((value.strip() for key, value in attrs if key == "href" and value), "")
            if href:
                self.links.append(href)
            if tag == "a":
                self._close_anchor()
                self._anchor = (href, len(self.out)) if href else None

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP_TAGS:
            self._skip = max(0, self._skip - 1)
        elif tag in _BLOCK_TAGS:
            self.out.append("\n")
        if tag == "pre":
            self._pre = max(0, self._pre - 1)
        if tag == "a":
            self._close_anchor()

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.out.append(data if self._pre else _SPACE_RE.sub(" ", data))

    def close(self) -> None:
        super().close()
        self._close_anchor()

    def parse_marked_section(self, i: int, report: int = 1) -> int:
        """CPython raises AssertionError on unknown `<![keyword`; skip it like a bogus comment instead."""
        try:
            return super().parse_marked_section(i, report)
        except AssertionError:
            return self.parse_bogus_comment(i)

    def _close_anchor(self) -> None:
        if self._anchor is None:
            return
        href, start = self._anchor
        self._anchor = None
        if "".join(self.out[start:]).strip() != href:
            self.out.append(f" ({href})")


def _html_to_text(html: str, defects: list[str]) -> tuple[str, tuple[str, ...]]:
    """(text, hrefs) via the stdlib parser; a parser failure keeps what was converted so far."""
    if len(html) > _MAX_HTML_CHARS:
        defects.append(f"too_complex: HTML body over {_MAX_HTML_CHARS} chars")
        html = html[:_MAX_HTML_CHARS]
    parser = _HtmlToText()
    try:
        parser.feed(_defuse_unterminated(html))
        parser.close()
    except Exception as exc:
        defects.append(f"parse_error: {type(exc).__name__}")
    return _tidy("".join(parser.out)), tuple(_clean(link) for link in parser.links)


def _defuse_unterminated(html: str) -> str:
    """Escape `<` that can never be closed, so html.parser stays linear.

    At close(), CPython 3.11's parser rescans to the end of the input for every unterminated construct
    (quadratic: 2 MB of `<!-- x` runs for minutes). A construct is hopeless when no terminator follows
    it: `>` for tags and declarations, `-->` for comments, `]>` for marked sections. Escaping those keeps
    the output (the parser would emit them as text anyway) and bounds the cost.
    """
    last_gt = html.rfind(">")
    if "<" in html[last_gt + 1 :]:
        html = html[: last_gt + 1] + html[last_gt + 1 :].replace("<", "&lt;")
    comment_end = max(html.rfind("-->"), html.rfind("--!>"))
    if "<!--" in html[comment_end + 1 :]:
        html = html[: comment_end + 1] + html[comment_end + 1 :].replace("<!--", "&lt;!--")
    section_end = html.rfind("]>")
    if html.count("<![") > _MAX_MARKED_SECTIONS:
        section_end = -1
    if "<![" in html[section_end + 1 :]:
        html = html[: section_end + 1] + html[section_end + 1 :].replace("<![", "&lt;![")
    return html


def _tidy(text: str) -> str:
    """Trim each line and keep at most one blank line between paragraphs."""
    lines = (line.strip() for line in text.split("\n"))
    return _clean(_BLANK_LINES_RE.sub("\n\n", "\n".join(lines)).strip())
