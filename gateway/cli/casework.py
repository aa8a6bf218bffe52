"""Changing a case by hand: status (`close`, `reopen`), legal hold (`hold`, `release`), and moving
messages between cases (`merge`, `unmerge`, `split`, `unsplit`), each audited and each undoable; and
working it (`assign`, `note`, issue 20), through the same storage calls as the web desk."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from gateway.cli.common import (
    EX_NOTFOUND,
    EX_USAGE,
    _case_arg,
    _config,
    _refused,
    _say,
    _store,
    _unix_user,
    cases,
    with_config,
)


def _case_answer(ctx: click.Context, case_id: str, found: bool, done: str) -> None:
    """A status or hold change: `done` once it holds, else the one "no case" answer (exit 1)."""
    if not found:
        _say(f"abuse-gateway: no case {case_id}", err=True)
        ctx.exit(EX_NOTFOUND)
    _say(done)


@cases.command("close")
@with_config
@click.argument("case_id")
@click.pass_context
def cases_close(ctx: click.Context, case_id: str) -> None:
    """Close a case (a later message reopens it)."""
    case_id = _case_arg(ctx, case_id)
    _case_answer(
        ctx,
        case_id,
        _store(ctx).set_status(case_id, "closed", f"by {_unix_user()}"),
        f"{case_id.upper()} closed",
    )


@cases.command("reopen")
@with_config
@click.argument("case_id")
@click.pass_context
def cases_reopen(ctx: click.Context, case_id: str) -> None:
    """Reopen a closed case."""
    case_id = _case_arg(ctx, case_id)
    _case_answer(
        ctx, case_id, _store(ctx).set_status(case_id, "open", f"by {_unix_user()}"), f"{case_id.upper()} open"
    )


@cases.command("hold")
@with_config
@click.argument("case_id")
@click.pass_context
def cases_hold(ctx: click.Context, case_id: str) -> None:
    """Put a case on legal hold: `purge` never removes it."""
    case_id = _case_arg(ctx, case_id)
    _case_answer(
        ctx, case_id, _store(ctx).set_hold(case_id, True, _unix_user()), f"{case_id.upper()} on hold"
    )


@cases.command("release")
@with_config
@click.argument("case_id")
@click.pass_context
def cases_release(ctx: click.Context, case_id: str) -> None:
    """Release a case from hold."""
    case_id = _case_arg(ctx, case_id)
    _case_answer(
        ctx, case_id, _store(ctx).set_hold(case_id, False, _unix_user()), f"{case_id.upper()} released"
    )


def _casework(ctx: click.Context) -> Any:
    from gateway.assembly import build_casework

    return build_casework(_config(ctx))


def _case_move(ctx: click.Context, action: Callable[[Any], Any]) -> Any:
    """Run one merge/split operation; a refusal is a usage error in words, never a traceback."""
    from storage.casework import CaseWorkError

    try:
        return action(_casework(ctx))
    except CaseWorkError as exc:
        _refused(ctx, str(exc))


def _reindex(ctx: click.Context, case_id: str) -> None:
    """Index the indicators of a case that received messages by a split: they are derived from the
    messages, so they are derived again (the raw bytes are read, never changed)."""
    from gateway.reindex import reindex_case

    reindex_case(_store(ctx), case_id)


@cases.command("merge")
@with_config
@click.argument("case_id")
@click.argument("into_case")
@click.pass_context
def cases_merge(ctx: click.Context, case_id: str, into_case: str) -> None:
    """Move every message of CASE into INTO_CASE (audited; `cases unmerge CASE` undoes it).

    CASE keeps its ID, with status `merged`: mail naming it joins INTO_CASE. Raw evidence is untouched.
    """
    case_id = _case_arg(ctx, case_id)
    into_case = _case_arg(ctx, into_case)
    result = _case_move(ctx, lambda work: work.merge(case_id, into_case, _unix_user()))
    click.echo(f"{result.source} merged into {result.target} ({result.messages} message(s))")


@cases.command("unmerge")
@with_config
@click.argument("case_id")
@click.pass_context
def cases_unmerge(ctx: click.Context, case_id: str) -> None:
    """Undo the latest merge of CASE: its messages go back to it, at their old numbers."""
    case_id = _case_arg(ctx, case_id)
    result = _case_move(ctx, lambda work: work.unmerge(case_id, _unix_user()))
    click.echo(f"{result.source} unmerged from {result.target} ({result.messages} message(s))")


@cases.command("split")
@with_config
@click.argument("case_id")
@click.argument("index", type=int)
@click.pass_context
def cases_split(ctx: click.Context, case_id: str, index: int) -> None:
    """Move message INDEX of CASE into a new case of its own (audited; `cases unsplit NEW` undoes it)."""
    case_id = _case_arg(ctx, case_id)
    result = _case_move(ctx, lambda work: work.split(case_id, index, _unix_user()))
    _reindex(ctx, result.target)
    click.echo(f"message {index} of {result.source} is now {result.target}")


@cases.command("unsplit")
@with_config
@click.argument("case_id")
@click.pass_context
def cases_unsplit(ctx: click.Context, case_id: str) -> None:
    """Undo the split that made CASE: its message goes back to where it was."""
    case_id = _case_arg(ctx, case_id)
    result = _case_move(ctx, lambda work: work.unsplit(case_id, _unix_user()))
    click.echo(f"{result.source} returned to {result.target} ({result.messages} message(s))")


def _desk_work(ctx: click.Context, action: Callable[[Any], str]) -> str:
    """Run one assignment or note (the web desk calls the same storage functions); a refusal is in words."""
    from storage.casenotes import DeskWorkError

    try:
        return action(_store(ctx).desk)
    except DeskWorkError as exc:
        _refused(ctx, str(exc))


@cases.command("assign")
@with_config
@click.argument("case_id")
@click.argument("user", required=False)
@click.option("--none", "nobody", is_flag=True, help="assign the case to nobody")
@click.pass_context
def cases_assign(ctx: click.Context, case_id: str, user: str | None, nobody: bool) -> None:
    """Assign CASE to desk user USER (enabled), or to nobody with --none (audited)."""
    case_id = _case_arg(ctx, case_id)
    if nobody == (user is not None):
        click.echo("abuse-gateway: give a USER or --none", err=True)
        ctx.exit(EX_USAGE)
    done = _desk_work(ctx, lambda desk: desk.assign(case_id, None if nobody else user, _unix_user()))
    _say(f"{done} assigned to {user}" if user is not None else f"{done} assigned to nobody")


@cases.command("note")
@with_config
@click.argument("case_id")
@click.option(
    "--file",
    "note_file",
    type=click.File("rb"),
    default="-",
    help="read the note from this file (default: standard input)",
)
@click.pass_context
def cases_note(ctx: click.Context, case_id: str, note_file: Any) -> None:
    """Add an internal note to CASE, from --file or standard input (UTF-8, up to 64 KiB; audited)."""
    from storage.casenotes import NOTE_MAX_BYTES

    case_id = _case_arg(ctx, case_id)
    data = note_file.read(NOTE_MAX_BYTES + 1)
    if len(data) > NOTE_MAX_BYTES:
        click.echo(f"abuse-gateway: the note is longer than {NOTE_MAX_BYTES // 1024} KiB", err=True)
        ctx.exit(EX_USAGE)
    try:
        body = data.decode("utf-8")
    except UnicodeDecodeError:
        click.echo("abuse-gateway: the note is not UTF-8", err=True)
        ctx.exit(EX_USAGE)
    done = _desk_work(ctx, lambda desk: desk.add_note(case_id, _unix_user(), body))
    _say(f"note added to {done}")
