"""Issue 21: the reporters' status page, served by a real uvicorn on a free port and read over real HTTP
(and once in Chromium): exactly the allowed fields, one generic answer for every refused token, 429 past
the rate limit."""

from __future__ import annotations

import email
import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from email import policy
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from gateway.assembly import build_status_app
from gateway.config import Config
from gateway.reporter_desk import revoke_status_links, set_reporter_state
from tests.conftest import RunningGateway, Sink, free_port, load_eml

BASE = "https://status.example.org"
REPORT = load_eml("report_phishing.eml")


class Served:
    def __init__(self, app: Any) -> None:
        self.port = free_port()
        self.server = uvicorn.Server(
            # as `status-page` runs it: uvicorn's own X-Forwarded-For handling off (the app trusts proxies)
            uvicorn.Config(
                app,
                host="127.0.0.1",
                port=self.port,
                log_level="warning",
                access_log=False,
                server_header=False,
                proxy_headers=False,
            )
        )
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


@pytest.fixture
def serve_status() -> Iterator[Callable[[Config], Served]]:
    started: list[Served] = []

    def start(config: Config) -> Served:
        served = Served(build_status_app(config))
        started.append(served)
        return served

    yield start
    for served in started:
        served.stop()


def _case_with_link(
    gateway_factory, store_url: str, sink: Sink, **status: Any
) -> tuple[RunningGateway, str, str]:
    gateway = gateway_factory(
        store_url,
        confirm={"smarthost": sink.address, "require_authenticated": False},
        status={"base_url": BASE, **status},
    )
    gateway.send(REPORT)
    [(_, _, raw)] = sink.wait_for(1)
    text = email.message_from_bytes(raw, policy=policy.default).get_content()
    link = re.search(re.escape(BASE) + r"(/s/\S+)", text)
    assert link, text
    return gateway, gateway.store.list_cases()[0]["case_id"], link.group(1)


def _fields(page: bytes) -> dict[str, str]:
    return dict(re.findall(r'<dd id="([a-z-]+)">([^<]*)</dd>', page.decode()))


def test_status_page_shows_exactly_the_allowed_fields(
    gateway_factory, store_url: str, smtp_sink: Sink, serve_status
) -> None:
    gateway, case_id, path = _case_with_link(gateway_factory, store_url, smtp_sink)
    served = serve_status(gateway.service.config)
    assert served.get("/healthz")[0::2] == (200, b"ok\n")
    code, headers, page = served.get(path)
    assert code == 200
    fields = _fields(page)
    assert set(fields) == {"case", "received", "messages", "state", "state-at"}
    assert fields["case"] == case_id and fields["messages"] == "1" and fields["state"] == "received"
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC", fields["received"])
    lowered = page.decode().lower()
    for never in (
        "reporter@",
        "example.net",
        "rita",
        "phishing",
        "login-bank",
        "203.0.113",
        "s3cr3t",
        "<script",
    ):
        assert never not in lowered, never
    assert "default-src 'none'" in headers["content-security-policy"]
    # The desk sets the state; the page shows it with its date.
    set_reporter_state(gateway.service.config, gateway.store, case_id, "action-taken", actor="desk")
    assert _fields(served.get(path)[2])["state"] == "action taken"


def test_unknown_malformed_and_revoked_tokens_get_byte_identical_answers(
    gateway_factory, store_url: str, smtp_sink: Sink, serve_status
) -> None:
    gateway, case_id, path = _case_with_link(gateway_factory, store_url, smtp_sink, rate_burst=100)
    served = serve_status(gateway.service.config)
    assert served.get(path)[0] == 200
    case_part, generation, mac = path[3:].split(".")
    unknown = [
        f"/s/{case_part}.{generation}.{'a' * 16}",  # a real case, a wrong MAC
        "/s/abu-2222-2222.0.aaaaaaaaaaaaaaaa",  # a case that does not exist
        f"/s/{case_part}.{int(generation) + 1}.{mac}",  # a generation not yet given out
    ]
    malformed = [
        "/s/",
        "/s/x",
        "/s/%00%0d%0a",
        "/s/" + "a" * 500,
        f"/s/{path[3:].upper()}",
        "/s/a/b",
        "/nothing",
    ]
    revoke_status_links(gateway.store, case_id, actor="desk")
    answers = {
        (code, body, headers.get("content-type"))
        for code, headers, body in (served.get(p) for p in [path, *unknown, *malformed])
    }
    assert len(answers) == 1, answers
    [(code, _body, _ctype)] = answers
    assert code == 404


