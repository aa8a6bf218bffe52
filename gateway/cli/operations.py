"""Running and keeping the gateway: `serve`, `ingest` (an MTA pipe or a backlog), `reprocess`,
`db upgrade`, `check-config`, `purge` and `audit list`. Each turns what goes wrong into one line and an
exit code an init system or an MTA understands (see gateway/cli/__init__.py)."""

from __future__ import annotations

import contextlib
import logging
import mailbox
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click
from sqlalchemy.exc import SQLAlchemyError

from gateway.cli.common import (
    EX_NOTFOUND,
    EX_TEMPFAIL,
    EX_USAGE,
    _case_arg,
    _config,
    _print_json,
    _remember_config,
    _say,
    _store,
    _unix_user,
    _v,
    config_option,
    main,
    with_config,
)
from gateway.config import ConfigError, effective_settings, file_problems, warnings_for

# A backlog import commits this many messages per transaction (one fsync each), then processes them.
INGEST_CHUNK = 256
# Intake children for a directory import: this machine's two cores are the design point; the parent
# reading files and writing the inbox is the third party at the table.
INGEST_HELPERS = 2


class _Waker:
    """Stands in for the in-process worker when children do the processing: `drain` only wakes them."""

    def __init__(self, wake: Callable[[], None]) -> None:
        self.drain = wake


@main.command()
@config_option
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    default=None,
    help="Listener processes on the same addresses (SO_REUSEPORT); overrides [smtp] workers.",
)
@click.pass_context
def serve(ctx: click.Context, config_path: str | None, workers: int | None) -> None:
    """Run the listener and the workers in the foreground (systemd runs this)."""
    _remember_config(ctx, config_path)
    config = _config(ctx)
    if workers is not None:
        config = config.model_copy(update={"smtp": config.smtp.model_copy(update={"workers": workers})})
    from gateway.assembly import StoreNotReady
    from gateway.service import run_service

    for problem in file_problems(config):
        click.echo(f"abuse-gateway: configuration error: {problem}", err=True)
        ctx.exit(EX_USAGE)
    for note in warnings_for(config):
        logging.getLogger("abuse_gateway").warning("%s", note)
    # One line and an exit code for what will not get better by itself (2: the unit's
    # RestartPreventExitStatus), and 75 for a store that may come back (systemd restarts after RestartSec).
    from storage.engine import store_location

    try:
        run_service(config)
    except StoreNotReady as exc:
        click.echo(f"abuse-gateway: store {store_location(config.store.url)}: {exc}", err=True)
        ctx.exit(EX_USAGE)
    except ConfigError as exc:  # a key file refused at start (issue 15)
        click.echo(f"abuse-gateway: configuration error: {exc}", err=True)
        ctx.exit(EX_USAGE)
    except SQLAlchemyError as exc:
        where = store_location(config.store.url)
        click.echo(f"abuse-gateway: store {where} unavailable: {type(exc).__name__}", err=True)
        ctx.exit(EX_TEMPFAIL)
    except OSError as exc:
        listen = ", ".join(config.smtp.listen)
        click.echo(f"abuse-gateway: cannot start (listen {listen}): {exc.strerror or exc}", err=True)
        ctx.exit(EX_USAGE)
    except KeyboardInterrupt:
        pass


def _iter_sources(paths: tuple[str, ...]) -> Iterator[tuple[str, bytes]]:
    """Each message of each path: a file, a Maildir (cur/ and new/), or a directory of .eml files."""
    for name in paths:
        path = Path(name)
        if path.is_dir() and (path / "cur").is_dir() and (path / "new").is_dir():
            box = mailbox.Maildir(str(path), factory=None, create=False)
            for key in sorted(box.keys()):
                with box.get_file(key) as handle:
                    yield f"{name}:{key}", handle.read()
        elif path.is_dir():
            for child in sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")):
                yield str(child), child.read_bytes()
        else:
            yield str(path), path.read_bytes()


