"""`dkim keygen`: a DKIM signing key for [dkim] (issue 22), written 0600, and the TXT record to publish.

Rotation: make a key under a new selector, publish its record, switch [dkim] selector/key_file to it, and
leave the old record published a few days so mail signed before the switch still verifies.
"""

from __future__ import annotations

import re
from pathlib import Path

import click

from gateway.cli.common import EX_USAGE, _config, main, with_config


@main.group()
def dkim() -> None:
    """DKIM signing keys for outbound mail."""


@dkim.command("keygen")
@with_config
@click.option("--selector", required=True, help="the selector the record is published under")
@click.option("--algorithm", type=click.Choice(["rsa", "ed25519"]), default="rsa", show_default=True)
@click.option(
    "--out",
    "out",
    type=click.Path(dir_okay=False),
    default=None,
    help="key file (default: var/dkim-SELECTOR.key)",
)
@click.option("--domain", default=None, help="signing domain (default: [dkim] domain, else [confirm] from's)")
@click.pass_context
def keygen(ctx: click.Context, selector: str, algorithm: str, out: str | None, domain: str | None) -> None:
    """Write a new private key (mode 0600, never over an existing file) and print its DNS TXT record."""
    from gateway.signing import generate_key, signing_domain, txt_record, write_key

    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}", selector):
        click.echo(f"abuse-gateway: {selector!r} is not a selector (letters, digits, . _ -)", err=True)
        ctx.exit(EX_USAGE)
    domain = (domain or signing_domain(_config(ctx))).lower()
    path = Path(out or f"var/dkim-{selector}.key")
    content, value = generate_key(algorithm)
    try:
        write_key(path, content)
    except FileExistsError:
        click.echo(f"abuse-gateway: {path} exists; a key is never overwritten (choose --out)", err=True)
        ctx.exit(EX_USAGE)
    except OSError as exc:
        click.echo(f"abuse-gateway: cannot write {path}: {exc.strerror}", err=True)
        ctx.exit(EX_USAGE)
    key = "ed25519_key_file" if algorithm == "ed25519" else "key_file"
    sel = "ed25519_selector" if algorithm == "ed25519" else "selector"
    click.echo(
        f'; private key written to {path} (0600); in [dkim]: {sel} = "{selector}", {key} = "{path}"', err=True
    )
    click.echo(txt_record(selector, domain, value))
