"""The bytes of one attachment, found again in a stored raw message (for `cases attachment`).

Why a module: the store keeps each attachment's digest, not its bytes (raw bytes live in the inbox only), so
the desk's export of one file walks the MIME tree exactly as `parsers.message` did when it listed the
attachments, and picks the same leaf. Pure: bytes in, bytes out, never raises on bad mail.
"""

from __future__ import annotations

from parsers.message import (
    DEFAULT_LIMITS,
    ParseLimits,
    _guard,
    _GuardedHeaderFactory,
    _is_inline_body,
    _limit_header_block,
    _message_bytes,
    _parse_tree,
    _payload_bytes,
    _walk,
)


def attachment_payloads(raw: bytes, limits: ParseLimits = DEFAULT_LIMITS) -> list[bytes]:
    """Every attachment's bytes, in the order `parse_message` lists them (the same leaf selection as
    `parsers.message._body_fields`: the first inline plain and HTML parts are the body, all else a file)."""
    try:
        defects: list[str] = []
        msg = _parse_tree(_limit_header_block(bytes(raw), limits, defects), _GuardedHeaderFactory(), defects)
        _parts, leaves = _walk(msg, limits, defects)
        found: list[bytes] = []
        plain = html = False
        for part in leaves:
            ctype = _guard(
                part.get_content_type, "application/octet-stream", defects, "bad_header: content-type"
            )
            is_body = not ctype.startswith("message/") and _is_inline_body(part, defects)
            if is_body and not plain and (ctype == "text/plain" or ctype.startswith("multipart/")):
                plain = True
            elif is_body and not html and ctype == "text/html":
                html = True
            else:
                try:
                    found.append(
                        _message_bytes(part) if ctype.startswith("message/") else _payload_bytes(part)
                    )
                except Exception:  # as parsers.message does: a part it could not flatten hashed as empty
                    found.append(b"")
        return found
    except Exception:
        return []
