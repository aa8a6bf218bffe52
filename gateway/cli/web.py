"""`abuse-gateway web`: the desk (issue 20), a process of its own on [web] listen, never inside `serve`."""

from __future__ import annotations

import click

from gateway.cli.common import _config, _serve_http, _store, main, with_config


@main.command("web")
@with_config
@click.pass_context
def web(ctx: click.Context) -> None:
    """Serve the web desk on [web] listen (default 127.0.0.1:8025) until SIGTERM or Ctrl-C."""
    from gateway.assembly import build_web_app

    config = _config(ctx)
    _serve_http(ctx, build_web_app(config, _store(ctx)), config.web.listen, "the desk")
