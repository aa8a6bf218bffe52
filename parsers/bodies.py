"""The reporter's text: which leaves are the body, and their bytes decoded by charset.

The body is the first inline text/plain and the first inline text/html (as text); every other leaf,
including further text parts and every message/* part, is a file to hash (`parsers.attachments`).
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Sequence
from email.message import Message

from parsers.attachments import attachment_filename, payload_bytes, to_attachment
from parsers.headers import clean
from parsers.html_text import html_to_text
from parsers.mime import guard

_CRLF_RE = re.compile(r"\r\n?|\n")


def split_leaves(
    leaves: Sequence[Message], defects: list[str]
) -> tuple[Message | None, Message | None, list[tuple[Message, str]]]:
    """The body leaves and the files, in order: one rule for `parse_message` and for finding an attachment's
    bytes again (`parsers.payloads`), so "attachment K" always names the same leaf.

    The body is the first inline text/plain and the first inline text/html; everything else (including
    further text parts and every message/* part) is a file to hash.
    """
    plain: Message | None = None
    html: Message | None = None
    files: list[tuple[Message, str]] = []
    for part in leaves:
        ctype = guard(part.get_content_type, "application/octet-stream", defects, "bad_header: content-type")
        if ctype.startswith("message/") or not _is_inline_body(part, defects):
            files.append((part, ctype))
        elif plain is None and (ctype == "text/plain" or ctype.startswith("multipart/")):
            plain = part  # a multipart left unsplit (no boundary) is shown as its text
        elif html is None and ctype == "text/html":
            html = part
        else:
            files.append((part, ctype))
    return plain, html, files


def body_fields(leaves: list[Message], defects: list[str]) -> dict[str, object]:
    """The reporter's text, the HTML body as text, and every other leaf as an attachment."""
    plain, html, files = split_leaves(leaves, defects)
    attachments = [to_attachment(part, ctype, defects) for part, ctype in files]
    fields: dict[str, object] = {"attachments": tuple(attachments)}
    if html is not None:
        html_text, links = html_to_text(_part_text(html, defects), defects)
        fields.update(html_text=html_text, html_links=links, text=html_text)
    if plain is not None:
        fields["text"] = _part_text(plain, defects)
    return fields


def _is_inline_body(part: Message, defects: list[str]) -> bool:
    """Body candidates: not `attachment`, and unnamed unless explicitly `inline` (RFC 2183 §2.1, §2.3)."""
    disposition = guard(part.get_content_disposition, None, defects, "bad_header: content-disposition")
    if disposition == "attachment":
        return False
    return disposition == "inline" or attachment_filename(part, defects) is None


def _part_text(part: Message, defects: list[str]) -> str:
    """The decoded body of one text part with line ends normalised to LF."""
    data = payload_bytes(part)
    charset = guard(part.get_content_charset, None, defects, "bad_header: content-type")
    return clean(_CRLF_RE.sub("\n", _decode_body(data, charset, defects)))


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
        defects.append(f"unknown_charset: {clean(charset)[:64]}")
        return data.decode("utf-8", "replace")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode(charset, "replace")
    defects.append(f"charset_mismatch: {clean(charset)[:64]}")
    return text