@main.command()
@config_option
@click.option(
    "--sender",
    default=None,
    help='Envelope sender for every message (an MTA pipe passes ${sender}; "" is the null sender of a '
    "bounce). Without it, each message's topmost Return-Path, else the sender is recorded as unknown.",
)
@click.option("--recipient", "recipients", multiple=True, help="Envelope recipient(s).")
@click.option(
    "--confirm/--no-confirm",
    "confirm",
    default=None,
    help="Send confirmations to the reporters (when [confirm] is enabled). Default: --confirm for stdin "
    "(live mail from an MTA pipe), --no-confirm for files, directories and Maildirs (a backlog).",
)
@click.argument("paths", nargs=-1, type=click.Path(exists=True))
@click.pass_context
def ingest(
    ctx: click.Context,
    config_path: str | None,
    sender: str | None,
    recipients: tuple[str, ...],
    confirm: bool | None,
    paths: tuple[str, ...],
) -> None:
    """Store messages without SMTP: one from stdin, or every file, Maildir or directory named.

    Prints one case ID per message (or `spooled:<uid>` when the store is down and it went to the spool).
    """
    _remember_config(ctx, config_path)
    config = _config(ctx)
    from gateway.assembly import build_intake_worker, build_spool, build_store, check_store
    from storage.errors import TransientError
    from storage.inbox import Envelope, spool_now, store_now

    spool = build_spool(config)
    rcpts = recipients or (config.intake.addresses[:1] or ("abuse@localhost",))
    from parsers.message import return_path

    # A backlog mailing hundreds of old reporters would surprise everyone; live mail from a pipe is answered.
    confirming = confirm if confirm is not None else not paths

    def envelope_for(raw: bytes) -> Envelope:
        """An unknown envelope is not the null sender: that made every imported report a bounce."""
        mail_from = sender if sender is not None else return_path(raw)
        return Envelope(mail_from, tuple(rcpts), "ingest", confirming)

    log = logging.getLogger("abuse_gateway.ingest")
    # A directory or Maildir is a backlog: intake children process it while this process reads files and
    # writes the inbox. A single message (an MTA pipe) is processed here, without starting anything.
    backlog = bool(paths) and config.intake.mode == "process"
    store: Any = None
    worker: Any = None
    from storage.engine import store_location, store_missing

    try:
        if store_missing(config.store.url):
            # Not created behind the operator's back: the mail waits in the spool until `db upgrade`.
            click.echo(
                f"abuse-gateway: no store at {store_location(config.store.url)}; spooling "
                "(create the store with `abuse-gateway db upgrade`; `serve` then stores the spool)",
                err=True,
            )
            raise FileNotFoundError(config.store.url)
        store = build_store(config)
        check_store(store.engine)
        if not backlog:
            worker = build_intake_worker(config, store)
    except Exception as exc:  # missing, unreachable or not upgraded: keep every message in the spool instead
        log.warning("store unavailable: error=%s; spooling", type(exc).__name__)
        store = None
    sources = _iter_sources(paths) if paths else iter([("-", sys.stdin.buffer.read())])
    outcomes: list[tuple[str, int | str]] = []

    def flush(raws: list[bytes]) -> None:
        if not raws:
            return
        if store is None:
            outcomes.extend(("spooled", spool_now(spool, raw, envelope_for(raw)).uid) for raw in raws)
            return
        envelopes = [envelope_for(raw) for raw in raws]
        for result in store_now(store.engine, spool, raws, envelopes, config.store.commit_budget):
            outcomes.append(
                ("spooled", result.uid) if result.inbox_id is None else ("inbox", result.inbox_id)
            )
        if worker is not None:
            worker.drain()
        raws.clear()

    try:
        with contextlib.ExitStack() as stack:
            if store is not None and backlog:
                from gateway.intake_process import helpers

                store.engine.dispose()  # no SQLite connection may cross the fork
                level = logging.getLevelName(log.getEffectiveLevel())
                worker = _Waker(stack.enter_context(helpers(config, INGEST_HELPERS, level)))
            chunk: list[bytes] = []
            for _name, raw in sources:
                chunk.append(raw)
                if len(chunk) >= INGEST_CHUNK:
                    flush(chunk)
            flush(chunk)
    except (TransientError, OSError) as exc:
        click.echo(f"abuse-gateway: store and spool unavailable: {type(exc).__name__}", err=True)
        ctx.exit(EX_TEMPFAIL)
    inbox_ids = [int(ref) for kind, ref in outcomes if kind == "inbox"]
    case_ids = store.case_ids_for_inbox(inbox_ids) if store is not None else {}
    for kind, ref in outcomes:
        click.echo(case_ids.get(int(ref), "pending") if kind == "inbox" else f"spooled:{ref}")


@main.command()
@with_config
@click.option("--failed", "mode", flag_value="failed", help="only messages that failed processing")
@click.option("--all", "mode", flag_value="all", help="every stored message")
@click.argument("case_id", required=False)
@click.pass_context
def reprocess(ctx: click.Context, mode: str | None, case_id: str | None) -> None:
    """Run stored raw messages through the parsers again, keeping case membership stable."""
    if not mode and not case_id:
        click.echo("abuse-gateway: name --failed, --all or a CASE", err=True)
        ctx.exit(EX_USAGE)
    from gateway.prepare import prepare

    store = _store(ctx)
    targets = store.messages_for_reprocess(failed_only=mode == "failed", case_id=case_id)
    done = failed = 0
    for message_pk, entry in targets:
        try:
            store.update_reprocessed(message_pk, prepare(entry))
            done += 1
        except SQLAlchemyError:
            raise
        except Exception as exc:
            failed += 1
            click.echo(f"message {message_pk}: still failing ({type(exc).__name__})", err=True)
    click.echo(f"reprocessed {done} message(s), {failed} still failing")


