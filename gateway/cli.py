"""`abuse-gateway` (also `python -m gateway`): the contract in DESIGN.md, "Contracts users and tests rely on".

Exit codes: 0 done, 1 not found, 2 bad usage or configuration, 75 (EX_TEMPFAIL) store and spool unavailable
— what an MTA pipe transport expects, so the MTA keeps the message and retries.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import mailbox
import os
import sys
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import click
from sqlalchemy.exc import SQLAlchemyError

from gateway.config import Config, ConfigError, effective_settings, load_config, warnings_for

EX_OK, EX_NOTFOUND, EX_USAGE, EX_TEMPFAIL = 0, 1, 2, 75
# A backlog import commits this many messages per transaction (one fsync each), then processes them.
INGEST_CHUNK = 256
# Intake children for a directory import: this machine's two cores are the design point; the parent
# reading files and writing the inbox is the third party at the table.
INGEST_HELPERS = 2


class _Waker:
    """Stands in for the in-process worker when children do the processing: `drain` only wakes them."""

    def __init__(self, wake: Callable[[], None]) -> None:
        self.drain = wake


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level, logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("mail.log").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)


def _config(ctx: click.Context) -> Config:
    obj = ctx.ensure_object(dict)
    if "config" not in obj:
        try:
            obj["config"] = load_config(obj.get("config_path"))
        except ConfigError as exc:
            click.echo(f"abuse-gateway: configuration error: {exc}", err=True)
            ctx.exit(EX_USAGE)
        _setup_logging(obj["config"].log.level)
    return obj["config"]


def _store(ctx: click.Context) -> Any:
    from gateway.service import build_store

    return build_store(_config(ctx))


config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="TOML config file (default: $ABUSE_GATEWAY_CONFIG, then /etc/abuse-gateway/gateway.toml).",
    expose_value=True,
)


def _remember_config(ctx: click.Context, config_path: str | None) -> None:
    if config_path:
        ctx.ensure_object(dict)["config_path"] = config_path


def with_config(command: Callable[..., Any]) -> Callable[..., Any]:
    """`--config F` after the subcommand as well as before it (`abuse-gateway cases list --config F`)."""

    @config_option
    @functools.wraps(command)
    def wrapper(*args: Any, config_path: str | None = None, **kwargs: Any) -> Any:
        _remember_config(click.get_current_context(), config_path)
        return command(*args, **kwargs)

    return wrapper


@click.group()
@config_option
@click.pass_context
def main(ctx: click.Context, config_path: str | None) -> None:
    """The mail gateway behind abuse@: every report kept, a case for each, replies threaded."""
    _remember_config(ctx, config_path)


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
    from gateway.service import StoreNotReady, run_service

    for note in warnings_for(config):
        logging.getLogger("abuse_gateway").warning("%s", note)
    try:
        run_service(config)
    except StoreNotReady as exc:
        click.echo(f"abuse-gateway: {exc}", err=True)
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
@click.option("--sender", default="", help="Envelope sender (an MTA pipe passes ${sender}).")
@click.option("--recipient", "recipients", multiple=True, help="Envelope recipient(s).")
@click.argument("paths", nargs=-1, type=click.Path(exists=True))
@click.pass_context
def ingest(
    ctx: click.Context,
    config_path: str | None,
    sender: str,
    recipients: tuple[str, ...],
    paths: tuple[str, ...],
) -> None:
    """Store messages without SMTP: one from stdin, or every file, Maildir or directory named.

    Prints one case ID per message (or `spooled:<uid>` when the store is down and it went to the spool).
    """
    _remember_config(ctx, config_path)
    config = _config(ctx)
    from gateway.intake import IntakeWorker
    from gateway.service import build_store, build_threader, check_store
    from storage.errors import TransientError
    from storage.inbox import Envelope, Spool, spool_now, store_now

    spool = Spool(config.store.spool_dir)
    rcpts = recipients or (config.intake.addresses[:1] or ("abuse@localhost",))
    envelope = Envelope(sender, tuple(rcpts), "ingest")
    log = logging.getLogger("abuse_gateway.ingest")
    # A directory or Maildir is a backlog: intake children process it while this process reads files and
    # writes the inbox. A single message (an MTA pipe) is processed here, without starting anything.
    backlog = bool(paths) and config.intake.mode == "process"
    store: Any = None
    worker: Any = None
    try:
        store = build_store(config)
        check_store(store.engine)
        if not backlog:
            worker = IntakeWorker(config, store, build_threader(config))
    except Exception as exc:  # unreachable or not upgraded: keep every message in the spool instead
        log.warning("store unavailable: error=%s; spooling", type(exc).__name__)
        store = None
    sources = _iter_sources(paths) if paths else iter([("-", sys.stdin.buffer.read())])
    outcomes: list[tuple[str, int | str]] = []

    def flush(raws: list[bytes]) -> None:
        if not raws:
            return
        if store is None:
            outcomes.extend(("spooled", spool_now(spool, raw, envelope).uid) for raw in raws)
            return
        for result in store_now(store.engine, spool, raws, envelope, config.store.commit_budget):
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


@main.group()
def cases() -> None:
    """Read and manage cases."""


# Characters JSON leaves raw but line-oriented readers (Python's splitlines, some log shippers) treat as
# line breaks; a hostile message must not be able to split one exported case into two lines.
_LINE_BREAKERS = str.maketrans({"\u0085": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"})


def _json_line(value: Any) -> str:
    from parsers.display import json_safe

    return json_safe(json.dumps(value, ensure_ascii=False, default=str).translate(_LINE_BREAKERS))


def _print_json(value: Any) -> None:
    from parsers.display import json_safe

    click.echo(json_safe(json.dumps(value, ensure_ascii=False, indent=2, default=str)))


def _v(value: Any, multiline: bool = False) -> str:
    """A stored value as a person may see it: the one display layer (defanged, terminal-safe)."""
    from parsers.display import for_display

    if value is None:
        return ""
    return for_display(value if isinstance(value, str) else json.dumps(value, ensure_ascii=False), multiline)


def _say(line: str, err: bool = False) -> None:
    """Every human-readable line goes out here: whatever slipped past `_v` still cannot reach a terminal as
    control bytes (tabs and the line feed click adds are the only ones kept)."""
    from parsers.display import terminal_safe

    click.echo("\n".join(terminal_safe(part) for part in line.split("\n")), err=err)


@cases.command("list")
@with_config
@click.option("--status", default=None, help="open or closed")
@click.option("--indicator", default=None, help="URL, domain, IP or e-mail address (defanged is fine)")
@click.option("--limit", default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def cases_list(
    ctx: click.Context, status: str | None, indicator: str | None, limit: int, as_json: bool
) -> None:
    """List cases, newest first."""
    store = _store(ctx)
    query = None
    if indicator:
        from parsers.indicators import indicator_host, parse_indicator_query

        parsed = parse_indicator_query(indicator)
        if parsed is None:
            _say(f"abuse-gateway: {indicator!r} is not a URL, domain, IP or e-mail address", err=True)
            ctx.exit(EX_USAGE)
        query = (parsed.value, indicator_host(parsed) if parsed.kind in ("domain", "ipv4", "ipv6") else None)
    rows = store.list_cases(status=status, host_or_value=query, limit=limit)
    if as_json:
        _print_json(rows)
        return
    for row in rows:
        _say(
            f"{_v(row['case_id'])}  {_v(row['status']):<6}  {row['messages']:>3} msg  "
            f"{_v(row['created_at'][:19])}  {_short_address(row['reporter'])}  {_v(row['subject'])}"
        )


def _short_address(address: str | None) -> str:
    return _v(address) if address else "-"


@cases.command("show")
@with_config
@click.argument("case_id")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def cases_show(ctx: click.Context, case_id: str, as_json: bool) -> None:
    """One case with its messages (escaped text), attachments, indicators and flags."""
    view = _store(ctx).show_case(case_id)
    if view is None:
        _say(f"abuse-gateway: no case {case_id}", err=True)
        ctx.exit(EX_NOTFOUND)
    if as_json:
        _print_json(view)
        return
    _say(f"Case {_v(view['case_id'])}  [{_v(view['status'])}]  reporter: {_v(view['reporter']) or '-'}")
    _say(f"Opened {_v(view['created_at'])}  updated {_v(view['updated_at'])}")
    if view["flags"]:
        _say(f"Flags: {', '.join(_v(flag) for flag in view['flags'])}")
    for message in view["messages"]:
        _say("")
        _say(
            f"--- #{message['index']} {_v(message['kind'])} ({_v(message['kind_rule'])}) "
            f"via {_v(message['thread_signal'])}  {_v(message['received_at'])}"
        )
        _say(f"From: {_v(message['sender']) or '<>'}")
        if message.get("message_id"):
            _say(f"Message-ID: {_v(message['message_id'])}")
        _say(f"Subject: {_v(message['subject'])}")
        if message["flags"]:
            _say(f"Flags: {', '.join(_v(flag) for flag in message['flags'])}")
        if message["defects"]:
            _say(f"Defects: {', '.join(_v(defect) for defect in message['defects'])}")
        for attachment in message["attachments"]:
            _say(
                f"Attachment: {_v(attachment['filename']) or '(unnamed)'} {_v(attachment['content_type'])} "
                f"{attachment['size']} bytes sha256 {_v(attachment['sha256'])}"
            )
        if message.get("report"):
            report = message["report"]
            _say(
                f"Report: {_v(report['format'])} category={_v(report['category'])} "
                f"source={_v(report['source_ip'])}"
            )
            for key, value in report["fields"].items():
                _say(f"  {_v(key)}: {_v(value)}")
        _say("")
        click.echo(_v(message["text"], multiline=True))
    if view["indicators"]:
        _say("")
        _say("Indicators:")
        for indicator in view["indicators"]:
            _say(f"  {_v(indicator['kind']):<6} {_v(indicator['value'])}")
    for event in view.get("events", []):
        _say(f"Event {_v(event['at'])}: {_v(event['kind'])} {_v(event['detail'])}")


@cases.command("raw")
@with_config
@click.argument("case_id")
@click.argument("index", type=int)
@click.option("--force", is_flag=True, help="write to a terminal anyway (the raw bytes may drive it)")
@click.pass_context
def cases_raw(ctx: click.Context, case_id: str, index: int, force: bool) -> None:
    """Write message INDEX's original bytes to stdout (evidence export): redirect it to a file or a pipe."""
    if sys.stdout.isatty() and not force:
        # The original bytes are the sender's, escape sequences included: on a terminal they would repaint
        # the screen, set titles or write the clipboard. Evidence goes to a file; --force for the brave.
        _say("abuse-gateway: cases raw writes the sender's bytes; redirect it or pass --force", err=True)
        ctx.exit(EX_USAGE)
    raw = _store(ctx).raw_message(case_id, index)
    if raw is None:
        _say(f"abuse-gateway: no message {index} in case {case_id}", err=True)
        ctx.exit(EX_NOTFOUND)
    _store(ctx).audit(_unix_user(), "raw", f"{case_id.upper()} {index}")
    out = sys.stdout.buffer
    out.write(raw)
    out.flush()


