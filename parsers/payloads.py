"""The bytes of one attachment, found again in a stored raw message (for `cases attachment`).

Why a module: the store keeps each attachment's digests, not its bytes (raw bytes live in the inbox only), so
the desk's export of one file parses the raw message again and picks the same leaf `parse_message` listed,
by the same rule (`parsers.bodies.split_leaves`). Pure: bytes in, bytes out, never raises on bad mail.
"""

from __future__ import annotations

from parsers.attachments import attachment_bytes
from parsers.bodies import split_leaves
from parsers.mime import DEFAULT_LIMITS, ParseLimits, parse_tree


def attachment_payloads(raw: bytes, limits: ParseLimits = DEFAULT_LIMITS) -> list[bytes]:
    """Every attachment's bytes, in the order `parse_message` lists them (b"" where it hashed nothing)."""
    try:
        tree = parse_tree(raw, limits)
        defects: list[str] = []
        _plain, _html, files = split_leaves(list(tree.leaves), defects)
        return [attachment_bytes(part, ctype, defects) for part, ctype in files]
    except Exception:
        return []
