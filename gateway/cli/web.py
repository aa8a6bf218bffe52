"""`abuse-gateway web`: the desk (issue 20), a process of its own on [web] listen, never inside `serve`."""

from __future__ import annotations

import logging
import signal

import click

from gateway.cli.common import EX_USAGE, _config, _store, main, with_config


def _exit_cleanly(_sig: int, _frame: object) -> None:
    raise SystemExit(0)


@main.command("web")
@with_config
@click.pass_context
def web(ctx: click.Context) -> None:
    """Serve the web desk on [web] listen (default 127.0.0.1:8025) until SIGTERM or Ctrl-C."""
    from gateway.assembly import build_web_app
    from gateway.web.server import web_server

    config = _config(ctx)
    store = _store(ctx)
    server = web_server(config, build_web_app(config, store))
    logging.getLogger("abuse_gateway.web").info("web: the desk listens on %s", config.web.listen)
    # uvicorn drains on SIGTERM/SIGINT, then raises the signal again under the handler it found: this one
    # makes a drained desk exit 0, as systemd expects of a clean stop (and stops one still starting).
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _exit_cleanly)
    try:
        server.run()
    except OSError as exc:
        click.echo(f"abuse-gateway: cannot listen on {config.web.listen}: {exc.strerror}", err=True)
        ctx.exit(EX_USAGE)
    if not server.started:
        click.echo(f"abuse-gateway: the desk did not start on {config.web.listen}", err=True)
        ctx.exit(EX_USAGE)