@main.group()
def db() -> None:
    """The case store's schema."""


@db.command("upgrade")
@with_config
@click.pass_context
def db_upgrade(ctx: click.Context) -> None:
    """Create or migrate the store to this release's schema."""
    from storage import schema
    from storage.engine import store_location

    store = _store(ctx, create=True)
    before = schema.current_revision(store.engine)
    schema.upgrade(store.engine)
    after = schema.current_revision(store.engine)
    where = store_location(_config(ctx).store.url)
    click.echo(f"store {where} at schema {after} (was {before or 'empty'})")


@main.command("check-config")
@config_option
@click.pass_context
def check_config(ctx: click.Context, config_path: str | None) -> None:
    """Validate the configuration and print the effective settings, secrets masked."""
    _remember_config(ctx, config_path)
    config = _config(ctx)
    from storage.engine import store_location

    problems = file_problems(config)
    from gateway.signing import DkimKeyError, Signer, published_key_notes

    try:
        signer = Signer.from_config(config)  # issue 22: the keys load and sign, or serve would fail
    except DkimKeyError as exc:
        problems.append(str(exc))
        signer = None
    for problem in problems:
        click.echo(f"abuse-gateway: configuration error: {problem}", err=True)
    if problems:
        ctx.exit(EX_USAGE)
    source = config.source or "built-in defaults"
    click.echo(f"# source: {source}; store: {store_location(config.store.url)}")
    _print_json(effective_settings(config))
    for note in warnings_for(config):
        click.echo(f"warning: {note}", err=True)
    for note in published_key_notes(config, signer) if signer is not None else []:
        click.echo(note, err=True)


@main.command()
@with_config
@click.option(
    "--older-than", "days", type=click.IntRange(min=1), required=True, help="days since last update"
)
@click.option("--dry-run", is_flag=True, help="say what would go and why each old case stays; remove nothing")
@click.option("--yes", is_flag=True, help="do not ask on a terminal")
@click.pass_context
def purge(ctx: click.Context, days: int, dry_run: bool, yes: bool) -> None:
    """Delete closed cases not on hold, raw bytes included. Never a case under legal hold or CSAM
    preservation (a mark or signal keeps its case at least [csam] preserve_days, 365 or more)."""
    from datetime import timedelta

    from storage.csam import purge_survivors

    store = _store(ctx)
    older = timedelta(days=days)
    if dry_run or (sys.stdin.isatty() and not yes):
        would = store.purge(older, _unix_user(), dry_run=True)
        for case_id in would:
            _say(f"would remove {case_id}")
        for case_id, why in purge_survivors(store.engine, older):
            _say(f"keeps {case_id}: {_v(why)}")
        if dry_run:
            click.echo(f"would purge {len(would)} case(s)")
            return
        if not would:
            click.echo("purged 0 case(s)")
            return
        # Removal is final and takes the raw evidence with it: a person at a terminal confirms it.
        if not click.confirm(f"Remove {len(would)} case(s) and their raw messages for good?", default=False):
            click.echo("purge cancelled; nothing removed", err=True)
            ctx.exit(EX_NOTFOUND)
    removed = store.purge(older, _unix_user())
    for case_id in removed:
        _say(f"removed {case_id}")
    click.echo(f"purged {len(removed)} case(s)")


@main.group()
def audit() -> None:
    """Who exported or removed evidence."""


@audit.command("list")
@with_config
@click.option("--case", "case_id", default=None, metavar="CASE", help="only what concerns this case")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def audit_list(ctx: click.Context, case_id: str | None, as_json: bool) -> None:
    """Who read, exported, held, merged or purged what, and when, newest first.

    With --case, every event about that case: who viewed which message and file and why (`viewed`), who
    marked or cleared it, who read its raw bytes.
    """
    if case_id is not None:
        from storage.csam_views import audit_for_case

        rows = audit_for_case(_store(ctx).engine, _case_arg(ctx, case_id))
    else:
        rows = _store(ctx).list_audit()
    if as_json:
        _print_json(rows)
        return
    for row in rows:
        why = f"  reason: {_v(row['reason'])}" if row.get("reason") else ""
        _say(f"{_v(row['at'])}  {_v(row['actor']):<12} {_v(row['action']):<8} {_v(row['target'])}{why}")
