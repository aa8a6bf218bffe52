"""Attacks on the reporters' status page (issue 21), over real HTTP to a real uvicorn: the page must be no
oracle (one answer for every refused token, a purged case's included), carry its security headers on every
answer it makes (errors, 405, 429, the stylesheet), and not let a client dodge its rate limit by writing
X-Forwarded-For itself.
"""

from __future__ import annotations

import email
import http.client
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from email import policy

import pytest
import uvicorn

from gateway.assembly import build_status_app
from gateway.config import Config
from gateway.http_security import SECURITY_HEADERS
from gateway.reporter_desk import queue_reply
from tests.conftest import RunningGateway, Sink, free_port
from tests.test_status_page import REPORT, _case_with_link


class Served:
    """The status app under uvicorn as `abuse-gateway status-page` runs it (gateway/cli/reporter.py): no
    proxy headers, no server header. uvicorn's default would trust X-Forwarded-For from 127.0.0.1, which
    is every test client, and hide what the app itself does with it."""

    def __init__(self, config: Config) -> None:
        self.port = free_port()
        self.server = uvicorn.Server(
            uvicorn.Config(
                build_status_app(config),
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


@pytest.fixture
def serve_status() -> Iterator[Callable[[Config], Served]]:
    started: list[Served] = []

    def start(config: Config) -> Served:
        started.append(Served(config))
        return started[-1]

    yield start
    for served in started:
        served.server.should_exit = True
        served.thread.join(timeout=10)


def _request(
    served: Served, method: str, path: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", served.port, timeout=10)
    try:
        connection.request(method, path, headers=headers or {})
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


def _assert_secured(headers: dict[str, str]) -> None:
    for name, value in SECURITY_HEADERS:
        assert headers.get(name.decode()) == value.decode(), name


def test_every_answer_of_the_status_page_carries_the_security_headers(
    gateway_factory: Callable[..., RunningGateway],
    sqlite_url: str,
    smtp_sink: Sink,
    serve_status: Callable[[Config], Served],
) -> None:
    gateway, _case_id, path = _case_with_link(gateway_factory, sqlite_url, smtp_sink, rate_burst=2)
    served = serve_status(gateway.service.config)
    seen = {}
    for method, target in [
        ("GET", path),
        ("HEAD", path),
        ("GET", path + "?" + "q" * 4000),
        ("GET", "/s/" + "a" * 4000),
        ("POST", path),
        ("OPTIONS", path),
        ("DELETE", "/s/x"),
        ("GET", "/static/status.css"),
        ("GET", "/static/../../etc/passwd"),
        ("GET", "/healthz"),
        ("GET", path),  # past the burst of 2: 429
    ]:
        code, headers, body = _request(served, method, target)
        _assert_secured(headers)
        seen[(method, target[:40])] = code
        if method == "HEAD":
            assert body == b""
    assert 429 in seen.values()
    assert seen[("POST", path[:40])] == 405 and seen[("OPTIONS", path[:40])] == 405


def test_x_forwarded_for_from_an_untrusted_peer_does_not_dodge_the_rate_limit(
    gateway_factory: Callable[..., RunningGateway],
    sqlite_url: str,
    smtp_sink: Sink,
    serve_status: Callable[[Config], Served],
) -> None:
    gateway, _case_id, path = _case_with_link(
        gateway_factory, sqlite_url, smtp_sink, rate_burst=3, rate_per_minute=1
    )
    served = serve_status(gateway.service.config)
    codes = [
        _request(served, "GET", path, {"X-Forwarded-For": f"198.51.100.{i}", "X-Real-IP": f"203.0.113.{i}"})[
            0
        ]
        for i in range(5)
    ]
    assert codes == [200, 200, 200, 429, 429]


def test_a_trusted_proxys_forwarded_for_counts_its_last_hop_not_the_clients_own_entries(
    gateway_factory: Callable[..., RunningGateway],
    sqlite_url: str,
    smtp_sink: Sink,
    serve_status: Callable[[Config], Served],
) -> None:
    """Behind a proxy that appends the peer it saw, the client may still write entries before it."""
    gateway, _case_id, path = _case_with_link(
        gateway_factory, sqlite_url, smtp_sink, rate_burst=2, rate_per_minute=1, trusted_proxies=["127.0.0.1"]
    )
    served = serve_status(gateway.service.config)
    codes = [
        _request(served, "GET", path, {"X-Forwarded-For": f"10.9.9.{i}, 192.0.2.7"})[0] for i in range(4)
    ]
    assert codes == [200, 200, 429, 429]


def test_a_link_to_a_purged_case_gets_the_generic_page(
    gateway_factory: Callable[..., RunningGateway],
    sqlite_url: str,
    smtp_sink: Sink,
    serve_status: Callable[[Config], Served],
) -> None:
    gateway, case_id, path = _case_with_link(gateway_factory, sqlite_url, smtp_sink, rate_burst=50)
    served = serve_status(gateway.service.config)
    generic = _request(served, "GET", "/s/abu-2222-2222.0.aaaaaaaaaaaaaaaa")
    assert _request(served, "GET", path)[0] == 200
    assert gateway.store.set_status(case_id, "closed", "test")
    assert gateway.store.purge(timedelta(0), actor="test") == [case_id]
    code, headers, body = _request(served, "GET", path)
    assert (code, body, headers.get("content-type")) == (
        generic[0],
        generic[2],
        generic[1].get("content-type"),
    )


# ---- outbound mail: no byte of a report or of a typed subject may become a header ----------------------

_OUR_HEADERS = {
    "from",
    "to",
    "subject",
    "date",
    "message-id",
    "in-reply-to",
    "references",
    "reply-to",
    "auto-submitted",
    "x-auto-response-suppress",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
    "dkim-signature",
}


def _header_names(raw: bytes) -> set[str]:
    head = raw.split(b"\r\n\r\n", 1)[0].decode("ascii")
    assert all(len(line) <= 998 for line in head.split("\r\n"))
    return {line.split(":", 1)[0].lower() for line in head.split("\r\n") if line and line[0] not in " \t"}


@pytest.mark.parametrize(
    "language",
    [
        "de,\r\n Bcc: victim@evil.example",
        "x-" + "a" * 10_000,
        "../../../../etc/passwd",
        "de-\u00e4\u00f6; Bcc: victim@evil.example",
    ],
    ids=["folded-bcc", "10k", "path", "non-ascii"],
)
def test_a_hostile_content_language_never_reaches_the_confirmation(
    gateway_factory: Callable[..., RunningGateway], sqlite_url: str, smtp_sink: Sink, language: str
) -> None:
    head, _, body = REPORT.partition(b"\r\n\r\n")
    raw = head + b"\r\nContent-Language: " + language.encode() + b"\r\n\r\n" + body
    gateway = gateway_factory(
        sqlite_url, confirm={"smarthost": smtp_sink.address, "require_authenticated": False}
    )
    assert gateway.send(raw)[0] == 250
    [(_, rcpts, sent)] = smtp_sink.wait_for(1)
    assert rcpts == ["reporter@example.net"]
    names = _header_names(sent)
    assert names <= _OUR_HEADERS | {"x-abuse-gateway-loop"}, names
    assert b"evil" not in sent and b"passwd" not in sent and b"aaaaaaaaaa" not in sent


def test_a_desk_subject_with_line_breaks_and_non_ascii_stays_one_encoded_subject(
    gateway_factory: Callable[..., RunningGateway], sqlite_url: str, smtp_sink: Sink
) -> None:
    gateway = gateway_factory(
        sqlite_url, confirm={"smarthost": smtp_sink.address, "require_authenticated": False}
    )
    gateway.send(REPORT)
    smtp_sink.wait_for(1)
    case_id = gateway.store.list_cases()[0]["case_id"]
    subject = (
        "Subject: Ihr Bericht \u00fcber\rBcc: victim@evil.example\u2028X-Evil: 1\u0085Cc: b@evil.example\x0b"
        + "\u00e9" * 3000
    )
    queue_reply(gateway.service.config, gateway.store, case_id, actor="desk", text=subject + "\n\nHallo\n")
    _, rcpts, sent = smtp_sink.wait_for(2)[1]
    assert rcpts == ["reporter@example.net"]
    names = _header_names(sent)
    assert names <= _OUR_HEADERS | {"x-abuse-gateway-loop"}, names
    parsed = email.message_from_bytes(sent, policy=policy.default)
    assert parsed["Subject"].startswith(f"[{case_id}] Ihr Bericht \u00fcber Bcc: victim@evil.example X-Evil")
    assert "\n" not in parsed["Subject"] and "\r" not in parsed["Subject"]
    assert len(parsed["Subject"]) <= 220
    assert sent.isascii()
