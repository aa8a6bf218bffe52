"""`abuse-gateway` (also `python -m gateway`): the contract in DESIGN.md, "Contracts users and tests rely on".

Exit codes: 0 done, 1 not found, 2 bad usage or configuration, 75 (EX_TEMPFAIL) store and spool unavailable
— what an MTA pipe transport expects, so the MTA keeps the message and retries.

Commands take their store, casework, spool and intake worker from the composition root
(gateway/assembly.py), so `ingest` and `reprocess` wire them as `serve` does; they never build one here.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import mailbox
import os
import re
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from sqlalchemy.exc import SQLAlchemyError

from gateway.config import (
    Config,
    ConfigError,
    effective_settings,
    file_problems,
    load_config,
    warnings_for,
)
from storage.search import CASE_STATUSES, MESSAGE_KINDS

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


def _store(ctx: click.Context, *, create: bool = False) -> Any:
    """The case store, opened once per command. Unless `create` (db upgrade), a store that does not exist
    or needs `db upgrade` is refused in one line (exit 2) and nothing is created (issue 17)."""
    obj = ctx.ensure_object(dict)
    if "store" in obj:
        return obj["store"]
    from gateway.assembly import StoreNotReady, build_store, check_store
    from storage.engine import store_location, store_missing

    config = _config(ctx)
    where = store_location(config.store.url)
    if not create and store_missing(config.store.url):
        click.echo(f"abuse-gateway: no store at {where}; create it with `abuse-gateway db upgrade`", err=True)
        ctx.exit(EX_USAGE)
    store = build_store(config)
    if not create:
        try:
            check_store(store.engine)
        except StoreNotReady as exc:
            click.echo(f"abuse-gateway: store {where}: {exc}", err=True)
            ctx.exit(EX_USAGE)
        except SQLAlchemyError as exc:
            click.echo(f"abuse-gateway: store {where} unavailable: {type(exc).__name__}", err=True)
            ctx.exit(EX_TEMPFAIL)
    obj["store"] = store
    return store


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
@click.version_option(package_name="abuse-gateway", prog_name="abuse-gateway")
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


_TIME_HELP = "ISO 8601 (no offset = UTC) or a duration back from now (90m, 24h, 7d)"


def _instant(ctx: click.Context, option: str, value: str | None) -> datetime | None:
    from parsers.when import InstantError, parse_instant

    if value is None:
        return None
    try:
        return parse_instant(value, datetime.now(UTC))
    except InstantError as exc:
        click.echo(f"abuse-gateway: {option}: {exc}", err=True)
        ctx.exit(EX_USAGE)


# MD5, SHA-1, SHA-256 or PDQ: 32, 40 or 64 hex digits.
_DIGEST_RE = r"[0-9a-fA-F]{32}(?:[0-9a-fA-F]{8}|[0-9a-fA-F]{32})?"


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
    host_or_value = None
    if indicator:
        from parsers.indicators import indicator_host, parse_indicator_query

        parsed = parse_indicator_query(indicator)
        if parsed is None:
            _say(f"abuse-gateway: {indicator!r} is not a URL, domain, IP or e-mail address", err=True)
            ctx.exit(EX_USAGE)
        host = indicator_host(parsed) if parsed.kind in ("domain", "ipv4", "ipv6") else None
        host_or_value = (parsed.value, host)
    if digest is not None and not re.fullmatch(_DIGEST_RE, digest.strip()):
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
    rows = found.rows
    for row in rows:  # a subject is content: of a CSAM or possible-CSAM case, only with a reason (issue 19)
        if row.get("csam") or row.get("possible_csam"):
            row["subject"], row["content_withheld"] = "[withheld: CSAM compartment]", True
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


def _case_arg(ctx: click.Context, value: str) -> str:
    """A case ID as people type and say it (`abu 18hj on15`, `ABU18HJ0N15`, `18HJ-0N15`), canonical; a typo
    is a usage error in words (exit 2), so "no case" (exit 1) always means the ID is right but unknown."""
    from parsers.case_ref import read_case_id

    case_id, problem = read_case_id(value, _config(ctx).intake.case_prefix)
    if case_id is None:
        _say(f"abuse-gateway: {value!r} is {problem}", err=True)
        ctx.exit(EX_USAGE)
    return str(case_id)


def _short_address(address: str | None) -> str:
    return _v(address) if address else "-"


_REASON_HELP = "why you need to see it (required on a CSAM or possible-CSAM case; audited)"


def _reason_text(ctx: click.Context, reason: str | None) -> str | None:
    """A reason as given, or None; an empty or blank one is no reason at all (exit 2)."""
    if reason is None:
        return None
    if not reason.strip():
        _say("abuse-gateway: --reason needs words: who asked, what for", err=True)
        ctx.exit(EX_USAGE)
    return reason.strip()[:2000]


def _compartment_gate(ctx: click.Context, case_id: str, reason: str | None, what: str) -> bool:
    """True when the case is in the CSAM compartment (so the view is recorded as `viewed`). Refuses (exit 2)
    a view of such a case without a reason; exit 1 for an unknown case (issue 19, point 5)."""
    from storage.csam_views import in_compartment

    marked = in_compartment(_store(ctx).engine, case_id)
    if marked is None:
        _say(f"abuse-gateway: no case {case_id}", err=True)
        ctx.exit(EX_NOTFOUND)
    if marked and reason is None:
        _say(
            f"abuse-gateway: {case_id} is marked CSAM or possible CSAM: {what} needs --reason TEXT "
            "(recorded with your name); `cases show --metadata` needs none",
            err=True,
        )
        ctx.exit(EX_USAGE)
    return bool(marked)


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
    for event in view.get("events", []):
        _say(f"Event {_v(event['at'])}: {_v(event['kind'])} {_v(event['detail'])}")


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


@cases.command("close")
@with_config
@click.argument("case_id")
@click.pass_context
def cases_close(ctx: click.Context, case_id: str) -> None:
    """Close a case (a later message reopens it)."""
    case_id = _case_arg(ctx, case_id)
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
    case_id = _case_arg(ctx, case_id)
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
    case_id = _case_arg(ctx, case_id)
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
    case_id = _case_arg(ctx, case_id)
    if not _store(ctx).set_hold(case_id, False, _unix_user()):
        _say(f"abuse-gateway: no case {case_id}", err=True)
        ctx.exit(EX_NOTFOUND)
    _say(f"{case_id.upper()} released")


@cases.command("csam")
@with_config
@click.argument("case_id")
@click.option("--reason", required=True, metavar="TEXT", help="why (recorded with your name)")
@click.option("--clear", is_flag=True, help="unmark: clear the CSAM mark and every possible-CSAM signal")
@click.pass_context
def cases_csam(ctx: click.Context, case_id: str, reason: str, clear: bool) -> None:
    """Mark a case as child sexual abuse material (or, with --clear, unmark it); audited with who and why.

    A mark preserves the case [csam] preserve_days (at least 365) from now, and its content is then shown
    only with --reason. --clear ends the preservation of possible-CSAM signals; a confirmed mark's year
    stands even when cleared.
    """
    from datetime import timedelta

    from storage.csam import CsamError, clear_marks, mark

    case_id = _case_arg(ctx, case_id)
    why = _reason_text(ctx, reason) or ""
    engine = _store(ctx).engine
    try:
        if clear:
            result = clear_marks(engine, case_id, _unix_user(), why)
        else:
            preserve = timedelta(days=_config(ctx).csam.preserve_days)
            result = mark(engine, case_id, _unix_user(), why, preserve)
    except CsamError as exc:
        _say(f"abuse-gateway: {exc}", err=True)
        ctx.exit(EX_NOTFOUND if str(exc).startswith("no ") else EX_USAGE)
    until = result.preserve_until
    held = f"preserved until {until.isoformat()}" if until else "not preserved"
    where = f" (the messages of {case_id} are in {result.case_id})" if result.case_id != case_id else ""
    if clear:
        _say(f"{result.case_id} cleared ({result.cleared} mark(s)); {held}{where}")
    else:
        _say(f"{result.case_id} marked CSAM; {held}{where}")


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


def _casework(ctx: click.Context) -> Any:
    from gateway.assembly import build_casework

    return build_casework(_config(ctx))


def _case_move(ctx: click.Context, action: Callable[[Any], Any]) -> Any:
    """Run one merge/split operation; a refusal is a usage error in words, never a traceback."""
    from storage.casework import CaseWorkError

    try:
        return action(_casework(ctx))
    except CaseWorkError as exc:
        click.echo(f"abuse-gateway: {exc}", err=True)
        ctx.exit(EX_NOTFOUND if str(exc).startswith("no ") else EX_USAGE)


def _reindex(ctx: click.Context, case_id: str) -> None:
    """Index the indicators of a case that received messages by a split: they are derived from the
    messages, so they are derived again (the raw bytes are read, never changed)."""
    from gateway.prepare import prepare

    store = _store(ctx)
    for message_pk, entry in store.messages_for_reprocess(failed_only=False, case_id=case_id):
        with contextlib.suppress(Exception):
            store.update_reprocessed(message_pk, prepare(entry))


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
        _say(
            f"{row['id']:>6}  {_v(row['case_id'])}  {_v(row['kind']):<15} {_v(row['state']):<10} "
            f"attempts={row['attempts']}  {_v(row['last_error'] or row['suppressed_reason'] or '')}"
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
    for problem in problems:
        click.echo(f"abuse-gateway: configuration error: {problem}", err=True)
    if problems:
        ctx.exit(EX_USAGE)
    source = config.source or "built-in defaults"
    click.echo(f"# source: {source}; store: {store_location(config.store.url)}")
    _print_json(effective_settings(config))
    for note in warnings_for(config):
        click.echo(f"warning: {note}", err=True)


if __name__ == "__main__":
    main()
