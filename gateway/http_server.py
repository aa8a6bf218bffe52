"""The one way our HTTP faces are served: uvicorn, for the desk (`web`) and the status page (`status-page`).

Both face people a hostile message may try to reach, so both run with the same settings:
- uvicorn's own proxy-header handling off: it would rewrite the client address from X-Forwarded-For for any
  peer it trusts by default (127.0.0.1), and the desk's SSO rule and the status page's rate limit are about
  the real peer; each app reads forwarded headers itself, and only from its own `trusted_proxies`;
- no access log: desk paths name case IDs and search words, a status URL is a credential; our own log lines
  name outcomes;
- our logging configuration, no server header, no lifespan (neither app has start-up work), short keep-alive.
"""

from __future__ import annotations

from typing import Any

import uvicorn


def asgi_server(app: Any, listen: str, host: str | None = None, port: int | None = None) -> uvicorn.Server:
    """A server for `app` on `listen` (host:port); `host`/`port` override it (tests, the benchmark)."""
    listen_host, _, listen_port = listen.rpartition(":")
    return uvicorn.Server(
        uvicorn.Config(
            app,
            host=host or listen_host.strip("[]") or "127.0.0.1",
            port=int(listen_port) if port is None else port,
            proxy_headers=False,
            server_header=False,
            date_header=True,
            access_log=False,
            log_config=None,
            lifespan="off",
            timeout_keep_alive=5,
        )
    )
