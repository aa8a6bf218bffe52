"""The desk's actions towards reporters (issue 21), one set of functions for the CLI and the web desk:
answer a case's reporter, set what the reporter sees, give out or revoke status links.

Every mail is queued in the outbox (its worker signs, sends, retries and records bounces and the exact
bytes), addressed to envelope senders the case already trusts, and answers our own last message to that
recipient (`In-Reply-To`/`References`), so the reporter's answer threads back by header as well as by the
signed reply address and the `[CASE]` subject. The desk's text is the desk's: templates fill only our own
values (gateway/reporter_texts.py), and a reply to a case marked or flagged as CSAM refuses quoted lines,
so nobody pastes the report back to its sender by habit.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from email.utils import make_msgid
from typing import Any

from gateway.config import Config
from gateway.confirm import load_token_keys
from gateway.reporter_mail import clean_body, status_line, tagged_subject, when
from gateway.reporter_mail import status_link as _status_link
from gateway.reporter_texts import LANGUAGES, render, reply_template, split_subject, texts
from parsers.address import is_plain_mailbox
from parsers.reply_token import make_reply_token
from storage.records import DeskMail

# Reporter states as the desk types them, and as they are stored.
STATES = {
    "received": "received",
    "in-review": "in_review",
    "action-taken": "action_taken",
    "closed": "closed",
}


class DeskMailError(ValueError):
    """The mail cannot be sent as asked (no case, nobody to write to, a quote in a CSAM case, a bad
    template); the message says why in the desk's words."""


@dataclass(frozen=True, slots=True)
class StateChange:
    case_id: str
    state: str
    at: str
    outbox_ids: tuple[int, ...] = ()


def _context(store: Any, case_id: str) -> dict[str, Any]:
    context = store.reporters.reply_context(case_id)
    if context is None:
        raise DeskMailError(f"no case {case_id}")
    return context


def _recipients(context: dict[str, Any], to_participants: bool) -> list[str]:
    people = [context["reporter"]] if context["reporter"] else []
    if to_participants:
        people += context["participants"]
    plain = [p for p in dict.fromkeys(people) if p and is_plain_mailbox(p)]
    if not plain:
        raise DeskMailError(f"case {context['case_id']} has no reporter address we may write to")
    return plain


def _values(
    config: Config, context: dict[str, Any], words: dict[str, str], recipient: str, key: bytes
) -> dict[str, str]:
    """Our own values, the only ones a desk text may name: no subject, text, filename or indicator."""
    case_id = context["case_id"]
    local, _, domain = config.confirm.from_.partition("@")
    link = _status_link(config, case_id, context["status_generation"], recipient, key)
    state = context["reporter_state"]
    return {
        "case_id": case_id,
        "reply_to": f"{local}+{make_reply_token(case_id, key)}@{domain}",
        "received_date": when(context["created_at"]),
        "message_count": str(context["messages"]),
        "state": words.get(f"state_{state}", state),
        "state_date": when(context["reporter_state_at"]),
        "status_link": link or "",
        "status_line": status_line(config, words, link),
    }


def _queue(
    config: Config,
    store: Any,
    context: dict[str, Any],
    kind: str,
    recipients: Sequence[str],
    write: Any,
    actor: str,
) -> list[int]:
    key = load_token_keys(config)[0]
    domain = config.confirm.from_.partition("@")[2] or "localhost"
    mails = []
    for recipient in recipients:
        language = context["languages"].get(recipient) or config.confirm.default_language
        language = language if language in LANGUAGES else "en"
        words = texts(language, config.reply.templates_dir)
        subject, body = write(words, language, _values(config, context, words, recipient, key))
        mails.append(
            DeskMail(
                recipient=recipient,
                subject=tagged_subject(subject, context["case_id"]),
                body=clean_body(body),
                language=language,
                message_id=make_msgid(domain=domain)[1:-1],
                in_reply_to=context["last_message_id"].get(recipient),
            )
        )
    return store.reporters.queue_desk_mail(context["case_id"], kind, mails, actor)


def queue_reply(
    config: Config,
    store: Any,
    case_id: str,
    *,
    actor: str,
    text: str | None = None,
    template: str | None = None,
    to_participants: bool = False,
) -> list[int]:
    """Queue the desk's answer to a case's reporter (and, when asked, its verified participants); the
    outbox row ids. `text` is what the desk wrote (a first line `Subject: …` sets the subject); `template`
    names a reply template instead, in each recipient's language when one exists."""
    if (text is None) == (template is None):
        raise DeskMailError("give either a text or a template")
    context = _context(store, case_id)
    if text is not None:
        subject, body = split_subject(text)
        if not body.strip():
            raise DeskMailError("the reply is empty")
        if context["csam"] and re.search(r"(?m)^\s*>", body):
            raise DeskMailError(
                f"case {context['case_id']} is marked or flagged as CSAM: a reply never quotes the report "
                "(remove the quoted '>' lines)"
            )

    def write(words: dict[str, str], language: str, values: dict[str, str]) -> tuple[str, str]:
        if template is not None:
            chosen_subject, chosen_body = reply_template(template, language, config.reply.templates_dir)
        else:
            chosen_subject, chosen_body = subject, body
        return render(chosen_subject or words["reply_subject"], values), render(chosen_body, values)

    return _queue(config, store, context, "reply", _recipients(context, to_participants), write, actor)


def set_reporter_state(
    config: Config, store: Any, case_id: str, state: str, *, actor: str, notify: bool = False
) -> StateChange:
    """Set what the reporter sees on the status page (audited); with `notify`, mail them the state's
    notice in their language. `state` as the desk types it (`in-review`) or as stored (`in_review`)."""
    stored = STATES.get(state, state)
    if stored not in STATES.values():
        raise DeskMailError(f"unknown state {state!r} (one of {', '.join(STATES)})")
    at = store.reporters.set_reporter_state(case_id, stored, actor)
    if at is None:
        raise DeskMailError(f"no case {case_id}")
    ids: list[int] = []
    if notify:
        context = _context(store, case_id)

        def write(words: dict[str, str], _language: str, values: dict[str, str]) -> tuple[str, str]:
            return render(words["notice_subject"], values), render(words[f"notice_{stored}"], values)

        ids = _queue(config, store, context, "state", _recipients(context, False), write, actor)
    return StateChange(case_id.upper(), stored, at.isoformat(), tuple(ids))


def status_link_for(config: Config, store: Any, case_id: str, recipient: str | None = None) -> str | None:
    """The status link of a case for its reporter (or another participant); None when `[status] base_url`
    is unset. Raises DeskMailError for an unknown case or a stranger."""
    context = _context(store, case_id)
    people = [p for p in [context["reporter"], *context["participants"]] if p]
    chosen = (recipient or (people[0] if people else "")).strip().lower()
    if chosen not in people:
        raise DeskMailError(f"{case_id}: not a reporter or participant of the case")
    return _status_link(
        config, context["case_id"], context["status_generation"], chosen, load_token_keys(config)[0]
    )


def revoke_status_links(store: Any, case_id: str, *, actor: str) -> int:
    """Every status link of the case stops working (audited); the new generation."""
    generation = store.reporters.revoke_status_links(case_id, actor)
    if generation is None:
        raise DeskMailError(f"no case {case_id}")
    return int(generation)
