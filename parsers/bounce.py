"""What a bounce returns: the Message-IDs of the message(s) it reports on.

A DSN (RFC 3464) carries the returned message as `message/rfc822` or its headers as
`text/rfc822-headers` (RFC 6522 §3); many MTAs that do not speak DSN paste the headers into the text. A
bounce of one of our confirmations names the confirmation's Message-ID there, which is how it threads into
the case and marks the confirmation bounced (issue 5).
"""

from __future__ import annotations

import re
from email.errors import MissingHeaderBodySeparatorDefect
from email.message import Message

from parsers.mime import MimeTree, ParseLimits, all_parts, as_tree, raw_header

# Angle brackets are optional: older gateways and hand-pasted headers write `Message-Id: abc@host`; the "@"
# keeps a bare word ("Message-ID: unknown") from passing for one.
_MESSAGE_ID = re.compile(
    rb"^Message-ID:[ \t]*<?([^<>\s@]{1,200}@[^<>\s@]{1,200})>?[ \t]*\r?$", re.IGNORECASE | re.MULTILINE
)
# A bounce that quotes a whole confirmation is small; look no further than this into it.
_SCAN_LIMIT = 256 * 1024
# Where the returned message's headers are: RFC 6522 §3's types, the common misspellings of the headers
# type, and message/partial (RFC 2046 §5.2.2), whose first fragment starts with the original's headers.
_HEADER_TYPES = frozenset(
    {"text/rfc822-headers", "text/rfc822-header", "message/rfc822-headers", "message/rfc822-header"}
)


def _part_ids(part: Message) -> list[str]:
    payload = part.get_payload()
    if isinstance(payload, list):  # message/rfc822: the returned message, already parsed
        ids = []
        for inner in payload:
            value = raw_header(inner, "Message-ID") if isinstance(inner, Message) else None
            if value:
                ids.append(str(value).strip().strip("<>"))
        return ids
    body = part.get_payload(decode=True)
    if body is None:  # message/* with a string payload: the library does not decode it
        body = payload.encode("utf-8", "surrogateescape") if isinstance(payload, str) else b""
    return [m.decode("ascii", "replace") for m in _MESSAGE_ID.findall(body[:_SCAN_LIMIT])]


def _body_as_sent(message: Message) -> bytes:
    """A single-part message's body before transfer decoding: the feed parser keeps it as the text it read
    (8-bit bytes as surrogates), so encoding it back gives the bytes that followed the header block. A line
    that is no header ends the stdlib's header block early; the body is then taken from the first blank
    line on, so a message's own Message-ID is never read as a returned one."""
    payload = message.get_payload()
    body = payload[: 4 * _SCAN_LIMIT].encode("utf-8", "surrogateescape") if isinstance(payload, str) else b""
    if any(isinstance(d, MissingHeaderBodySeparatorDefect) for d in message.defects):
        body = body.partition(b"\n\n")[2] or body.partition(b"\r\n\r\n")[2]
    return body


def returned_message_ids(source: bytes | MimeTree) -> tuple[str, ...]:
    """Message-IDs of the returned message in a bounce; empty when there is none. Never raises.

    The attached original (or its headers) comes first; failing that, headers pasted into the bounce's
    text, single-part (qmail, old Exchange) or in a text/plain part of a multipart (sendmail, Domino).
    Reads the message's tree (`parsers.mime`), every part of it within its `ParseLimits`.
    """
    try:
        tree = as_tree(source)
        message = tree.root
        own_id = (raw_header(message, "Message-ID") or "").strip().strip("<>")
        found: list[str] = []
        texts: list[Message] = []
        for part in all_parts(message, tree.limits):
            ctype = part.get_content_type()
            if ctype in ("message/rfc822", "message/partial") or ctype in _HEADER_TYPES:
                found += _part_ids(part)
            elif ctype == "text/plain" and part is not message and message.is_multipart():
                texts.append(part)
        if not found and not message.is_multipart():
            body = _body_as_sent(message)
            found = [m.decode("ascii", "replace") for m in _MESSAGE_ID.findall(body[:_SCAN_LIMIT])]
        if not found:
            for part in texts:
                found += _part_ids(part)
        return tuple(dict.fromkeys(i for i in found if i and i != own_id))
    except Exception:
        return ()


_EMBEDDED_TEXT_LIMIT = 8 * 1024


def _first_text(message: Message, limits: ParseLimits) -> str:
    for part in all_parts(message, limits):
        if part.get_content_type() == "text/plain" and not part.get_filename():
            payload = part.get_payload(decode=True) or b""
            charset = part.get_content_charset() or "utf-8"
            try:
                return payload[:_EMBEDDED_TEXT_LIMIT].decode(charset, "replace")
            except LookupError:
                return payload[:_EMBEDDED_TEXT_LIMIT].decode("utf-8", "replace")
    return ""


def embedded_texts(source: bytes | MimeTree) -> tuple[str, ...]:
    """Subject and opening text of each attached message (a forwarded confirmation, a returned one).

    The reporter's own text never includes a forwarded message (it is evidence), but a case ID written
    there is still a threading signal of the `body` kind (issue 5). Never raises.
    """
    try:
        tree = as_tree(source)
        texts: list[str] = []
        for part in all_parts(tree.root, tree.limits):
            ctype = part.get_content_type()
            if ctype == "message/rfc822":
                for inner in part.get_payload() if isinstance(part.get_payload(), list) else []:
                    if isinstance(inner, Message):
                        subject = raw_header(inner, "Subject") or ""
                        texts.append(f"{subject}\n{_first_text(inner, tree.limits)}")
            elif ctype in _HEADER_TYPES or ctype == "message/partial":
                body = (part.get_payload(decode=True) or b"")[:_EMBEDDED_TEXT_LIMIT]
                texts.append(body.decode("utf-8", "replace"))
        return tuple(texts)
    except Exception:
        return ()
