"""The words of every mail to a reporter (issue 21): confirmation, acknowledgement with its receipt, desk
reply, state notice; the subject and text, never the headers (gateway/confirm.py adds those and sends).

All of it is built from our own values: the case ID, dates, counts, attachment digests (never their
filenames, which the sender chose), our reply address and status link. No byte of a report reaches this
module: `OutboxJob` carries none, and `reporter_texts.render` fills only named placeholders.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import datetime
from typing import Any

from gateway.config import Config
from gateway.reporter_texts import LANGUAGES, render, texts
from parsers.status_token import make_status_token
from parsers.types import ParsedMessage
from storage.records import OutboxJob

MAX_RECEIPT_DIGESTS = 50  # more attachments than this: the count says how many, the list stops
MAX_SUBJECT = 200
MAX_BODY = 100_000


def receipt_of(parsed: ParsedMessage, indicators: tuple[Any, ...]) -> dict[str, Any]:
    """What a receipt may say of one message: how many links, each attachment's SHA-256. The store adds
    the message's place in its case."""
    links = sum(1 for indicator, _host in indicators if getattr(indicator, "kind", None) == "url")
    return {"links": links, "attachments": [a.sha256 for a in parsed.attachments]}


def when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC") if value is not None else "-"


def status_link(config: Config, case_id: str, generation: int, recipient: str, key: bytes) -> str | None:
    if not config.status.base_url or not recipient:
        return None
    return f"{config.status.base_url}/s/{make_status_token(case_id, generation, recipient, key)}"


def status_line(config: Config, words: dict[str, str], link: str | None) -> str:
    # Set off by a blank line before it (the templates put `{status_line}` right under a paragraph).
    return "\n" + render(words["status_line"], {"status_link": link}) if link else ""


def tagged_subject(subject: str, case_id: str) -> str:
    """One line, no controls, bounded, and `[CASE]` in it whatever the language or the desk wrote."""
    subject = "".join(" " if unicodedata.category(ch)[0] in "CZ" else ch for ch in subject)
    subject = re.sub(r"\s+", " ", subject).strip()[:MAX_SUBJECT]
    tag = f"[{case_id}]"
    return subject if tag in subject else f"{tag} {subject}".rstrip()


def clean_body(text: str) -> str:
    """Line feeds only, no control characters but tabs, no runs of blank lines, one final newline."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = "".join(
        ch for ch in text if ch in "\n\t" or unicodedata.category(ch) not in ("Cc", "Cf", "Zl", "Zp")
    )
    text = re.sub(r"[ \t]+\n", "\n", text)
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip("\n")[:MAX_BODY] + "\n"


def _receipt(words: dict[str, str], case_id: str, receipt: dict[str, Any] | None) -> str:
    if not receipt:
        return ""  # a row queued before issue 21: no receipt rather than a wrong one
    digests = [
        d for d in receipt.get("attachments") or [] if isinstance(d, str) and re.fullmatch(r"[0-9a-f]{64}", d)
    ]
    lines = [render(words["receipt_attachment"], {"sha256": d}) for d in digests[:MAX_RECEIPT_DIGESTS]]
    return render(
        words["receipt"],
        {
            "case_id": case_id,
            "message_count": str(int(receipt.get("messages") or 0)),
            "link_count": str(int(receipt.get("links") or 0)),
            "attachment_count": str(len(receipt.get("attachments") or [])),
            "attachment_lines": "\n".join(lines),
        },
    )


def compose(config: Config, job: OutboxJob, key: bytes, reply_to: str) -> tuple[str, str]:
    """(subject, text) of an outbox job. Desk mails were written and rendered when queued; confirmations
    and acknowledgements are written here, in the job's language."""
    if job.kind in ("reply", "state"):
        return tagged_subject(job.subject or "", job.case_id), clean_body(job.body or "")
    language = job.language if job.language in LANGUAGES else config.confirm.default_language
    words = texts(language, config.reply.templates_dir)
    kind = "confirmation" if job.kind == "confirmation" else "acknowledgement"
    link = status_link(config, job.case_id, job.status_generation, job.recipient, key)
    values = {
        "case_id": job.case_id,
        "reply_to": reply_to,
        "received_date": when(job.received_at),
        "receipt": _receipt(words, job.case_id, job.receipt),
        "status_line": status_line(config, words, link),
    }
    subject = words[f"{kind}_subject"]
    if kind == "confirmation" and language == "en":
        subject = config.confirm.subject_template  # the older key still names the English subject
    return tagged_subject(render(subject, values), job.case_id), clean_body(
        render(words[f"{kind}_body"], values)
    )