def test_past_the_rate_limit_the_page_answers_429(
    gateway_factory, store_url: str, smtp_sink: Sink, serve_status
) -> None:
    gateway, _case_id, path = _case_with_link(
        gateway_factory, store_url, smtp_sink, rate_burst=3, rate_per_minute=1
    )
    served = serve_status(gateway.service.config)
    codes = [served.get(path)[0] for _ in range(5)]
    assert codes[:3] == [200, 200, 200] and codes[3:] == [429, 429]


def test_in_chromium_no_script_runs_and_nothing_is_fetched_from_another_origin(
    gateway_factory, store_url: str, smtp_sink: Sink, serve_status
) -> None:
    playwright = pytest.importorskip("playwright.sync_api")
    if not Path("/usr/bin/chromium").exists():
        pytest.skip("no /usr/bin/chromium")
    gateway, case_id, path = _case_with_link(gateway_factory, store_url, smtp_sink)
    served = serve_status(gateway.service.config)
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True)
        try:
            page = browser.new_page()
            requests: list[str] = []
            page.on("request", lambda request: requests.append(request.url))
            response = page.goto(served.origin + path)
            assert response is not None and response.status == 200
            csp = response.headers["content-security-policy"]
            assert "default-src 'none'" in csp and "unsafe" not in csp and "script-src" not in csp
            assert page.locator("#case").inner_text() == case_id
            assert page.locator("script").count() == 0
            # A script slipped into the page (a template bug, say) would not run: the CSP forbids every one.
            page.evaluate(
                """() => { const s = document.createElement('script');
                s.textContent = "document.title = 'ran'"; document.body.appendChild(s); }"""
            )
            assert page.title() != "ran"
            assert all(url.startswith(served.origin) for url in requests), requests
            assert any(url.endswith("/static/status.css") for url in requests)
        finally:
            browser.close()


def test_status_links_survive_a_key_rotation_with_the_old_key_listed(
    gateway_factory, store_url: str, smtp_sink: Sink, serve_status, tmp_path: Path
) -> None:
    gateway, _case_id, path = _case_with_link(gateway_factory, store_url, smtp_sink)
    config = gateway.service.config
    old = config.confirm.secret_file
    new = tmp_path / "new.key"
    new.write_bytes(b"f" * 64 + b"\n")
    new.chmod(0o600)
    rotated = config.model_copy(
        update={
            "confirm": config.confirm.model_copy(update={"secret_file": str(new), "old_secret_files": (old,)})
        }
    )
    assert serve_status(rotated).get(path)[0] == 200
    dropped = rotated.model_copy(
        update={"confirm": rotated.confirm.model_copy(update={"old_secret_files": ()})}
    )
    assert serve_status(dropped).get(path)[0] == 404


def test_a_link_to_a_case_merged_since_shows_the_case_that_holds_its_messages(
    gateway_factory, store_url: str, smtp_sink: Sink, serve_status
) -> None:
    gateway, case_id, path = _case_with_link(gateway_factory, store_url, smtp_sink)
    gateway.send(REPORT.replace(b"report-1@", b"report-2@"), mail_from="second@example.com")
    smtp_sink.wait_for(2)
    gateway.wait_idle()
    [other] = [c["case_id"] for c in gateway.store.list_cases() if c["case_id"] != case_id]
    from gateway.assembly import build_casework

    build_casework(gateway.service.config).merge(case_id, other, "desk")
    fields = _fields(serve_status(gateway.service.config).get(path)[2])
    assert fields["case"] == other and fields["messages"] == "2"


def test_the_status_page_command_serves_its_own_listener_and_stops_on_sigterm(
    tmp_path: Path, sqlite_url: str
) -> None:
    import signal
    import subprocess
    import sys

    from tests.conftest import run_cli, wait_for_port

    port = free_port()
    config = tmp_path / "status.toml"
    config.write_text(
        f'[store]\nurl = "{sqlite_url}"\nspool_dir = "{tmp_path}/spool"\n'
        f'[confirm]\nsecret_file = "{tmp_path}/key"\n[status]\nlisten = "127.0.0.1:{port}"\n'
    )
    run_cli(config, "db", "upgrade")
    binary = Path(sys.executable).with_name("abuse-gateway")
    process = subprocess.Popen([str(binary), "status-page", "--config", str(config)])
    try:
        wait_for_port(port)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as response:
            assert response.read() == b"ok\n"
            assert "default-src 'none'" in response.headers["content-security-policy"]
    finally:
        process.send_signal(signal.SIGTERM)
        # uvicorn shuts down gracefully, then re-raises the signal: systemd counts SIGTERM as a clean stop.
        assert process.wait(timeout=15) in (0, -signal.SIGTERM)
