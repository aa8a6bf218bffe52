"""Logs (issue 7): what a report contains never reaches a log line, and every decision about a message
leaves exactly one line that names it without its content."""

from __future__ import annotations

import logging
import re
import smtplib
import socket
import time
import uuid

import pytest

from tests.conftest import RunningGateway


def _lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    handler = caplog.handler
    lines = []
    for record in caplog.records:
        lines.append(f"{record.name} {record.levelname} {handler.format(record)}")
    return lines


@pytest.fixture
def secrets() -> dict[str, str]:
    tag = uuid.uuid4().hex
    return {
        "password": f"pw-{tag}-Tr0ub4dor",
        "subject": f"subject-{tag}-urgent",
        "host": f"host-{tag}.phish.example",
        "sender": f"unique-reporter-{tag}@example.net",
        "local": f"unique-reporter-{tag}",
    }


def _report(s: dict[str, str]) -> bytes:
    return (
        f"From: Reporter <{s['sender']}>\r\nTo: abuse@example.org\r\nSubject: {s['subject']}\r\n"
        f"Message-ID: <{uuid.uuid4().hex}@example.net>\r\n\r\n"
        f"The phish at https://{s['host']}/login?user={s['sender']} took my password.\r\n"
        f"Password: {s['password']}\r\n"
    ).encode()


def test_no_report_content_in_any_log_line_and_one_line_per_decision(
    gateway_factory, store_url: str, caplog: pytest.LogCaptureFixture, secrets: dict[str, str]
) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, every level (mail.log stays where the product puts it)
    gateway: RunningGateway = gateway_factory(
        store_url, smtp={"max_message_bytes": 20_000, "max_sessions": 3, "max_sessions_per_ip": 3}
    )
    raws = [_report(secrets), _report(secrets).replace(b"took my", b"also took my")]
    for raw in raws:
        assert gateway.send(raw, mail_from=secrets["sender"])[0] == 250
    gateway.wait_idle()
    gateway.wait_outbox(lambda rows: rows and all(r["state"] in ("sent", "suppressed") for r in rows))

    # Refusals: unknown recipient, too big, too many connections.
    with smtplib.SMTP("127.0.0.1", gateway.port, timeout=10) as client:
        client.ehlo("client.test")
        client.mail(secrets["sender"])
        assert client.rcpt(f"{secrets['local']}@example.org")[0] == 550
        client.rset()
        client.mail(secrets["sender"])
        client.rcpt("abuse@example.org")
        assert client.data(_report(secrets) + b"x" * 30_000 + b"\r\n")[0] == 552
    held = [socket.create_connection(("127.0.0.1", gateway.port)) for _ in range(3)]
    try:
        for sock in held:
            assert sock.recv(512).startswith(b"220")
        with socket.create_connection(("127.0.0.1", gateway.port)) as extra:
            assert extra.recv(512).startswith(b"421")
    finally:
        for sock in held:
            sock.close()
    time.sleep(0.2)

    lines = _lines(caplog)
    assert lines
    for value in secrets.values():
        leaked = [line for line in lines if value.lower() in line.lower()]
        assert not leaked, f"{value!r} logged: {leaked}"
    # Nor the envelope address in any spelling, nor the report's host in its escaped form.
    assert not [line for line in lines if "unique-reporter" in line]
    assert not [line for line in lines if secrets["host"].replace(".", "[.]") in line]

    accepted = [m for line in lines if (m := re.search(r"accepted: inbox_id=(\d+) .*size=(\d+)", line))]
    assert sorted(int(m.group(2)) for m in accepted) == sorted(len(r) for r in raws)
    assert len({m.group(1) for m in accepted}) == len(raws)
    stored = [m for line in lines if (m := re.search(r"stored: inbox_id=(\d+) case_id=(\S+)", line))]
    assert {m.group(1) for m in stored} == {m.group(1) for m in accepted} and len(stored) == len(raws)
    assert all(re.fullmatch(r"ABU-[0-9A-Z]{4}-[0-9A-Z]{4}", m.group(2)) for m in stored)
    refused = [line for line in lines if "refused:" in line]
    for reason in ("unknown_recipient", "too_big", "too_many_connections"):
        hits = [line for line in refused if f"reason={reason}" in line]
        assert len(hits) == 1, (reason, refused)
        assert "client=127.0.0.1" in hits[0]
