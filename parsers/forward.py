"""Forwarded evidence: a spam or phishing mail a person forwards to abuse@ (issue 6).

The reporter's own words stay the report; each forwarded message — attached as `message/rfc822` or pasted
inline after a "Forwarded message" line — becomes evidence with its own parsed headers. An attached one is
read from the report's own MIME tree (`parsers.mime`, parsed once per message), never from bytes again.
mail-parser earns its place here and only here: its Received-clause parser (hop, from, by, with, date,
delay) is what the desk reads to trace a spam run, and it is given the Received values from the tree
(`receiveds_parsing`), not the message: its own parse of the whole message cost ~10 ms per forward.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email.message import Message
from itertools import islice
from typing import Any

from mailparser.utils import receiveds_parsing

from parsers.message import parse_message
from parsers.mime import MimeTree, all_parts, as_tree, subtree

# "---------- Forwarded message ---------" (Gmail), "-------- Original Message --------" (Thunderbird),
# "Begin forwarded message:" (Apple Mail), "-----Ursprüngliche Nachricht-----" (Outlook, German).
_INLINE_MARKER = re.compile(
    r"^[ \t>]*(?:-{2,}[ \t]*(?:Forwarded message|Original Message|Weitergeleitete Nachricht|"
    r"Ursprüngliche Nachricht|Message transféré|Mensaje reenviado)[ \t]*-{2,}"
    r"|Begin forwarded message:)[ \t]*$",
    re.IGNORECASE | re.MULTILINE,
)
_INLINE_HEADER = re.compile(
    r"^[ \t>]*(From|Date|Sent|Subject|To|Cc|Von|Datum|Betreff|An|De|Objet)[ \t]*:[ \t]*(.*)$", re.IGNORECASE
)
_NAMES = {
    "von": "from",
    "de": "from",
    "datum": "date",
    "sent": "date",
    "betreff": "subject",
    "objet": "subject",
    "an": "to",
}
_MAX_FORWARDS = 10
_MAX_TEXT = 64 * 1024


@dataclass(frozen=True, slots=True)
class ForwardedMessage:
    source: str  # attachment | inline
    from_addr: str | None
    subject: str
    date: str | None
    message_id: str | None
    received: tuple[dict[str, Any], ...]
    sender_ip: str | None
    text: str
    defects: tuple[str, ...]


_HOP_KEYS = ("hop", "from", "by", "with", "date_utc", "delay")


def _received_chain(message: Message, max_headers: int) -> tuple[tuple[dict[str, Any], ...], tuple[str, ...]]:
    """mail-parser's Received hops, oldest first; it raises on some malformed headers, so guard it."""
    try:
        headers = islice(message.raw_items(), max_headers)
        values = [str(value) for name, value in headers if name.lower() == "received"]
        clauses: list[dict[str, Any]] = []
        dates: list[dict[str, Any]] = []
        parsed = receiveds_parsing(values, defects=clauses, date_defects=dates)
        hops = tuple({k: v for k, v in hop.items() if k in _HOP_KEYS} for hop in parsed)
        defects = ("received_header_defect",) * bool(clauses) + ("received_date_defect",) * bool(dates)
        return hops, defects
    except Exception as exc:
        return (), (f"received_parse_error: {type(exc).__name__}",)


def _from_attachment(message: Message, tree: MimeTree) -> ForwardedMessage:
    parsed = parse_message(subtree(message, tree.limits, tree.factory))
    hops, defects = _received_chain(message, tree.limits.max_headers)
    return ForwardedMessage(
        source="attachment",
        from_addr=parsed.from_addr,
        subject=parsed.subject,
        date=parsed.date.isoformat() if parsed.date else None,
        message_id=parsed.message_id,
        received=hops,
        sender_ip=parsed.sender_ip,
        text=parsed.text[:_MAX_TEXT],
        defects=tuple(dict.fromkeys([*parsed.defects, *defects])),
    )


def _from_inline(block: str) -> ForwardedMessage:
    headers: dict[str, str] = {}
    lines = block.splitlines()
    body_start = len(lines)
    for position, line in enumerate(lines):
        match = _INLINE_HEADER.match(line)
        if match:
            name = match.group(1).lower()
            headers.setdefault(_NAMES.get(name, name), match.group(2).strip())
        elif line.strip() == "" and headers:
            body_start = position + 1
            break
    address = re.search(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+", headers.get("from", ""))
    return ForwardedMessage(
        source="inline",
        from_addr=address.group(0).lower() if address else None,
        subject=headers.get("subject", ""),
        date=headers.get("date"),
        message_id=None,
        received=(),
        sender_ip=None,
        text="\n".join(lines[body_start:])[:_MAX_TEXT],
        defects=(),
    )


def forwarded_messages(source: bytes | MimeTree, text: str) -> tuple[ForwardedMessage, ...]:
    """Every forwarded message in a report (its tree, or raw bytes), attached ones first. Never raises.

    `text` is the report's text as the intake bounded it (`intake.max_text_chars`).
    """
    found: list[ForwardedMessage] = []
    try:
        tree = as_tree(source)
        for part in all_parts(tree.root, tree.limits):
            if part.get_content_type() == "message/rfc822" and len(found) < _MAX_FORWARDS:
                inner = part.get_payload()
                if isinstance(inner, list) and inner and isinstance(inner[0], Message):
                    found.append(_from_attachment(inner[0], tree))
    except Exception:
        pass
    markers = list(_INLINE_MARKER.finditer(text))[: _MAX_FORWARDS - len(found)]
    for index, marker in enumerate(markers):
        end = markers[index + 1].start() if index + 1 < len(markers) else len(text)
        found.append(_from_inline(text[marker.end() : end]))
    return tuple(found)


def own_text(text: str) -> str:
    """The reporter's own words: the text before the first inline forward marker."""
    marker = _INLINE_MARKER.search(text)
    return text[: marker.start()].rstrip() if marker else text
