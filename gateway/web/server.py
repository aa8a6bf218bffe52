"""The desk's HTTP server: uvicorn on [web] listen, with uvicorn's own proxy-header handling off.

Why off: uvicorn would rewrite the client address from X-Forwarded-For for any peer it trusts by default
(127.0.0.1), and the desk's SSO rule is about the real peer. gateway/web/auth.py reads the forwarded
headers itself, and only from [web] trusted_proxies.
"""

from __future__ import annotations

from typing import Any

import uvicorn

from gateway.config import Config


def web_server(config: Config, app: Any, host: str | None = None, port: int | None = None) -> uvicorn.Server:
    listen_host, _, listen_port = config.web.listen.rpartition(":")
    return uvicorn.Server(
        uvicorn.Config(
            app,
            host=host or listen_host.strip("[]") or "127.0.0.1",
            port=int(listen_port) if port is None else port,
            proxy_headers=False,
            server_header=False,
            date_header=True,
            access_log=False,  # paths name case IDs and search words; our own log lines name outcomes
            log_config=None,
            lifespan="off",
            timeout_keep_alive=5,
        )
    )
