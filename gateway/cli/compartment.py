"""The viewing rule of the CSAM compartment (issue 19): a case marked CSAM or possible CSAM shows its
content only with a reason, recorded with who asked; and `cases csam`, which marks and clears it."""

from __future__ import annotations

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

_REASON_HELP = "why you need to see it (required on a CSAM or possible-CSAM case; audited)"


def _reason_text(ctx: click.Context, reason: str | None) -> str | None:
    """A reason as given, or None; an empty or blank one is no reason at all (exit 2)."""
    from gateway.viewing import reason_text

    if reason is None:
        return None
    stated = reason_text(reason)
    if stated is None:
        _say("abuse-gateway: --reason needs words: who asked, what for", err=True)
        ctx.exit(EX_USAGE)
    return stated


def _compartment_gate(ctx: click.Context, case_id: str, reason: str | None, what: str) -> bool:
    """True when the case is in the CSAM compartment (so the view is recorded as `viewed`). Refuses (exit 2)
    a view of such a case without a reason; exit 1 for an unknown case (issue 19, point 5)."""
    from gateway.viewing import OPERATOR, Sight, sight
    from storage.csam_views import in_compartment

    marked = in_compartment(_store(ctx).engine, case_id)
    seen = sight(OPERATOR, marked)
    if seen is Sight.NONE:
        _say(f"abuse-gateway: no case {case_id}", err=True)
        ctx.exit(EX_NOTFOUND)
    if seen is Sight.REASON and reason is None:
        _say(
            f"abuse-gateway: {case_id} is marked CSAM or possible CSAM: {what} needs --reason TEXT "
            "(recorded with your name); `cases show --metadata` needs none",
            err=True,
        )
        ctx.exit(EX_USAGE)
    return bool(marked)


@cases.command("csam")
@with_config
@click.argument("case_id")
@click.option("--reason", required=True, metavar="TEXT", help="why (recorded with your name)")
@click.option("--clear", is_flag=True, help="unmark: clear the CSAM mark and every possible-CSAM signal")
@click.option("--possible", is_flag=True, help="raise the possible-CSAM signal instead of confirming")
@click.pass_context
def cases_csam(ctx: click.Context, case_id: str, reason: str, clear: bool, possible: bool) -> None:
    """Mark a case as child sexual abuse material (or, with --clear, unmark it); audited with who and why.

    A mark preserves the case [csam] preserve_days (at least 365) from now, and its content is then shown
    only with --reason. --clear ends the preservation of possible-CSAM signals; a confirmed mark's year
    stands even when cleared.
    """
    from datetime import timedelta

    from storage.csam import CSAM, POSSIBLE, CsamError, clear_marks, mark

    case_id = _case_arg(ctx, case_id)
    why = _reason_text(ctx, reason) or ""
    engine = _store(ctx).engine
    try:
        if clear:
            result = clear_marks(engine, case_id, _unix_user(), why)
        else:
            preserve = timedelta(days=_config(ctx).csam.preserve_days)
            result = mark(engine, case_id, _unix_user(), why, preserve, POSSIBLE if possible else CSAM)
    except CsamError as exc:
        _refused(ctx, str(exc))
    until = result.preserve_until
    held = f"preserved until {until.isoformat()}" if until else "not preserved"
    where = f" (the messages of {case_id} are in {result.case_id})" if result.case_id != case_id else ""
    if clear:
        _say(f"{result.case_id} cleared ({result.cleared} mark(s)); {held}{where}")
    else:
        _say(f"{result.case_id} marked {'possible CSAM' if possible else 'CSAM'}; {held}{where}")