@cases.command("export")
@with_config
@click.option("--since", default=None, help="ISO date or datetime: cases updated since then")
@click.pass_context
def cases_export(ctx: click.Context, since: str | None) -> None:
    """Every case as one JSON object per line, the shape of `cases show --json`."""
    since_at = None
    if since:
        try:
            since_at = datetime.fromisoformat(since)
        except ValueError:
            _say(f"abuse-gateway: --since {since!r} is not an ISO date", err=True)
            ctx.exit(EX_USAGE)
        if since_at.tzinfo is None:
            from datetime import UTC

            since_at = since_at.replace(tzinfo=UTC)
    store = _store(ctx)
    store.audit(_unix_user(), "export", f"since {since_at.isoformat()}" if since_at else "all")
    for view in store.export_cases(since_at):
        click.echo(_json_line(view))


@cases.command("close")
@with_config
@click.argument("case_id")
@click.pass_context
def cases_close(ctx: click.Context, case_id: str) -> None:
    """Close a case (a later message reopens it)."""
    if not _store(ctx).set_status(case_id, "closed", f"by {_unix_user()}"):
        _say(f"abuse-gateway: no case {case_id}", err=True)
        ctx.exit(EX_NOTFOUND)
    _say(f"{case_id.upper()} closed")


@cases.command("reopen")
@with_config
@click.argument("case_id")
@click.pass_context
def cases_reopen(ctx: click.Context, case_id: str) -> None:
    """Reopen a closed case."""
    if not _store(ctx).set_status(case_id, "open", f"by {_unix_user()}"):
        _say(f"abuse-gateway: no case {case_id}", err=True)
        ctx.exit(EX_NOTFOUND)
    _say(f"{case_id.upper()} open")


