"""Talking to reporters (issue 21): `cases reply`, `cases state`, `cases status-link`, and the
`status-page` server. The commands only read their arguments and print; what they do lives in
gateway/reporter_desk.py, which the web desk calls too."""

from __future__ import annotations

import sys

import click

from gateway.cli.common import (
    EX_NOTFOUND,
    EX_USAGE,
    _case_arg,
    _config,
    _say,
    _store,
    _unix_user,
    _v,
    cases,
    main,
    with_config,
)

_MAX_INPUT = 100_000


def _fail(ctx: click.Context, exc: Exception) -> None:
    code = EX_NOTFOUND if str(exc).startswith("no case") else EX_USAGE
    _say(f"abuse-gateway: {_v(str(exc))}", err=True)
    ctx.exit(code)


@cases.command("reply")
@with_config
@click.argument("case_id")
@click.option(
    "--file",
    "path",
    type=click.Path(dir_okay=False, exists=True, allow_dash=True),
    default=None,
    help="the text ('-': stdin)",
)
@click.option("--template", default=None, metavar="NAME", help="need-more-info, action-taken, not-ours, …")
@click.option("--to-participants", is_flag=True, help="also to the case's verified participants")
@click.pass_context
def cases_reply(
    ctx: click.Context, case_id: str, path: str | None, template: str | None, to_participants: bool
) -> None:
    """Answer the reporter of a case: the text from --file or stdin (a first line `Subject: …` sets the
    subject), or a --template; queued in the outbox, shown in `cases show` once sent."""
    from gateway.reporter_desk import DeskMailError, queue_reply
    from gateway.reporter_texts import TemplateError

    case_id = _case_arg(ctx, case_id)
    text: str | None = None
    if template is None:
        if path in (None, "-"):
            raw = sys.stdin.buffer.read(_MAX_INPUT + 1)
        else:
            with open(path, "rb") as handle:
                raw = handle.read(_MAX_INPUT + 1)
        if len(raw) > _MAX_INPUT:
            _say(f"abuse-gateway: the reply is longer than {_MAX_INPUT} bytes", err=True)
            ctx.exit(EX_USAGE)
        text = raw.decode("utf-8", "replace")
    elif path is not None:
        _say("abuse-gateway: give --file or --template, not both", err=True)
        ctx.exit(EX_USAGE)
    try:
        ids = queue_reply(
            _config(ctx),
            _store(ctx),
            case_id,
            actor=_unix_user(),
            text=text,
            template=template,
            to_participants=to_participants,
        )
    except (DeskMailError, TemplateError) as exc:
        _fail(ctx, exc)
        return
    if not ids:
        _say(f"abuse-gateway: no case {case_id}", err=True)
        ctx.exit(EX_NOTFOUND)
    _say(f"{case_id} reply queued: " + ", ".join(f"outbox #{i}" for i in ids))


@cases.command("state")
@with_config
@click.argument("case_id")
@click.argument("state", type=click.Choice(["received", "in-review", "action-taken", "closed"]))
@click.option("--notify", is_flag=True, help="mail the reporter the state's notice, in their language")
@click.pass_context
def cases_state(ctx: click.Context, case_id: str, state: str, notify: bool) -> None:
    """Set what the reporter sees on the status page (audited)."""
    from gateway.reporter_desk import DeskMailError, set_reporter_state

    case_id = _case_arg(ctx, case_id)
    try:
        change = set_reporter_state(
            _config(ctx), _store(ctx), case_id, state, actor=_unix_user(), notify=notify
        )
    except DeskMailError as exc:
        _fail(ctx, exc)
        return
    queued = f"; notice queued: outbox #{change.outbox_ids[0]}" if change.outbox_ids else ""
    _say(f"{change.case_id} reporter state {_v(change.state)} {_v(change.at)}{queued}")


@cases.command("status-link")
@with_config
@click.argument("case_id")
@click.option("--revoke", is_flag=True, help="every link given out for the case stops working")
@click.pass_context
def cases_status_link(ctx: click.Context, case_id: str, revoke: bool) -> None:
    """The reporter's status-page link (needs `[status] base_url`), or revoke them all."""
    from gateway.reporter_desk import DeskMailError, revoke_status_links, status_link_for

    case_id = _case_arg(ctx, case_id)
    try:
        if revoke:
            generation = revoke_status_links(_store(ctx), case_id, actor=_unix_user())
            _say(f"{case_id} status links revoked (generation {generation})")
            return
        link = status_link_for(_config(ctx), _store(ctx), case_id)
    except DeskMailError as exc:
        _fail(ctx, exc)
        return
    if link is None:
        _say("abuse-gateway: [status] base_url is not set; no link to give", err=True)
        ctx.exit(EX_USAGE)
    _say(_v(link))


@main.command("status-page")
@with_config
@click.pass_context
def status_page(ctx: click.Context) -> None:
    """Serve the reporters' status page on `[status] listen` (its own process: it faces the Internet)."""
    import uvicorn

    from gateway.assembly import build_status_app

    config = _config(ctx)
    _store(ctx)  # the store must exist and be current before the page answers anyone
    host, _, port = config.status.listen.rpartition(":")
    uvicorn.run(
        build_status_app(config),
        host=host.strip("[]"),
        port=int(port),
        log_level="warning",
        access_log=False,  # a status URL is a credential: it is not written to any log
        server_header=False,
        proxy_headers=False,
    )
