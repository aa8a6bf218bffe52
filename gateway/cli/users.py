"""The desk's people from the command line (issue 20): `users add | list | passwd | disable | enable | role`.

Why the CLI holds this: the first admin must exist before anyone can log in to the desk, and a locked-out
desk is repaired from a shell. Passwords never appear on a command line (they would sit in `ps` and shell
history): they come from a hidden prompt typed twice, or the first line of `--password-file`. The acting
Unix user is the audit trail's actor, as for every other change made from the CLI.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import click

from gateway.cli.common import (
    EX_NOTFOUND,
    EX_USAGE,
    _print_json,
    _refused,
    _say,
    _store,
    _unix_user,
    _v,
    main,
    with_config,
)
from storage.search import iso
from storage.users import ROLES, UserError, Users, valid_name

_NAME_RULE = "1-64 characters of A-Z a-z 0-9 . _ @ -"
_PASSWORD_FILE = click.option(
    "--password-file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="read the password from the first line of this file (default: prompt twice, hidden)",
)


@main.group()
def users() -> None:
    """People who may log in to the web desk, and their roles."""


def _name(ctx: click.Context, name: str) -> str:
    if not valid_name(name):
        _say(f"abuse-gateway: user name {_v(name)!r} refused: {_NAME_RULE}", err=True)
        ctx.exit(EX_USAGE)
    return name


def _new_password_hash(ctx: click.Context, password_file: Path | None) -> str:
    from gateway.passwords import hash_password, password_problem

    if password_file is not None:
        try:
            lines = password_file.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            click.echo(f"abuse-gateway: --password-file: {type(exc).__name__}", err=True)
            ctx.exit(EX_USAGE)
        password = lines[0] if lines else ""
    else:
        password = click.prompt(
            "Password", hide_input=True, confirmation_prompt=True, default="", show_default=False
        )
    problem = password_problem(password)
    if problem:
        click.echo(f"abuse-gateway: {problem}; nothing changed", err=True)
        ctx.exit(EX_USAGE)
    return hash_password(password)


def _change(ctx: click.Context, change: Callable[[Users, str], None], done: str) -> None:
    """Every command that changes a user: the store's refusal becomes the exit code (not found or usage),
    the acting Unix user is the audit trail's actor, and `done` is said only once the change holds."""
    try:
        change(_store(ctx).users, _unix_user())
    except UserError as exc:
        _refused(ctx, _v(str(exc)))
    _say(done)


@users.command("add")
@with_config
@click.argument("name")
@click.option("--role", type=click.Choice(ROLES), required=True)
@_PASSWORD_FILE
@click.option(
    "--sso-only",
    is_flag=True,
    help="no password: only the single-sign-on proxy ([web] trusted_user_header) can log this user in",
)
@click.pass_context
def users_add(ctx: click.Context, name: str, role: str, password_file: Path | None, sso_only: bool) -> None:
    """Add a desk user NAME with a role and a password."""
    name = _name(ctx, name)
    store = _store(ctx)
    if store.users.get(name) is not None:
        _say(f"abuse-gateway: user {name!r} exists", err=True)
        ctx.exit(EX_USAGE)
    if sso_only and password_file is not None:
        click.echo("abuse-gateway: --sso-only takes no --password-file", err=True)
        ctx.exit(EX_USAGE)
    password_hash = None if sso_only else _new_password_hash(ctx, password_file)
    _change(
        ctx,
        lambda users, actor: users.add(name, role, password_hash, actor=actor),
        f"user {name} added ({role})",
    )


@users.command("list")
@with_config
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def users_list(ctx: click.Context, as_json: bool) -> None:
    """Every desk user: name, role, disabled, created, last login (never a password hash)."""
    rows = [
        {
            "name": user.name,
            "role": user.role,
            "disabled": user.disabled,
            "password": user.password_hash is not None,  # False: only the SSO proxy can log this user in
            "created_at": iso(user.created_at),
            "last_login_at": iso(user.last_login_at),
        }
        for user in _store(ctx).users.list()
    ]
    if as_json:
        _print_json(rows)
        return
    for row in rows:
        state = "disabled" if row["disabled"] else "enabled"
        _say(
            f"{_v(row['name']):<24} {_v(row['role']):<8} {state:<8} created {row['created_at']}  "
            f"last login {row['last_login_at'] or 'never'}"
        )


@users.command("passwd")
@with_config
@click.argument("name")
@_PASSWORD_FILE
@click.pass_context
def users_passwd(ctx: click.Context, name: str, password_file: Path | None) -> None:
    """Set NAME's password; every session of NAME ends."""
    name = _name(ctx, name)
    store = _store(ctx)
    if store.users.get(name) is None:
        _say(f"abuse-gateway: no user {name!r}", err=True)
        ctx.exit(EX_NOTFOUND)
    password_hash = _new_password_hash(ctx, password_file)
    _change(
        ctx,
        lambda users, actor: users.set_password(name, password_hash, actor=actor),
        f"password of {name} changed; its sessions ended",
    )


@users.command("disable")
@with_config
@click.argument("name")
@click.pass_context
def users_disable(ctx: click.Context, name: str) -> None:
    """Disable NAME: no login, every session ends (the user stays in the audit trail)."""
    name = _name(ctx, name)
    _change(
        ctx,
        lambda users, actor: users.disable(name, actor=actor),
        f"user {name} disabled; its sessions ended",
    )


@users.command("enable")
@with_config
@click.argument("name")
@click.pass_context
def users_enable(ctx: click.Context, name: str) -> None:
    """Enable NAME again."""
    name = _name(ctx, name)
    _change(ctx, lambda users, actor: users.enable(name, actor=actor), f"user {name} enabled")


@users.command("role")
@with_config
@click.argument("name")
@click.argument("role", type=click.Choice(ROLES))
@click.pass_context
def users_role(ctx: click.Context, name: str, role: str) -> None:
    """Give NAME another role (takes effect on NAME's next request)."""
    name = _name(ctx, name)
    _change(ctx, lambda users, actor: users.set_role(name, role, actor=actor), f"user {name} is now {role}")
