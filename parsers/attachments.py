"""Attachments: the leaves that are not the body, each named, sized and hashed, never interpreted."""

from __future__ import annotations

import hashlib
import re
from email import policy as email_policy
from email.generator import BytesGenerator
from email.message import Message
from io import BytesIO

from parsers.headers import clean, decode_words, has_surrogates, undeclared_8bit
from parsers.mime import guard
from parsers.types import Attachment

_FOLD_RE = re.compile(r"[\r\n]+")


def attachment_filename(part: Message, defects: list[str]) -> str | None:
    """RFC 2231 (by the stdlib) and, as many mailers send it, RFC 2047 inside the quoted value."""
    name = guard(part.get_filename, None, defects, "bad_header: content-disposition")
    if not name:
        return None
    text = undeclared_8bit(name) if has_surrogates(name) else name
    return clean(_FOLD_RE.sub("", decode_words(text)[0])) or None


def to_attachment(part: Message, ctype: str, defects: list[str]) -> Attachment:
    data = attachment_bytes(part, ctype, defects)
    return Attachment(attachment_filename(part, defects), ctype, len(data), hashlib.sha256(data).hexdigest())


def attachment_bytes(part: Message, ctype: str, defects: list[str]) -> bytes:
    """What is hashed (and exported) as the file: the decoded payload, or the enclosed message's bytes."""
    try:
        return _message_bytes(part) if ctype.startswith("message/") else payload_bytes(part)
    except Exception as exc:  # e.g. RecursionError flattening a deeply nested forwarded message
        defects.append(f"parse_error: {type(exc).__name__}")
        return b""


def payload_bytes(part: Message) -> bytes:
    data = part.get_payload(decode=True)
    return data if isinstance(data, bytes) else b""


def _message_bytes(part: Message) -> bytes:
    """The enclosed message(s) re-serialised with their original header folding.

    The stdlib keeps no offsets into the raw bytes, so these are the generator's bytes (CRLF line ends);
    the raw message stays the evidence.
    """
    payload = part.get_payload()
    if not isinstance(payload, list):
        return payload_bytes(part)
    out = BytesIO()
    generator = BytesGenerator(out, mangle_from_=False, policy=_FLATTEN_POLICY)
    for sub in payload:
        if isinstance(sub, Message):
            generator.flatten(sub)
    return out.getvalue()


# refold_source="none": headers are written as they arrived, never through the slow registry.
_FLATTEN_POLICY = email_policy.default.clone(refold_source="none", linesep="\r\n")