def _unix_user() -> str:
    import pwd

    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return str(os.getuid())


@cases.command("hold")
@with_config
@click.argument("case_id")
@click.pass_context
def cases_hold(ctx: click.Context, case_id: str) -> None:
    """Put a case on legal hold: `purge` never removes it."""
    if not _store(ctx).set_hold(case_id, True, _unix_user()):
        _say(f"abuse-gateway: no case {case_id}", err=True)
        ctx.exit(EX_NOTFOUND)
    _say(f"{case_id.upper()} on hold")


@cases.command("release")
@with_config
@click.argument("case_id")
@click.pass_context
def cases_release(ctx: click.Context, case_id: str) -> None:
    """Release a case from hold."""
    if not _store(ctx).set_hold(case_id, False, _unix_user()):
        _say(f"abuse-gateway: no case {case_id}", err=True)
        ctx.exit(EX_NOTFOUND)
    _say(f"{case_id.upper()} released")


@main.command()
@with_config
@click.option(
    "--older-than", "days", type=click.IntRange(min=1), required=True, help="days since last update"
)
@click.pass_context
def purge(ctx: click.Context, days: int) -> None:
    """Delete closed cases not on hold, raw bytes included (CSAM cases are kept at least 365 days)."""
    from datetime import timedelta

    removed = _store(ctx).purge(timedelta(days=days), _unix_user())
    for case_id in removed:
        _say(f"removed {case_id}")
    click.echo(f"purged {len(removed)} case(s)")


