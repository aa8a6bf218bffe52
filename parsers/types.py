"""Plain, frozen data passed between the layers.

`parsers` produce these from bytes and text; `storage` persists them; `gateway` wires them together. They are
frozen so a parse result can be shared across threads and compared in tests without defensive copies.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

MessageKind = Literal["report", "amendment", "machine_report", "automatic"]
ThreadSignal = Literal["token", "header", "subject", "body", "none"]
IndicatorKind = Literal["url", "domain", "ipv4", "ipv6", "email"]


@dataclass(frozen=True, slots=True)
class Attachment:
    """One non-body MIME leaf. The bytes stay in the raw message; this is what the desk is shown."""

    filename: str | None
    content_type: str
    size: int
    sha256: str


@dataclass(frozen=True, slots=True)
class ParsedMessage:
    """Everything the pipeline needs from one message, decoded once.

    `text` is the decoded original a person wrote (plain body, or the HTML body turned into text with each
    link target written beside its anchor). It is never escaped here: escaping is a display concern, and the
    decoded original is kept unchanged next to the escaped form.
    """

    subject: str = ""
    from_addr: str | None = None
    from_name: str | None = None
    to: tuple[str, ...] = ()
    cc: tuple[str, ...] = ()
    reply_to: tuple[str, ...] = ()
    message_id: str | None = None  # without angle brackets
    in_reply_to: tuple[str, ...] = ()  # Message-IDs without angle brackets
    references: tuple[str, ...] = ()  # Message-IDs without angle brackets, oldest first
    date: datetime | None = None
    content_type: str = "text/plain"
    text: str = ""
    html_text: str | None = None  # the HTML body as text, when there was one
    html_links: tuple[str, ...] = ()  # href targets found in the HTML body, in order
    attachments: tuple[Attachment, ...] = ()
    headers: tuple[tuple[str, str], ...] = ()  # every top-level header, decoded, in order
    received: tuple[str, ...] = ()  # Received header values, newest first
    sender_ip: str | None = None  # client IP of the first external hop, if one is found
    defects: tuple[str, ...] = ()  # e.g. "parse_error: …", "missing_headers", "too_complex"

    def header(self, name: str) -> str | None:
        """The first header of that name, case-insensitively (RFC 5322 §1.2.2)."""
        wanted = name.lower()
        for key, value in self.headers:
            if key.lower() == wanted:
                return value
        return None

    def header_all(self, name: str) -> list[str]:
        wanted = name.lower()
        return [value for key, value in self.headers if key.lower() == wanted]


@dataclass(frozen=True, slots=True)
class Indicator:
    """A normalised, refanged observable: what the desk searches for."""

    kind: IndicatorKind
    value: str


@dataclass(frozen=True, slots=True)
class Classification:
    """What a message is, and the rule that decided it (stored so the desk can see why)."""

    kind: Literal["person", "machine_report", "automatic"]
    rule: str


@dataclass(frozen=True, slots=True)
class MachineReport:
    """Fields of an ARF / X-ARF / XARF report or a Hotmail JMRP complaint, as the desk needs them."""

    format: Literal["arf", "x-arf", "xarf", "jmrp"]
    category: str | None = None  # feedback type (ARF) or category (X-ARF/XARF)
    fields: dict[str, object] = field(default_factory=dict)
    source_ip: str | None = None
    domains: tuple[str, ...] = ()
    urls: tuple[str, ...] = ()
    original_headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class ContentHash:
    """The digests of one blob of bytes; `pdq` only for a decodable image."""

    sha256: str
    md5: str
    sha1: str
    size: int
    pdq: str | None = None  # 64 hex digits
    pdq_quality: int | None = None  # 0–100; PDQ's own confidence in the hash


@dataclass(frozen=True, slots=True)
class NestedHash:
    """Something inside an attachment: a ZIP member or a part of an attached message.

    `parent_sha256` is the SHA-256 of the top-level attachment it was found in (the store's attachment row);
    `path` says where inside it, e.g. `zip:photos/a.jpg` or `rfc822:2/zip:x.png`.
    """

    parent_sha256: str
    path: str
    hashes: ContentHash


@dataclass(frozen=True, slots=True)
class ContentHashes:
    attachments: tuple[ContentHash, ...] = ()
    nested: tuple[NestedHash, ...] = ()
    defects: tuple[str, ...] = ()

    def all(self) -> list[ContentHash]:
        return [*self.attachments, *(n.hashes for n in self.nested)]
