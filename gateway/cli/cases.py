"""Reading cases: `cases list` (search) and `cases show` (one case, or its metadata only). Content of a
case in the CSAM compartment passes the viewing rule in gateway/cli/compartment.py first."""

from __future__ import annotations

from typing import Any

import click

from gateway.cli.common import (
    _TIME_HELP,
    EX_NOTFOUND,
    EX_USAGE,
    _case_arg,
    _instant,
    _print_json,
    _say,
    _store,
    _unix_user,
    _v,
    cases,
    with_config,
)
from gateway.cli.compartment import _REASON_HELP, _compartment_gate, _reason_text
from storage.search import CASE_STATUSES, MESSAGE_KINDS


@cases.command("list")
@with_config
@click.option("--status", type=click.Choice(CASE_STATUSES), default=None)
@click.option("--kind", type=click.Choice(MESSAGE_KINDS), default=None, help="cases holding a message of it")
@click.option("--reporter", default=None, metavar="ADDRESS", help="the reporter's address, exactly")
@click.option(
    "--flag", default=None, help="csam, possible_csam, unverified_sender, processing_failed, …"
)
@click.option("--indicator", default=None, help="URL, domain, IP or e-mail address (defanged is fine)")
@click.option("--text", default=None, metavar="WORDS", help="full text of subjects and messages (all words)")
@click.option(
    "--hash",
    "digest",
    default=None,
    metavar="HEX",
    help="MD5, SHA-1, SHA-256 or PDQ of an attachment or of a file inside one",
)
@click.option("--since", default=None, help=f"updated since: {_TIME_HELP}")
@click.option("--until", default=None, help=f"updated until: {_TIME_HELP}")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(min=1))
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def cases_list(
    ctx: click.Context,
    status: str | None,
    kind: str | None,
    reporter: str | None,
    flag: str | None,
    indicator: str | None,
    text: str | None,
    digest: str | None,
    since: str | None,
    until: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """List cases, newest first; every filter given must match. Times are printed in UTC with offset."""
    from storage.search import CaseFilter, find_cases

    store = _store(ctx)
    from gateway.case_query import indicator_filter, is_digest

    host_or_value = None
    if indicator:
        host_or_value = indicator_filter(indicator)
        if host_or_value is None:
            _say(f"abuse-gateway: {indicator!r} is not a URL, domain, IP or e-mail address", err=True)
            ctx.exit(EX_USAGE)
    if digest is not None and not is_digest(digest):
        _say(f"abuse-gateway: --hash {digest!r} is not 32, 40 or 64 hex digits", err=True)
        ctx.exit(EX_USAGE)
    wanted = CaseFilter(
        status=status,
        kind=kind,
        reporter=reporter,
        flag=flag,
        indicator=host_or_value,
        text=text,
        since=_instant(ctx, "--since", since),
        until=_instant(ctx, "--until", until),
        digest=digest,
    )
    found = find_cases(store.engine, wanted, limit=limit)
    from gateway.viewing import withhold_listed

    rows = withhold_listed(found.rows)  # a subject is content: of a CSAM case, only with a reason (issue 19)
    if found.cut_note():
        click.echo(str(found.cut_note()), err=True)
    if as_json:
        _print_json(rows)
        return
    for row in rows:
        _say(
            f"{_v(row['case_id'])}  {_v(row['status']):<6}  {row['messages']:>3} msg  "
            f"{_v(row['created_at'])}  {_short_address(row['reporter'])}  {_v(row['subject'])}"
        )


def _short_address(address: str | None) -> str:
    return _v(address) if address else "-"


def _show_metadata(view: dict[str, Any], as_json: bool) -> None:
    """Status, dates, counts, hashes and flags: nothing a sender wrote, so no reason is asked."""
    from gateway.wording import csam_words
    from storage.csam_views import HASH_KEYS, metadata_view

    meta = metadata_view(view)
    if as_json:
        _print_json(meta)
        return
    _say(f"Case {_v(meta['case_id'])}  [{_v(meta['status'])}]  (metadata only: no content shown)")
    _say(f"Opened {_v(meta['created_at'])}  updated {_v(meta['updated_at'])}")
    for line in csam_words(view):
        _say(_v(line))
    _say(
        f"Messages: {meta['message_count']}  attachments: {meta['attachment_count']}  "
        f"indicators: {meta['indicator_count']}"
    )
    if meta["flags"]:
        _say(f"Flags: {', '.join(_v(flag) for flag in meta['flags'])}")
    for message in meta["messages"]:
        _say(
            f"#{message['index']} {_v(message['kind'])} received {_v(message['received_at'])} "
            f"{message.get('size') or '-'} bytes sha256 {_v(message['sha256'])}"
        )
        for attachment in message["attachments"]:
            hashes = " ".join(f"{k} {_v(attachment[k])}" for k in HASH_KEYS if attachment.get(k))
            viewed = "viewed by a person" if attachment["viewed_by_person"] else "not viewed by a person"
            _say(
                f"  file {attachment['index']}: {_v(attachment['content_type'])} {attachment['size']} bytes "
                f"{hashes} ({viewed})"
            )


@cases.command("show")
@with_config
@click.argument("case_id")
@click.option("--json", "as_json", is_flag=True)
@click.option("--metadata", is_flag=True, help="status, dates, counts, hashes and flags only (no content)")
@click.option("--reason", default=None, metavar="TEXT", help=_REASON_HELP)
@click.pass_context
def cases_show(ctx: click.Context, case_id: str, as_json: bool, metadata: bool, reason: str | None) -> None:
    """One case with its messages (escaped text), attachments, indicators and flags."""
    case_id = _case_arg(ctx, case_id)
    reason = _reason_text(ctx, reason)
    view = _store(ctx).show_case(case_id)
    if view is None:
        _say(f"abuse-gateway: no case {case_id}", err=True)
        ctx.exit(EX_NOTFOUND)
    if metadata:
        _store(ctx).audit(_unix_user(), "metadata", case_id)
        _show_metadata(view, as_json)
        return
    if _compartment_gate(ctx, case_id, reason, "cases show"):
        from storage.csam_views import record_view

        record_view(_store(ctx).engine, _unix_user(), case_id, "show", reason)
    else:
        _store(ctx).audit(_unix_user(), "show", case_id)
    if as_json:
        _print_json(view)
        return
    from gateway.wording import csam_words, rule_words, thread_words

    _say(f"Case {_v(view['case_id'])}  [{_v(view['status'])}]  reporter: {_v(view['reporter']) or '-'}")
    _say(f"Opened {_v(view['created_at'])}  updated {_v(view['updated_at'])}")
    _say(f"Assigned to: {_v(view.get('assignee')) or 'nobody'}")
    for line in csam_words(view):
        _say(_v(line))
    if view.get("merged_into"):
        _say(f"Merged into {_v(view['merged_into'])} (its messages are there now)")
    for link in view.get("related", []):
        how = "split from" if link["relation"] == "split_from" else "same reporter"
        if link["relation"] == "split_from" and link["direction"] == "later":
            how = "split into"
        _say(f"Related: {_v(link['case_id'])} [{_v(link['status'])}] ({how})")
    if view["flags"]:
        _say(f"Flags: {', '.join(_v(flag) for flag in view['flags'])}")
    for message in view["messages"]:
        _say("")
        _say(f"--- #{message['index']} {_v(message['kind'])}  received {_v(message['received_at'])}")
        _say(f"Kind: {_v(rule_words(message['kind'], message['kind_rule']))}")
        _say(f"Threading: {_v(thread_words(message['thread_signal'], message['index'], message['flags']))}")
        _say(f"From: {_v(message['from']) or '-'}   (header)")
        sender = message["sender"]
        if sender is None:  # imported without an envelope (issue 16): not the null sender
            _say("Envelope sender: unknown (imported without an envelope)")
        else:
            _say(f"Envelope sender: {_v(sender) or '<> (null sender)'}")
        _say(f"Envelope recipients: {', '.join(_v(r) for r in message.get('recipients') or []) or '-'}")
        _say(f"Client address: {_v(message.get('client_addr')) or '-'}")
        _say(f"Size: {message.get('size') or '-'} bytes  sha256 {_v(message['sha256'])}")
        if message.get("message_id"):
            _say(f"Message-ID: {_v(message['message_id'])}")
        _say(f"Subject: {_v(message['subject'])}")
        if message["flags"]:
            _say(f"Flags: {', '.join(_v(flag) for flag in message['flags'])}")
        if message["defects"]:
            _say(f"Defects: {', '.join(_v(defect) for defect in message['defects'])}")
        for attachment in message["attachments"]:
            viewed = ", viewed by a person" if attachment.get("viewed_by_person") else ""
            _say(
                f"Attachment: {_v(attachment['filename']) or '(unnamed)'} {_v(attachment['content_type'])} "
                f"{attachment['size']} bytes sha256 {_v(attachment['sha256'])} "
                f"(file {attachment.get('index', '?')}{viewed})"
            )
        if message.get("report"):
            report = message["report"]
            fields = (("format", "format"), ("category", "category"), ("source", "source_ip"))
            _say("Report: " + " ".join(f"{label}={_v(report.get(key)) or '-'}" for label, key in fields))
            for key, value in report["fields"].items():
                _say(f"  {_v(key)}: {_v(value)}")
        _say("")
        click.echo(_v(message["text"], multiline=True))
    if view["indicators"]:
        _say("")
        _say("Indicators:")
        for indicator in view["indicators"]:
            _say(f"  {_v(indicator['kind']):<6} {_v(indicator['value'])}")
    for sent in view.get("outbox", []):
        when = sent["sent_at"] or sent["created_at"]
        why = f" ({_v(sent['suppressed_reason'])})" if sent["suppressed_reason"] else ""
        _say(
            f"Sent: #{sent['id']} {_v(sent['kind'])} to {_v(sent['recipient'])}: {_v(sent['state'])}{why} "
            f"{_v(when)}  (outbox show {sent['id']})"
        )
    for note in view.get("notes", []):
        _say("")
        _say(f"Note by {_v(note['author'])} at {_v(note['created_at'])}:")
        click.echo(_v(note["body"], multiline=True))
    for event in view.get("events", []):
        _say(f"Event {_v(event['at'])}: {_v(event['kind'])} {_v(event['detail'])}")