@main.group()
def audit() -> None:
    """Who exported or removed evidence."""


@audit.command("list")
@with_config
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def audit_list(ctx: click.Context, as_json: bool) -> None:
    rows = _store(ctx).list_audit()
    if as_json:
        _print_json(rows)
        return
    for row in rows:
        _say(f"{_v(row['at'])}  {_v(row['actor']):<12} {_v(row['action']):<8} {_v(row['target'])}")


@main.group()
def outbox() -> None:
    """Confirmations and their delivery state."""


@outbox.command("list")
@with_config
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def outbox_list(ctx: click.Context, as_json: bool) -> None:
    rows = _store(ctx).list_outbox()
    if as_json:
        _print_json(rows)
        return
    for row in rows:
        _say(
            f"{row['id']:>6}  {_v(row['case_id'])}  {_v(row['kind']):<15} {_v(row['state']):<10} "
            f"attempts={row['attempts']}  {_v(row['last_error'] or row['suppressed_reason'] or '')}"
        )


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
    from gateway.intake import prepare

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

    store = _store(ctx)
    before = schema.current_revision(store.engine)
    schema.upgrade(store.engine)
    after = schema.current_revision(store.engine)
    click.echo(f"store at schema {after} (was {before or 'empty'})")


@main.command("check-config")
@config_option
@click.pass_context
def check_config(ctx: click.Context, config_path: str | None) -> None:
    """Validate the configuration and print the effective settings, secrets masked."""
    _remember_config(ctx, config_path)
    config = _config(ctx)
    click.echo(f"# source: {config.source or 'built-in defaults'}")
    _print_json(effective_settings(config))
    for note in warnings_for(config):
        click.echo(f"warning: {note}", err=True)


if __name__ == "__main__":
    main()
