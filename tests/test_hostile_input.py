"""Hostile input on the SMTP path (issue 7): smuggling probes, bytes no sane MUA sends, forged gateway
headers. Everything that gets a 250 is stored with its exact bytes and becomes a case.

The pure parsers already have their arbitrary-input properties (test_message_parse.py, test_escape.py,
test_case_ref.py); what is added here is the intake's whole pure stage (`prepare`) and text as the parsers
really produce it from bytes (lone surrogates from surrogateescape, which `st.text()` never generates).
"""

from __future__ import annotations

import hashlib
import socket
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from gateway.data import STREAM_LIMIT
from gateway.prepare import prepare
from parsers.case_ref import find_case_ids, find_case_ids_in_body
from parsers.escape import escape_text
from storage.records import ClaimedEntry
from tests.conftest import RunningGateway, load_eml

# ---- a raw SMTP client: the bytes on the wire are exactly the test's ---------------------------------------


def read_reply(sock: socket.socket, timeout: float = 30.0) -> bytes:
    sock.settimeout(timeout)
    buf = b""
    while True:
        lines = buf.split(b"\r\n")
        if len(lines) > 1 and len(lines[-2]) >= 4 and lines[-2][3:4] == b" ":
            return buf
        chunk = sock.recv(65536)
        if not chunk:
            return buf
        buf += chunk


def read_all(sock: socket.socket, timeout: float = 5.0) -> bytes:
    sock.settimeout(timeout)
    buf = b""
    try:
        while chunk := sock.recv(65536):
            buf += chunk
    except TimeoutError:
        pass
    return buf


def dot_stuff(raw: bytes) -> bytes:
    """RFC 5321 §4.5.2 transparency exactly as the receiver undoes it (lines end at CRLF only)."""
    stuffed = raw.replace(b"\r\n.", b"\r\n..")
    return b"." + stuffed if stuffed.startswith(b".") else stuffed


def open_data(port: int, mail_from: str = "reporter@example.net") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    assert read_reply(sock).startswith(b"220")
    for command in (b"EHLO client.test", f"MAIL FROM:<{mail_from}>".encode(), b"RCPT TO:<abuse@example.org>"):
        sock.sendall(command + b"\r\n")
        assert read_reply(sock).startswith(b"250"), command
    sock.sendall(b"DATA\r\n")
    assert read_reply(sock).startswith(b"354")
    return sock


def send_exact(port: int, raw: bytes) -> tuple[bytes, str | None]:
    """Send `raw` (which must end in CRLF) as one message; the reply and the queue uid from it."""
    assert raw.endswith(b"\r\n")
    sock = open_data(port)
    try:
        sock.sendall(dot_stuff(raw) + b".\r\n")
        reply = read_reply(sock, timeout=120)
        sock.sendall(b"QUIT\r\n")
    finally:
        sock.close()
    uid = reply.split(b"queued as ")[-1].strip().decode() if b"queued as" in reply else None
    return reply, uid


def inbox_raws(gateway: RunningGateway) -> list[bytes]:
    with gateway.store.engine.connect() as conn:
        return [bytes(r[0]) for r in conn.execute(text("SELECT raw FROM inbox ORDER BY id"))]


def only_case(gateway: RunningGateway) -> dict[str, Any]:
    cases = list(gateway.store.export_cases())
    assert len(cases) == 1, [c["case_id"] for c in cases]
    return cases[0]


