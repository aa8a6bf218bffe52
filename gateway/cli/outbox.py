"""`outbox list` and `outbox show`: the confirmations and acknowledgements we sent, and their state."""

from __future__ import annotations

import sys

import click

from gateway.cli.common import EX_NOTFOUND, _case_arg, _print_json, _say, _store, _v, main, with_config


@main.group()
def outbox() -> None:
    """Confirmations and their delivery state."""


@outbox.command("list")
@with_config
@click.option("--case", "case_id", default=None, metavar="CASE", help="only what went out for this case")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def outbox_list(ctx: click.Context, case_id: str | None, as_json: bool) -> None:
    """Confirmations and acknowledgements, newest first, with their delivery state."""
    if case_id is not None:
        case_id = _case_arg(ctx, case_id)
    rows = _store(ctx).list_outbox(case_id=case_id)
    if as_json:
        _print_json(rows)
        return
    for row in rows:
        why = " ".join(part for part in (row["suppressed_reason"], row["last_error"]) if part)
        _say(
            f"{row['id']:>6}  {_v(row['case_id'])}  {_v(row['kind']):<15} {_v(row['state']):<10} "
            f"attempts={row['attempts']}  {_v(why)}"
        )


@outbox.command("show")
@with_config
@click.argument("outbox_id", type=int)
@click.pass_context
def outbox_show(ctx: click.Context, outbox_id: int) -> None:
    """The exact bytes of mail ID as it was sent (through the smarthost or to the .eml), and its state.

    Our own text, never the report's; shown escaped on a terminal like everything else.
    """
    found = _store(ctx).outbox_message(outbox_id)
    if found is None:
        click.echo(f"abuse-gateway: no outbox entry {outbox_id}", err=True)
        ctx.exit(EX_NOTFOUND)
    row, raw = found
    _say(f"# {_v(row['kind'])} for {row['case_id']} to {_v(row['recipient'])}: {_v(row['state'])}", err=True)
    if raw is None:
        reason = _v(row["suppressed_reason"]) or "not sent yet"
        _say(f"abuse-gateway: nothing was sent for outbox entry {outbox_id} ({reason})", err=True)
        ctx.exit(EX_NOTFOUND)
    text = raw.decode("utf-8", "replace").replace("\r\n", "\n")
    if sys.stdout.isatty():  # our own text, but it names a sender-chosen address: never raw on a terminal
        from parsers.display import terminal_safe

        text = terminal_safe(text, multiline=True)
    click.echo(text, nl=False)
