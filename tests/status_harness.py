"""The reporters' status page on a real uvicorn for the tests (issue 21), served as `status-page` serves it:
through gateway/http_server.py, the one builder of our HTTP faces, so uvicorn's own proxy-header handling is
off and what the app does with X-Forwarded-For is what the tests see. The `serve_status` fixture
(tests/conftest.py) starts these and stops them after the test."""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
from typing import Any

from gateway.http_server import asgi_server
from tests.conftest import free_port


class Served:
    def __init__(self, app: Any) -> None:
        self.port = free_port()
        self.server = asgi_server(app, "127.0.0.1:0", port=self.port)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get(self, path: str) -> tuple[int, dict[str, str], bytes]:
        try:
            with urllib.request.urlopen(self.origin + path, timeout=10) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as error:
            return error.code, dict(error.headers), error.read()

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