def sha(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


# ---- SMTP smuggling ---------------------------------------------------------------------------------------

SMUGGLED = (
    b"MAIL FROM:<smuggler@evil.example>\r\n"
    b"RCPT TO:<abuse@example.org>\r\n"
    b"DATA\r\n"
    b"From: ceo@example.org\r\nSubject: SMUGGLED-PAYLOAD\r\n\r\nsmuggled body\r\n"
)


@pytest.mark.parametrize(
    "fake_end",
    [b"\n.\n", b"\r.\n", b"\n.\r\n", b"\r\n.\n", b"\r\n.\r", b"\r.\r\n"],
    ids=["LF.LF", "CR.LF", "LF.CRLF", "CRLF.LF", "CRLF.CR", "CR.CRLF"],
)
def test_smuggling_probe_yields_exactly_one_message(gateway: RunningGateway, fake_end: bytes) -> None:
    body = (
        b"From: reporter@example.net\r\nTo: abuse@example.org\r\nSubject: probe\r\n\r\nbefore the fake end"
        + fake_end
        + SMUGGLED
    )
    sock = open_data(gateway.port)
    try:
        sock.sendall(body + b"\r\n.\r\n")
        first = read_reply(sock)
        sock.sendall(b"QUIT\r\n")
        rest = read_all(sock)
    finally:
        sock.close()
    replies = first + rest
    assert first.startswith(b"250 2.0.0"), replies
    assert replies.count(b"queued as") == 1, replies  # a second 250 would be a second, smuggled message
    gateway.wait_idle()
    [raw] = inbox_raws(gateway)
    assert b"SMUGGLED-PAYLOAD" in raw and b"MAIL FROM:<smuggler@evil.example>" in raw
    case = only_case(gateway)
    assert len(case["messages"]) == 1 and case["messages"][0]["sender"] == "reporter@example.net"


# ---- bytes no sane MUA sends: stored exactly, processed into a case ----------------------------------------


def _folded_header(lines: int) -> bytes:
    return (
        b"From: folder@example.net\r\nTo: abuse@example.org\r\nSubject: folded\r\nX-Folded: start\r\n"
        + b" fold\r\n" * lines
        + b"\r\nbody after a very long header\r\n"
    )


def _one_line_body(size: int) -> bytes:
    return (
        b"From: long@example.net\r\nTo: abuse@example.org\r\nSubject: one line\r\n\r\n"
        + b"A" * size
        + b"\r\n"
    )


HOSTILE = [
    pytest.param(lambda: load_eml("hostile_nul.eml"), id="nul-bytes"),
    pytest.param(lambda: load_eml("hostile_bare_eol.eml"), id="bare-cr-lf"),
    pytest.param(lambda: load_eml("hostile_8bit_headers.eml"), id="8bit-headers-no-charset"),
    pytest.param(lambda: _folded_header(100_000), id="header-100k-folded-lines"),
    pytest.param(lambda: _one_line_body(10 * 1024 * 1024), id="10MB-single-line"),
]


@pytest.mark.parametrize("make", HOSTILE)
def test_hostile_bytes_get_250_and_are_stored_exactly(gateway_factory, store_url: str, make) -> None:
    raw = make()
    gateway = gateway_factory(store_url, smtp={"max_message_bytes": 12 * 1024 * 1024})
    reply, _uid = send_exact(gateway.port, raw)
    assert reply.startswith(b"250 2.0.0"), reply
    [stored] = inbox_raws(gateway)
    assert sha(stored) == sha(raw)
    gateway.wait_idle(timeout=60)
    case = only_case(gateway)
    [message] = case["messages"]
    assert message["sha256"] == sha(raw)
    assert gateway.store.raw_message(case["case_id"], 1) == raw
    assert "processing_failed" not in message["flags"], message["defects"]


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(body=st.binary(max_size=3000))
def test_arbitrary_bytes_over_smtp_are_stored_exactly(gateway: RunningGateway, body: bytes) -> None:
    raw = b"Subject: fuzz\r\n\r\n" + body + b"\r\n"
    reply, uid = send_exact(gateway.port, raw)
    assert reply.startswith(b"250"), reply
    with gateway.store.engine.connect() as conn:
        stored = conn.execute(text("SELECT raw FROM inbox WHERE intake_uid = :u"), {"u": uid}).scalar()
    assert bytes(stored) == raw


# ---- the whole pure stage, and text as parsers really make it ----------------------------------------------


@settings(max_examples=150, deadline=None)
@given(raw=st.binary(max_size=3000), mail_from=st.text(max_size=60))
def test_prepare_never_raises_on_arbitrary_bytes(raw: bytes, mail_from: str) -> None:
    entry = ClaimedEntry(1, raw, mail_from, ("abuse@example.org",), datetime.now(UTC), sha(raw), 1)
    prepared = prepare(entry)
    assert prepared.entry is entry


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2000).map(lambda b: b.decode("utf-8", "surrogateescape")))
def test_text_with_lone_surrogates_never_raises(value: str) -> None:
    escape_text(value)
    find_case_ids(value)
    find_case_ids_in_body(value)


# ---- headers that imitate ours -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [
        pytest.param("X-Abuse-Gateway-Loop: 0123456789abcdef0123456789abcdef", id="loop"),
        pytest.param("X-Abuse-Gateway-Anything: trusted=yes", id="anything"),
    ],
)
def test_inbound_gateway_headers_are_flagged_and_get_no_confirmation(
    gateway: RunningGateway, header: str
) -> None:
    raw = (
        f"From: someone@example.net\r\nTo: abuse@example.org\r\nSubject: imitation\r\n{header}\r\n"
        f"Message-ID: <{uuid.uuid4().hex}@example.net>\r\n\r\nphish at http://imitation.example/\r\n"
    ).encode()
    assert gateway.send(raw, mail_from="someone@example.net")[0] == 250
    gateway.wait_idle()
    case = only_case(gateway)
    assert "untrusted_gateway_headers" in case["messages"][0]["flags"]
    rows = gateway.store.list_outbox()
    assert [r["state"] for r in rows] == ["suppressed"], rows


