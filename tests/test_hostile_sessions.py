"""Sessions (issue 15, point 8): the idle limit counts from the last command that moves the transaction,
per-client limits group IPv6 by /64, and idle sessions from a few clients cannot lock out another."""

from __future__ import annotations

import smtplib
import socket
import time

import pytest

from gateway.smtp import client_key


def _raw_session(port: int, source: str) -> tuple[socket.socket, bytes]:
    """A connected client bound to `source` (all of 127/8 is loopback on Linux) and the first reply."""
    client = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))
    return client, client.makefile("rb").readline()


def test_noop_does_not_reset_the_idle_timeout(gateway_factory) -> None:
    gateway = gateway_factory(smtp={"idle_timeout": 1.5})
    client = smtplib.SMTP("127.0.0.1", gateway.port, timeout=10)
    client.ehlo("client.test")
    with pytest.raises(smtplib.SMTPServerDisconnected):
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:  # RSET and HELP keep a session busy as cheaply as NOOP
            for command in ("NOOP", "RSET", "HELP"):
                code, _ = client.docmd(command)
                if code == 421:
                    raise smtplib.SMTPServerDisconnected("421")
                time.sleep(0.2)
    client.close()


def test_transaction_commands_keep_a_session_alive(gateway_factory) -> None:
    gateway = gateway_factory(smtp={"idle_timeout": 1.5})
    with smtplib.SMTP("127.0.0.1", gateway.port, timeout=10) as client:
        client.ehlo("client.test")
        for _ in range(2):  # 3.2 s in all, twice the idle limit, each step well inside it
            time.sleep(0.8)
            assert client.mail("reporter@example.net")[0] == 250
            time.sleep(0.8)
            assert client.rcpt("abuse@example.org")[0] == 250
            client.rset()


def test_ipv6_clients_of_one_64_count_as_one_client() -> None:
    assert client_key("2001:db8:1:2::1") == client_key("2001:db8:1:2:ffff:ffff:ffff:ffff")
    assert client_key("2001:db8:1:2::1") != client_key("2001:db8:1:3::1")
    assert client_key("192.0.2.1") != client_key("192.0.2.2")
    assert client_key("::ffff:192.0.2.1") == client_key("192.0.2.1")


def test_ipv6_loopback_sessions_share_the_per_client_limit(gateway_factory) -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        gateway = gateway_factory(smtp={"listen": ["[::1]:0"], "max_sessions_per_ip": 2})
    except RuntimeError:
        pytest.skip("::1 not available")
    clients = [socket.create_connection(("::1", gateway.port), timeout=10) for _ in range(3)]
    replies = [c.makefile("rb").readline()[:3] for c in clients]
    for c in clients:
        c.close()
    assert replies == [b"220", b"220", b"421"]


def test_idle_sessions_from_ten_addresses_do_not_lock_out_an_eleventh(gateway_factory) -> None:
    # 20 sessions from 10 addresses fill the listener (max_sessions 20, 2 per client): the scaled-down
    # form of 200 idle sessions from 10 addresses.
    gateway = gateway_factory(smtp={"max_sessions": 20, "max_sessions_per_ip": 2})
    idle = []
    for n in range(2, 12):
        for _ in range(2):
            client, banner = _raw_session(gateway.port, f"127.0.0.{n}")
            assert banner.startswith(b"220"), banner
            client.sendall(b"EHLO idle.test\r\n")
            idle.append(client)
    try:
        with smtplib.SMTP(timeout=10, source_address=("127.0.0.12", 0)) as newcomer:
            code, _ = newcomer.connect("127.0.0.1", gateway.port)
            assert code == 220
            newcomer.ehlo("new.test")
            assert newcomer.mail("reporter@example.net")[0] == 250
    finally:
        for client in idle:
            client.close()


def test_a_client_at_its_own_limit_is_still_refused_when_the_listener_is_full(gateway_factory) -> None:
    gateway = gateway_factory(smtp={"max_sessions": 4, "max_sessions_per_ip": 2})
    held = [_raw_session(gateway.port, f"127.0.0.{n}") for n in (2, 2, 3, 3)]
    client, reply = _raw_session(gateway.port, "127.0.0.2")
    for sock, _ in [*held, (client, b"")]:
        sock.close()
    assert [banner[:3] for _, banner in held] == [b"220"] * 4
    assert reply.startswith(b"421")
