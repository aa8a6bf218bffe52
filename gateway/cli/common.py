"""What every `abuse-gateway` command shares, in one module the command modules import (and nothing of
theirs imports back, so the package has no import cycle): the exit codes, the `main` and `cases` groups the
commands hang on, `--config` before or after the subcommand, the config and the store opened once per
command, the one output layer (`_v`, `_say`, JSON lines), times and case IDs as people type them, and who
is acting (for the audit).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import click
from sqlalchemy.exc import SQLAlchemyError

from gateway.config import Config, ConfigError, load_config

EX_OK, EX_NOTFOUND, EX_USAGE, EX_TEMPFAIL = 0, 1, 2, 75


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


def _refused(ctx: click.Context, message: str) -> None:
    """A store's refusal, in words on stderr and as the exit code: every store error starting with "no "
    means not found (exit 1), any other refusal is a usage error (exit 2), never a traceback."""
    _say(f"abuse-gateway: {message}", err=True)
    ctx.exit(EX_NOTFOUND if message.startswith("no ") else EX_USAGE)


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


def _case_arg(ctx: click.Context, value: str) -> str:
    """A case ID as people type and say it (`abu 18hj on15`, `ABU18HJ0N15`, `18HJ-0N15`), canonical; a typo
    is a usage error in words (exit 2), so "no case" (exit 1) always means the ID is right but unknown."""
    from parsers.case_ref import read_case_id

    case_id, problem = read_case_id(value, _config(ctx).intake.case_prefix)
    if case_id is None:
        _say(f"abuse-gateway: {value!r} is {problem}", err=True)
        ctx.exit(EX_USAGE)
    return str(case_id)


def _unix_user() -> str:
    import pwd

    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return str(os.getuid())