# ---- envelope bytes the stores cannot hold as text ---------------------------------------------------------


# A NUL sender is now refused at MAIL FROM (553 5.1.7, tests/test_hostile_confirm.py, issue 15).
@pytest.mark.parametrize("sender", [b"\xff\xfe@example.net"], ids=["non-utf8"])
def test_hostile_envelope_sender_is_stored_and_does_not_stall_intake(
    gateway_factory, store_url: str, sender: bytes
) -> None:
    """aiosmtpd hands `MAIL FROM:<\\xff...>` on as a lone surrogate: the inbox writer died on it (every
    later client hung); a NUL sender is refused by PostgreSQL text, and its spool file never replayed."""
    gateway = gateway_factory(store_url, store={"commit_budget": 1.5})
    raw = b"From: x@example.net\r\nSubject: hostile envelope\r\n\r\nbody\r\n"
    sock = socket.create_connection(("127.0.0.1", gateway.port), timeout=15)
    try:
        assert read_reply(sock).startswith(b"220")
        for command in (b"EHLO client.test", b"MAIL FROM:<" + sender + b">", b"RCPT TO:<abuse@example.org>"):
            sock.sendall(command + b"\r\n")
            assert read_reply(sock).startswith(b"250"), command
        sock.sendall(b"DATA\r\n")
        assert read_reply(sock).startswith(b"354")
        sock.sendall(raw + b".\r\n")
        assert read_reply(sock, timeout=15).startswith(b"250 2.0.0")
    finally:
        sock.close()
    after = b"From: y@example.net\r\nSubject: the next report\r\n\r\nbody\r\n"
    assert gateway.send(after)[0] == 250
    gateway.wait_idle(timeout=30)
    by_digest = {m["sha256"]: m for case in gateway.store.export_cases() for m in case["messages"]}
    assert set(by_digest) == {sha(raw), sha(after)}
    assert by_digest[sha(raw)]["sender"].endswith("@example.net")  # kept, with the odd bytes escaped


# ---- DATA read in 64 KB pieces (gateway/data.py): line breaks and dots at the piece boundaries ------------


@pytest.mark.parametrize("offset", [-2, -1, 0, 1, 2])
def test_line_break_and_dot_at_the_stream_limit_are_kept_exactly(
    gateway: RunningGateway, offset: int
) -> None:
    # A line just around the 64 KB read limit: its CRLF may arrive split across two reads. The next line
    # starts with a dot (stuffed on the wire, one dot stored); a dot inside the long line is content.
    head = b"From: reporter@example.net\r\nSubject: long line\r\n\r\n"
    long_line = b"x" * (STREAM_LIMIT + offset - len(head) - 40) + b".not-a-line-start" + b"y" * 20
    raw = head + long_line + b"\r\n.leading dot line\r\n..two dots\r\nend\r\n"
    reply, _ = send_exact(gateway.port, raw)
    assert reply.startswith(b"250 2.0.0"), reply
    gateway.wait_idle()
    assert inbox_raws(gateway) == [raw]


def test_a_message_over_the_size_limit_gets_552_after_its_dot_and_the_session_goes_on(
    gateway_factory, sqlite_url
):
    gateway = gateway_factory(sqlite_url, smtp={"max_message_bytes": 200_000})
    sock = open_data(gateway.port)
    try:
        sock.sendall(b"Subject: big\r\n\r\n" + (b"z" * 998 + b"\r\n") * 300 + b".\r\n")
        assert read_reply(sock).startswith(b"552 5.3.4"), "over the limit"
        for command in (b"MAIL FROM:<reporter@example.net>", b"RCPT TO:<abuse@example.org>", b"DATA"):
            sock.sendall(command + b"\r\n")
            assert read_reply(sock)[:3] in (b"250", b"354"), command
        sock.sendall(b"Subject: small\r\n\r\nfits\r\n.\r\n")
        assert read_reply(sock).startswith(b"250 2.0.0")
    finally:
        sock.close()
    gateway.wait_idle()
    assert inbox_raws(gateway) == [b"Subject: small\r\n\r\nfits\r\n"]
