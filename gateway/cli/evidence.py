"""Evidence leaving the store: a message's raw bytes (`cases raw`), every case as JSON lines
(`cases export`) and one attachment to a file (`cases attachment`). Each is audited, and each passes the
CSAM compartment's viewing rule (gateway/cli/compartment.py)."""

from __future__ import annotations

import os
import sys

import click

from gateway.cli.common import (
    _TIME_HELP,
    EX_NOTFOUND,
    EX_USAGE,
    _case_arg,
    _instant,
    _json_line,
    _say,
    _store,
    _unix_user,
    _v,
    cases,
    with_config,
)
from gateway.cli.compartment import _REASON_HELP, _compartment_gate, _reason_text


@cases.command("raw")
@with_config
@click.argument("case_id")
@click.argument("index", type=int)
@click.option("--force", is_flag=True, help="write to a terminal anyway (the raw bytes may drive it)")
@click.option("--reason", default=None, metavar="TEXT", help=_REASON_HELP)
@click.pass_context
def cases_raw(ctx: click.Context, case_id: str, index: int, force: bool, reason: str | None) -> None:
    """Write message INDEX's original bytes to stdout (evidence export): redirect it to a file or a pipe."""
    case_id = _case_arg(ctx, case_id)
    reason = _reason_text(ctx, reason)
    marked = _compartment_gate(ctx, case_id, reason, "cases raw")
    if sys.stdout.isatty() and (not force or marked):
        # The original bytes are the sender's, escape sequences included: on a terminal they would repaint
        # the screen, set titles or write the clipboard. Evidence goes to a file; --force for the brave,
        # but never for a CSAM case (its attachments would be rendered by whatever reads the terminal).
        _say("abuse-gateway: cases raw writes the sender's bytes; redirect it or pass --force", err=True)
        ctx.exit(EX_USAGE)
    raw = _store(ctx).raw_message(case_id, index)
    if raw is None:
        _say(f"abuse-gateway: no message {index} in case {case_id}", err=True)
        ctx.exit(EX_NOTFOUND)
    if marked:
        from storage.csam_views import record_view

        record_view(_store(ctx).engine, _unix_user(), case_id, "raw", reason, message_index=index)
    else:
        _store(ctx).audit(_unix_user(), "raw", f"{case_id.upper()} {index}")
    out = sys.stdout.buffer
    out.write(raw)
    out.flush()


@cases.command("export")
@with_config
@click.option("--since", default=None, help=f"cases updated since: {_TIME_HELP}")
@click.option(
    "--include-csam",
    is_flag=True,
    help="include the content of CSAM and possible-CSAM cases (needs --reason; each case's view is recorded)",
)
@click.option("--reason", default=None, metavar="TEXT", help="why CSAM content must leave (--include-csam)")
@click.pass_context
def cases_export(ctx: click.Context, since: str | None, include_csam: bool, reason: str | None) -> None:
    """Every case as one JSON object per line, the shape of `cases show --json`.

    CSAM and possible-CSAM cases are exported as metadata only (status, dates, counts, hashes, flags, and
    `content_withheld: true`) unless `--include-csam --reason TEXT`.
    """
    since_at = _instant(ctx, "--since", since)
    reason = _reason_text(ctx, reason)
    if include_csam and reason is None:
        _say("abuse-gateway: --include-csam needs --reason TEXT (recorded with your name)", err=True)
        ctx.exit(EX_USAGE)
    from storage.csam_views import metadata_view, record_view

    store = _store(ctx)
    actor = _unix_user()
    what = f"since {since_at.isoformat()}" if since_at else "all"
    store.audit(actor, "export", f"{what} with CSAM content" if include_csam else what)
    for view in store.export_cases(since_at):
        if view.get("csam") or view.get("possible_csam"):
            if not include_csam:
                view = metadata_view(view)
            else:
                record_view(store.engine, actor, view["case_id"], "export", reason)
        click.echo(_json_line(view))


@cases.command("attachment")
@with_config
@click.argument("case_id")
@click.argument("index", type=int)
@click.argument("number", type=click.IntRange(min=1))
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False), help="file to write")
@click.option("--force", is_flag=True, help="replace FILE if it exists")
@click.option("--reason", default=None, metavar="TEXT", help=_REASON_HELP)
@click.pass_context
def cases_attachment(
    ctx: click.Context, case_id: str, index: int, number: int, out_path: str, force: bool, reason: str | None
) -> None:
    """Write attachment NUMBER of message INDEX, byte for byte, to a new file (mode 0600).

    Never to stdout or a terminal, and nothing is opened or rendered: what the file is, is for the
    operator to decide with the right tool. On a CSAM case it needs --reason and is recorded as a view.
    """
    import stat

    from parsers.payloads import attachment_payloads
    from storage.csam_views import record_view

    case_id = _case_arg(ctx, case_id)
    reason = _reason_text(ctx, reason)
    if out_path in ("-", "/dev/stdout", "/dev/stderr", "/dev/tty"):
        _say("abuse-gateway: cases attachment writes only to a file, never to stdout or a terminal", err=True)
        ctx.exit(EX_USAGE)
    marked = _compartment_gate(ctx, case_id, reason, "cases attachment")
    store = _store(ctx)
    raw = store.raw_message(case_id, index)
    view = store.show_case(case_id)
    if raw is None or view is None:
        _say(f"abuse-gateway: no message {index} in case {case_id}", err=True)
        ctx.exit(EX_NOTFOUND)
    listed = next((m["attachments"] for m in view["messages"] if m["index"] == index), [])
    payloads = attachment_payloads(raw)
    if number > len(listed) or number > len(payloads):
        _say(f"abuse-gateway: message {index} of {case_id} has {len(listed)} attachment(s)", err=True)
        ctx.exit(EX_NOTFOUND)
    data = payloads[number - 1]
    import hashlib

    if hashlib.sha256(data).hexdigest() != listed[number - 1]["sha256"]:
        # The parser that listed it and the one reading it now disagree (an upgrade): say so, write nothing.
        _say(f"abuse-gateway: attachment {number} no longer matches its stored sha256; reprocess", err=True)
        ctx.exit(EX_USAGE)
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | (os.O_TRUNC if force else os.O_EXCL)
    try:
        fd = os.open(out_path, flags, 0o600)
    except FileExistsError:
        _say(f"abuse-gateway: {_v(out_path)} exists; pass --force to replace it", err=True)
        ctx.exit(EX_USAGE)
    except OSError as exc:
        _say(f"abuse-gateway: cannot write {_v(out_path)}: {exc.strerror}", err=True)
        ctx.exit(EX_USAGE)
    with os.fdopen(fd, "wb") as handle:
        if not stat.S_ISREG(os.fstat(fd).st_mode) or os.isatty(fd):
            _say("abuse-gateway: cases attachment writes only to a regular file", err=True)
            ctx.exit(EX_USAGE)
        os.fchmod(fd, 0o600)  # also when --force replaced a file that had wider permissions
        if marked:
            record_view(store.engine, _unix_user(), case_id, "attachment", reason, index, number)
        else:
            store.audit(_unix_user(), "attachment", f"{case_id} {index} {number}")
        handle.write(data)
    _say(f"wrote {len(data)} bytes (sha256 {listed[number - 1]['sha256']}) to {_v(out_path)}")
