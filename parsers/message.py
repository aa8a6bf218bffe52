"""Turn one inbound message into a `ParsedMessage`, whatever its bytes are.

The desk must see every report, so this module never raises: malformed input is decoded as far as it
goes and the damage is recorded in `defects`. The MIME tree comes from `parsers.mime.parse_tree` (the
stdlib `email` package, parsed once per message for every parser of the intake); this module reads it:
headers (`parsers.headers`), the body (`parsers.bodies`, with `parsers.html_text`), attachments
(`parsers.attachments`), and the defects the stdlib recorded on each part.

mail-parser is not called on this path: it costs ~0.9 ms per 2 KB message (as much as everything else).
Its defect categories are the stdlib defect classes, which are collected here directly.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from parsers.bodies import body_fields
from parsers.headers import decoded_headers, header_fields, return_path
from parsers.mime import DEFAULT_LIMITS, MimeTree, ParseLimits, as_tree, defect_name, guard
from parsers.types import ParsedMessage

__all__ = ["DEFAULT_LIMITS", "ParseLimits", "parse_message", "return_path"]


def parse_message(source: bytes | MimeTree, limits: ParseLimits = DEFAULT_LIMITS) -> ParsedMessage:
    """Parse one message (raw bytes, or the tree `parse_tree` made of them); never raises.

    Given a tree, its own limits apply and `limits` is not used. Each stage writes into a draft as it goes,
    so if something unforeseen still raises, the message is returned with what was gathered plus a
    `parse_error: <type>` defect instead of being lost.
    """
    draft = _Draft()
    try:
        _fill(draft, as_tree(source, limits))
    except Exception as exc:  # last resort: the normal path handles bad input itself
        draft.defects.append(f"parse_error: {type(exc).__name__}")
    return draft.build()


@dataclass(slots=True)
class _Draft:
    """Mutable collection point, so a late failure keeps everything parsed before it."""

    fields: dict[str, object] = field(default_factory=dict)
    defects: list[str] = field(default_factory=list)

    def build(self) -> ParsedMessage:
        return ParsedMessage(**self.fields, defects=tuple(dict.fromkeys(self.defects)))  # type: ignore[arg-type]


def _fill(draft: _Draft, tree: MimeTree) -> None:
    defects = draft.defects
    if tree.empty:
        defects.append("empty_message")
        return
    defects.extend(tree.parse_defects)
    msg = tree.root
    headers = decoded_headers(msg, tree.limits.max_headers, defects)
    if not headers:
        defects.append("no_headers")
    draft.fields["headers"] = tuple((h.name, h.text) for h in headers)
    draft.fields.update(header_fields(headers, defects))
    content_type = guard(msg.get_content_type, "text/plain", defects, "bad_header: content-type")
    draft.fields["content_type"] = content_type

    defects.extend(tree.walk_defects)
    draft.fields.update(body_fields(list(tree.leaves), defects))
    for part in tree.parts:  # after decoding: get_payload(decode=True) appends transfer-encoding defects
        defects.extend(defect_name(d) for d in part.defects)
    defects.extend(tree.factory.notes)
