"""The desk under test: a real uvicorn server on a free 127.0.0.1 port, in a thread, on a real SQLite
store filled by real SMTP through the gateway's own listener; and a small HTTP client (urllib, no
redirects followed, cookies kept) that speaks to it as a browser would."""

from __future__ import annotations

import http.cookiejar
import re
import shutil
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from email.message import Message
from pathlib import Path
from typing import Any

from gateway.assembly import build_store, build_web_app
from gateway.config import Config
from gateway.passwords import hash_password
from gateway.web.server import web_server
from tests.conftest import PG_URL, free_port, load_eml, make_config, reset_postgres, start_gateway

PASSWORD = "correct horse battery"
CHROMIUM = "/usr/bin/chromium"
ROLES = ("support", "analyst", "csam", "admin")

HOSTILE = (
    b'From: "<b>x</b>" <evil@bad.example>\r\n'
    b"To: abuse@example.org\r\n"
    b"Subject: =?utf-8?q?=3Cscript=3Ealert(1)=3C/script=3E_hi?=\r\n"
    b"Message-ID: <hostile-1@bad.example>\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n\r\n"
    b'"><img src=x onerror=alert(2)> <script>alert(3)</script>\r\n'
    b"visit https://phish.bad.example/login?x=1 now\r\n"
    b"bidi \xe2\x80\xae gnp.exe and ESC \x1b[2J\r\n"
)


@dataclass
class Desk:
    base: str
    server: Any
    thread: threading.Thread
    cases: dict[str, str] = field(default_factory=dict)  # label -> case ID
    store: Any = None

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def start_server(config: Config, store: Any) -> tuple[str, Any, threading.Thread]:
    port = free_port()
    server = web_server(config, build_web_app(config, store), host="127.0.0.1", port=port)
    thread = threading.Thread(target=server.run, name="desk", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the desk did not start")
        time.sleep(0.02)
    return f"http://127.0.0.1:{port}", server, thread


def filled_store(tmp: Path, store_url: str | None = None, **web: Any) -> tuple[Config, dict[str, str]]:
    """Mail in through SMTP: a plain report, a report with a PDF, a hostile one, and one marked CSAM."""
    from storage.csam import mark

    config = make_config(tmp, store_url or f"sqlite:///{tmp}/cases.db", web=web)
    gateway = start_gateway(config)
    try:
        for raw in (load_eml("person_plain_report.eml"), load_eml("parse_attachment_pdf.eml"), HOSTILE):
            code, _ = gateway.send(raw)
            assert code == 250
        csam_raw = load_eml("person_plain_report.eml").replace(b"SSH brute force", b"compartment test")
        csam_raw = csam_raw.replace(b"<5d1e-alice@", b"<csam-1@")
        assert gateway.send(csam_raw, mail_from="other@example.net")[0] == 250
        gateway.wait_idle()
    finally:
        gateway.stop()
    store = build_store(config)
    cases: dict[str, str] = {}
    for row in store.desk.queue(limit=50).rows:
        if "compartment" in row.subject:
            cases["csam"] = row.case_id
        elif "evidence" in row.subject:
            cases["pdf"] = row.case_id
        elif "SSH" in row.subject:
            cases["plain"] = row.case_id
        else:
            cases["hostile"] = row.case_id
    assert len(cases) == 4, cases
    mark(store.engine, cases["csam"], "test", "confirmed in the test", timedelta(days=365))
    for role in ROLES:
        store.users.add(role, role, hash_password(PASSWORD))
    store.users.add("gone", "analyst", hash_password(PASSWORD))
    store.users.disable("gone")
    store.engine.dispose()
    return config, cases


def backend_url(backend: str, tmp: Path) -> str:
    """The store for a module's desk: a SQLite file, or the PostgreSQL named by ABUSE_GATEWAY_TEST_PG."""
    import pytest

    if backend == "sqlite":
        return f"sqlite:///{tmp}/cases.db"
    if not PG_URL:
        pytest.skip("ABUSE_GATEWAY_TEST_PG is not set")
    reset_postgres(PG_URL)
    return PG_URL


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


@dataclass
class Answer:
    status: int
    headers: Message
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


class Client:
    def __init__(self, base: str) -> None:
        self.base = base
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar), _NoRedirect())

    def request(
        self, path: str, data: dict[str, str] | None = None, headers: dict[str, str] | None = None
    ) -> Answer:
        body = urllib.parse.urlencode(data).encode() if data is not None else None
        req = urllib.request.Request(self.base + path, data=body, headers=headers or {})
        try:
            with self.opener.open(req, timeout=30) as resp:
                return Answer(resp.status, resp.headers, resp.read())
        except urllib.error.HTTPError as err:
            return Answer(err.code, err.headers, err.read())

    def get(self, path: str, **headers: str) -> Answer:
        return self.request(path, headers=headers)

    def post(self, path: str, data: dict[str, str], **headers: str) -> Answer:
        return self.request(path, data=data, headers=headers)

    def csrf(self, path: str = "/") -> str:
        found = re.search(r'name="csrf" value="([^"]+)"', self.get(path).text)
        assert found, "no CSRF field on " + path
        return found.group(1)

    def login(self, name: str, password: str = PASSWORD, **headers: str) -> Answer:
        token = self.csrf("/login")
        return self.post("/login", {"username": name, "password": password, "csrf": token}, **headers)


def client_as(base: str, role: str) -> Client:
    client = Client(base)
    answer = client.login(role)
    assert answer.status == 303, answer.text
    return client


def launch_chromium() -> Iterator[Any]:
    """Debian's Chromium driven by Playwright, headless (never `playwright install`), for a module-scoped
    `browser` fixture to yield from; skips where either is missing."""
    import pytest

    if shutil.which(CHROMIUM) is None:
        pytest.skip("Debian's chromium is not installed")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield chromium
        chromium.close()


def sign_in_page(page: Any, base: str, role: str) -> None:
    """Log a Playwright page in through the desk's own form, as a person would (user `role`, PASSWORD),
    and wait for the landing page."""
    page.goto(base + "/login")
    page.fill("input[name=username]", role)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(base + "/")
