"""`python -m bench.desk_http --url STORE [--queries K]`: the desk's pages rendered over HTTP on a big store.

Issue 20 asks that the queue and a search *render* in under 300 ms (p95) on the benchmark's 1,000,000-message
store. `bench.desk` times the storage queries; this times what a person waits for: the real app
(`gateway.assembly.build_web_app`) on uvicorn in this process, a signed-in analyst, one HTTP round trip per
page through the session, CSRF and role gate, the store's query, Jinja2 with the display layer on every
value. Build the store with `python -m bench.desk --db PATH` (it keeps it), upgrade it (`db upgrade`; done
here too), then point `--url` at it. Measured with `bench.desk.measure` (p50/p95/max after one warm-up).
"""

from __future__ import annotations

import argparse
import http.cookiejar
import json
import random
import re
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from bench.desk import Shape, measure, table

USER = "bench-analyst"
PASSWORD = "bench-analyst-password"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class Browser:
    """A cookie-keeping client that does not follow redirects (a case-ID search answers 303)."""

    def __init__(self, base: str) -> None:
        self.base = base
        jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar), _NoRedirect())

    def get(self, path: str) -> tuple[int, str, str]:
        return self._open(urllib.request.Request(self.base + path))

    def post(self, path: str, fields: dict[str, str]) -> tuple[int, str, str]:
        data = urllib.parse.urlencode(fields).encode()
        return self._open(urllib.request.Request(self.base + path, data=data))

    def _open(self, request: urllib.request.Request) -> tuple[int, str, str]:
        try:
            with self.opener.open(request, timeout=60) as answer:
                return answer.status, answer.headers.get("location", ""), answer.read().decode()
        except urllib.error.HTTPError as err:
            return err.code, err.headers.get("location", ""), err.read().decode()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_desk(url: str) -> tuple[str, Any, threading.Thread]:
    from gateway.assembly import build_store, build_web_app
    from gateway.config import Config, StoreConfig
    from gateway.passwords import hash_password
    from gateway.web.server import web_server
    from storage import schema
    from storage.engine import make_engine

    engine = make_engine(url)
    schema.upgrade(engine)
    engine.dispose()
    config = Config(store=StoreConfig(url=url))
    store = build_store(config)
    if store.users.get(USER) is None:
        store.users.add(USER, "analyst", hash_password(PASSWORD))
    port = _free_port()
    server = web_server(config, build_web_app(config, store), host="127.0.0.1", port=port)
    thread = threading.Thread(target=server.run, name="desk", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the desk did not start")
        time.sleep(0.05)
    return f"http://127.0.0.1:{port}", server, thread


def sign_in(base: str) -> Browser:
    browser = Browser(base)
    _, _, page = browser.get("/login")
    token = re.search(r'name="csrf" value="([^"]+)"', page)
    assert token, "no CSRF field on /login"
    status, _, _ = browser.post("/login", {"username": USER, "password": PASSWORD, "csrf": token.group(1)})
    assert status == 303, f"login answered {status}"
    return browser


def shapes(browser: Browser, n: int, queries: int) -> dict[str, Shape]:
    """The pages a desk opens most: the queue (first, filtered, deep by its next links) and each search."""
    rng = random.Random(7)
    picks = [rng.randrange(0, n // 4) * 4 for _ in range(max(queries, 1))]

    def ok(path: str, want: tuple[int, ...] = (200,)) -> str:
        status, location, body = browser.get(path)
        assert status in want, f"{path} answered {status}"
        return location or body

    def next_link(body: str) -> str:
        found = re.search(r'<a href="([^"]+)" rel="next">', body)
        assert found, "no next page"
        return found.group(1).replace("&amp;", "&")

    path = "/"
    for _ in range(99):  # page 100, reached by the "Next page" links as a person would
        path = next_link(ok(path))
    page_100 = path
    case_id = re.search(r'href="/cases/([A-Z0-9-]+)"', ok("/"))
    assert case_id

    def search(q: str, want: tuple[int, ...] = (200,)) -> str:
        return ok("/search?" + urllib.parse.urlencode({"q": q}), want)

    found = {
        "GET / (queue page 1)": lambda _: ok("/"),
        "GET /?status=open": lambda _: ok("/?status=open"),
        "GET / page 100 (next links)": lambda _: ok(page_100),
        "GET /?assignee=analyst3": lambda _: ok("/?assignee=analyst3"),
        "GET /?flag=csam": lambda _: ok("/?flag=csam"),
        "GET /?flag=processing_failed": lambda _: ok("/?flag=processing_failed"),
        "search full text": lambda i: search(f"login-{picks[i % len(picks)]}.bad.example"),
        "search indicator (domain)": lambda i: search(f"bad{picks[i % len(picks)] % 977}.example"),
        "search reporter": lambda i: search(f"reporter{picks[i % len(picks)] % 997}@reporter.example.net"),
        # 303 to the case; PostgreSQL's generated IDs carry no check digits, so there it is a listing
        "search case ID": lambda _: search(case_id.group(1).lower(), (200, 303)),
        "GET /cases/ID (case page)": lambda _: ok(f"/cases/{case_id.group(1)}"),
    }
    if browser.get(f"/cases/{case_id.group(1)}")[0] == 404:
        # bench.desk's PostgreSQL fill numbers its cases without check digits: no desk can open them
        del found["GET /cases/ID (case page)"]
    return found


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.desk_http", description=__doc__)
    parser.add_argument("--url", required=True, help="the store (sqlite:///PATH or postgresql+psycopg://…)")
    parser.add_argument("--messages", type=int, default=1_000_000, metavar="N", help="what the store holds")
    parser.add_argument("--queries", type=int, default=40, metavar="K")
    parser.add_argument("--json", default=None, metavar="FILE", help="also write the figures here")
    args = parser.parse_args()
    base, server, thread = start_desk(args.url)
    try:
        results = measure(shapes(sign_in(base), args.messages, args.queries), args.queries)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    print(table(results))
    if args.json:
        Path(args.json).write_text(json.dumps({"messages": args.messages, "results": results}, indent=2))


if __name__ == "__main__":
    main()
