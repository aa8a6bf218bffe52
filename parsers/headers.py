"""Top-level headers of one message: unfolded, RFC 2047-decoded, and read into ParsedMessage's fields.

Also the header factory the MIME tree is parsed with (`GuardedHeaderFactory`): policy.default's registry is
pure Python and super-linear (a 2 KB value costs ~14 ms, a 400 KB folded Subject ~7 s, `((((` raises
RecursionError), so it only ever sees short structured values and unstructured text is decoded by the
linear decoder here.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from email import policy as email_policy
from email.headerregistry import BaseHeader
from email.message import Message
from email.utils import getaddresses, parsedate_to_datetime
from itertools import islice

from parsers.received import sender_ip

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
_FOLD_RE = re.compile(r"[\r\n]+")
# RFC 2047 §2 encoded-word; the optional *lang suffix is RFC 2231 §5.
_ENCODED_WORD_RE = re.compile(r"=\?([^?\s*]+)(?:\*[^?\s]*)?\?([bBqQ])\?([^?\s]*)\?=")
_MSG_ID_RE = re.compile(r"<\s*([^<>\s]+?)\s*>")
_ADDR_SPEC_RE = re.compile(r"[^\s<>,;:\"()@]+@[^\s<>,;:\"()@]+")
_BOUNDARY_RE = re.compile(r"""boundary\s*=\s*("[^"]{1,200}"|[^\s;"]{1,200})""", re.IGNORECASE)
_ADDRESS_HEADERS = ("from", "to", "cc", "reply-to")


@dataclass(frozen=True, slots=True)
class Header:
    """One top-level header: `unfolded` keeps RFC 2047 words for structured parsers, `text` is decoded."""

    name: str
    unfolded: str
    text: str


class GuardedHeaderFactory:
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
            text = essential_mime_value(text)
        self._budget -= len(text)
        try:
            return header_class(name)(name, text)
        except Exception:  # e.g. RecursionError on nested comments: the part keeps its default type
            self.notes.append(f"bad_header: {name.lower()}")
            return header_class(name)(name, "")


_HEADER_CLASSES: dict[str, type[BaseHeader]] = {}


def header_class(name: str) -> type[BaseHeader]:
    """The registry's class for `name`, built once: HeaderRegistry.__call__ builds a new class per call.

    Keyed by the registry's known names only, so the cache cannot grow with attacker-chosen names.
    """
    registry = email_policy.default.header_factory
    key = name.lower() if name.lower() in registry.registry else ""  # "": the unstructured default
    cls = _HEADER_CLASSES.get(key)
    if cls is None:
        cls = _HEADER_CLASSES[key] = registry[key or "x-unstructured"]
    return cls


def essential_mime_value(value: str) -> str:
    """`type/subtype; boundary=...` only: what the feed parser needs to keep splitting multiparts."""
    head = value.split(";", 1)[0][:100]
    boundary = _BOUNDARY_RE.search(value)
    return f"{head}; boundary={boundary.group(1)}" if boundary else head


def decoded_headers(msg: Message, max_headers: int, defects: list[str]) -> list[Header]:
    """Top-level headers, unfolded (RFC 5322 §2.2.3) and decoded, from the raw values.

    Raw values are used because policy.default's accessors may raise and are too slow for long values.
    """
    headers = []
    for name, value in islice(msg.raw_items(), max_headers):
        clean_name = clean(str(name)).strip()
        key = clean_name.lower()
        unfolded = str(value)
        if "\n" in unfolded or "\r" in unfolded:
            unfolded = _FOLD_RE.sub("", unfolded)
        unfolded = unfolded.strip()
        if has_surrogates(unfolded):
            defects.append(f"undeclared_8bit_header: {key}")
            unfolded = undeclared_8bit(unfolded)
        text, problems = decode_words(unfolded)
        defects.extend(p if p.startswith("unknown_charset") else f"{p}: {key}" for p in problems)
        headers.append(Header(clean_name, clean(unfolded), clean(text)))
    return headers


def has_surrogates(text: str) -> bool:
    """BytesParser carries undeclared 8-bit bytes as lone surrogates (surrogateescape)."""
    return not text.isascii() and any("\udc80" <= ch <= "\udcff" for ch in text)


def undeclared_8bit(text: str) -> str:
    """Recover the raw bytes; UTF-8 if they are UTF-8 (RFC 6532), else latin-1, which keeps every byte."""
    data = text.encode("utf-8", "surrogateescape")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def decode_words(text: str) -> tuple[str, list[str]]:
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
        problems.append(f"unknown_charset: {clean(charset or '')[:64]}")
        return data.decode("utf-8", "replace")


def clean(text: str) -> str:
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


def header_fields(headers: list[Header], defects: list[str]) -> dict[str, object]:
    first: dict[str, Header] = {}
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
    fields["sender_ip"] = sender_ip(received)
    return fields


def _addresses(header: Header, defects: list[str]) -> list[tuple[str, str]]:
    """(display name, addr-spec) pairs.

    Encoded words are decoded only inside display names, by the address parser: decoding first would let
    `=?utf-8?q?=3Cx@evil=3E?=` smuggle an address in (RFC 2047 §5).
    """
    name = header.name.lower()
    value = header.unfolded
    if len(value) <= _MAX_REGISTRY_ADDRESS_CHARS:
        try:
            parsed = header_class(name)(name, value)
            pairs = [(clean(a.display_name), clean(a.addr_spec)) for a in parsed.addresses]  # type: ignore[attr-defined]
            return [(display, spec) for display, spec in pairs if spec]
        except Exception:
            defects.append(f"bad_header: {name}")
    elif len(value) > _MAX_ADDRESS_CHARS:
        defects.append(f"too_complex: {name} header over {_MAX_ADDRESS_CHARS} chars")
        value = value[:_MAX_ADDRESS_CHARS]
    try:
        pairs = [(decode_words(display)[0], spec) for display, spec in getaddresses([value])]
        return [(clean(display), clean(spec)) for display, spec in pairs if "@" in spec]
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
