"""Issue 15, points 1 and 7: the confirmation worker cannot be killed by an envelope address, and a
confirmation carries nothing the attacker chose (no foreign Message-ID, no quoted local part)."""

from __future__ import annotations

import email
import socket
import uuid
from datetime import UTC, datetime
from email import policy

import pytest
from sqlalchemy import insert, select
from sqlmodel import Session

from storage.models import Case, OutboxRow
from tests.conftest import RunningGateway, Sink

# CR, VT, FF, FS, NEL, LINE SEPARATOR, PARAGRAPH SEPARATOR: each made `build_message` raise in the worker.
LINE_BREAKERS = ["\x00", "\r", "\x0b", "\x0c", "\x1c", "\x85", "\u2028", "\u2029"]


def _report(message_id: str | None = None) -> bytes:
    mid = message_id or f"<{uuid.uuid4().hex}@mail.example.net>"
    return (
        "From: reporter@example.net\r\nTo: abuse@example.org\r\nSubject: phishing\r\n"
        f"Message-ID: {mid}\r\n\r\nphishing at host bad.example\r\n"
    ).encode()


def _raw_mail_from(port: int, address: str) -> bytes:
    """MAIL FROM with the address's raw bytes (smtplib refuses to send CR); returns the reply line."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        reader = sock.makefile("rb")
        reader.readline()
        sock.sendall(b"EHLO client.test\r\n")
        while not reader.readline().startswith(b"250 "):
            pass
        sock.sendall(b"MAIL FROM:<" + address.encode("utf-8") + b"> SMTPUTF8\r\n")
        return reader.readline()


@pytest.mark.parametrize("char", LINE_BREAKERS, ids=[f"U+{ord(c):04X}" for c in LINE_BREAKERS])
def test_mail_from_with_control_or_line_break_is_refused_553(gateway_factory, char: str) -> None:
    gateway = gateway_factory()
    reply = _raw_mail_from(gateway.port, f"evil{char}bcc@example.net")
    assert reply.startswith(b"553 5.1.7 "), reply
    assert b"control" in reply.lower()


def _confirming(gateway_factory, store_url: str, sink: Sink, **confirm: object) -> RunningGateway:
    return gateway_factory(store_url, confirm={"smarthost": sink.address, **confirm})


def test_poisonous_outbox_row_ends_failed_and_the_next_confirmation_is_sent(
    gateway_factory, store_url: str, smtp_sink: Sink
) -> None:
    """A row written by an older version (or another gateway on the same PostgreSQL) with a CR in its
    recipient: it ends `failed`, and the worker goes on to send the next confirmation."""
    gateway = _confirming(gateway_factory, store_url, smtp_sink)
    gateway.send(_report(), mail_from="first@example.net")
    gateway.wait_outbox(lambda rows: len(rows) == 1 and rows[0]["state"] == "sent")
    with Session(gateway.store.engine) as session, session.begin():
        case_pk = session.execute(select(Case.id)).scalar()
        session.execute(
            insert(OutboxRow.__table__).values(
                case_pk=case_pk,
                kind="confirmation",
                recipient="evil\r@example.net",
                state="queued",
                attempts=0,
                created_at=datetime.now(UTC),
                next_attempt_at=datetime.now(UTC),
            )
        )
    gateway.service.confirmer.wake()
    gateway.wait_outbox(lambda rows: any(r["state"] == "failed" for r in rows))
    gateway.send(_report(), mail_from="second@example.net")
    rows = gateway.wait_outbox(lambda rows: sum(r["state"] == "sent" for r in rows) == 2)
    [poison] = [r for r in rows if r["recipient"].startswith("evil")]
    assert poison["state"] == "failed" and "recipient" in (poison["last_error"] or "")
    assert [rcpts for _, rcpts, _ in smtp_sink.wait_for(2)] == [["first@example.net"], ["second@example.net"]]


def test_ingest_sender_with_line_break_is_stored_with_confirmation_suppressed(
    gateway_factory, store_url: str, smtp_sink: Sink, tmp_path
) -> None:
    import subprocess
    import sys
    from pathlib import Path

    gateway = _confirming(gateway_factory, store_url, smtp_sink)
    config = tmp_path / "ingest.toml"
    config.write_text(f'[store]\nurl = "{store_url}"\nspool_dir = "{tmp_path}/spool"\n')
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "gateway",
            "ingest",
            "--config",
            str(config),
            "--sender",
            "evil\r@example.net",
        ],
        input=_report(),
        capture_output=True,
        cwd=Path(__file__).resolve().parents[1],
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    gateway.service._wake_intake()
    rows = gateway.wait_outbox(lambda rows: len(rows) == 1)
    assert rows[0]["state"] == "suppressed" and rows[0]["suppressed_reason"] == "invalid_sender"
    gateway.send(_report(), mail_from="next@example.net")
    assert [rcpts for _, rcpts, _ in smtp_sink.wait_for(1)] == [["next@example.net"]]


def test_confirmation_never_copies_a_crafted_message_id(
    gateway_factory, store_url: str, smtp_sink: Sink
) -> None:
    gateway = _confirming(gateway_factory, store_url, smtp_sink)
    gateway.send(_report('<"Your account is locked: https://evil.example/login"@evil.example>'))
    gateway.wait_outbox(lambda rows: rows and rows[0]["state"] == "sent")
    [(_, _, raw)] = smtp_sink.wait_for(1)
    confirmation = email.message_from_bytes(raw, policy=policy.default)
    assert confirmation["In-Reply-To"] is None and confirmation["References"] is None
    assert b"evil" not in raw


def test_confirmation_copies_a_plain_message_id(gateway_factory, store_url: str, smtp_sink: Sink) -> None:
    gateway = _confirming(gateway_factory, store_url, smtp_sink)
    gateway.send(_report("<plain.id-1@mail.example.net>"))
    [(_, _, raw)] = smtp_sink.wait_for(1)
    confirmation = email.message_from_bytes(raw, policy=policy.default)
    assert confirmation["In-Reply-To"] == "<plain.id-1@mail.example.net>"


def test_quoted_local_part_gets_no_confirmation(gateway_factory, store_url: str, smtp_sink: Sink) -> None:
    gateway = _confirming(gateway_factory, store_url, smtp_sink)
    gateway.send(_report(), mail_from='"https://evil.example/login"@victim.example')
    rows = gateway.wait_outbox(lambda rows: len(rows) == 1)
    assert rows[0]["state"] == "suppressed" and rows[0]["suppressed_reason"] == "non_plain_address"
    [case] = gateway.store.list_cases()
    assert case["case_id"]  # the report itself is stored


def test_a_dead_worker_task_is_restarted_and_counted() -> None:
    """The supervisor the confirmation worker runs under: a task that dies is logged, counted in
    `abuse_gateway_task_restarts` and started again."""
    import asyncio

    from gateway import metrics
    from gateway.service import supervise_task

    runs: list[int] = []
    restarted = asyncio.Event()

    async def worker() -> None:
        runs.append(1)
        if len(runs) == 1:
            raise RuntimeError("killed by a poisonous row")
        restarted.set()
        await asyncio.sleep(3600)

    async def scenario() -> None:
        task = asyncio.create_task(supervise_task("test-worker", worker, backoff=0.01))
        await asyncio.wait_for(restarted.wait(), 30)
        assert metrics.TASK_UP.labels("test-worker")._value.get() == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    before = metrics.TASK_RESTARTS.labels("test-worker")._value.get()
    asyncio.run(scenario())
    assert metrics.TASK_RESTARTS.labels("test-worker")._value.get() == before + 1


def _send_from(port: int, raw: bytes, sender: str, source: str = "127.0.0.1") -> None:
    import smtplib

    with smtplib.SMTP("127.0.0.1", port, timeout=30, source_address=(source, 0)) as client:
        client.sendmail(sender, ["abuse@example.org"], raw)


def test_plus_tags_and_gmail_dots_count_as_one_mailbox(
    gateway_factory, store_url: str, smtp_sink: Sink
) -> None:
    gateway = _confirming(gateway_factory, store_url, smtp_sink, per_address_per_hour=2)
    for sender in ("victim+1@gmail.com", "v.i.c.t.i.m+2@gmail.com", "Victim@googlemail.com"):
        gateway.send(_report(), mail_from=sender)
    rows = gateway.wait_outbox(lambda rows: len(rows) == 3 and all(r["state"] != "queued" for r in rows))
    assert sorted(r["suppressed_reason"] or "" for r in rows) == ["", "", "rate_limited_address"]


def test_per_domain_cap_counts_the_registrable_domain(
    gateway_factory, store_url: str, smtp_sink: Sink
) -> None:
    gateway = _confirming(gateway_factory, store_url, smtp_sink, per_domain_per_hour=2)
    for sender in ("a@one.example.co.uk", "b@two.example.co.uk", "c@example.co.uk"):
        gateway.send(_report(), mail_from=sender)
    rows = gateway.wait_outbox(lambda rows: len(rows) == 3 and all(r["state"] != "queued" for r in rows))
    assert sorted(r["suppressed_reason"] or "" for r in rows) == ["", "", "rate_limited_domain"]


def test_forged_flood_from_one_network_does_not_mute_the_domains_real_reporters(
    gateway_factory, store_url: str, smtp_sink: Sink
) -> None:
    """The per-domain cap counts per client network: a flood of forged @victim.example reports from one
    network exhausts that network's share only (networks are /32 here so loopback addresses differ)."""
    gateway = _confirming(gateway_factory, store_url, smtp_sink, per_domain_per_hour=3, network_prefix_v4=32)
    for n in range(6):
        _send_from(gateway.port, _report(), f"forged{n}@victim.example", source="127.0.0.2")
    _send_from(gateway.port, _report(), "real.reporter@victim.example", source="127.0.0.3")
    rows = gateway.wait_outbox(lambda rows: len(rows) == 7 and all(r["state"] != "queued" for r in rows))
    [real] = [r for r in rows if r["recipient"] == "real.reporter@victim.example"]
    assert real["suppressed_reason"] is None
    assert sum(r["suppressed_reason"] == "rate_limited_domain" for r in rows) == 3


def test_per_network_cap_limits_a_flood_over_many_domains(
    gateway_factory, store_url: str, smtp_sink: Sink
) -> None:
    gateway = _confirming(gateway_factory, store_url, smtp_sink, per_network_per_hour=2)
    for n in range(3):
        gateway.send(_report(), mail_from=f"someone@victim{n}.example")
    rows = gateway.wait_outbox(lambda rows: len(rows) == 3 and all(r["state"] != "queued" for r in rows))
    assert sorted(r["suppressed_reason"] or "" for r in rows) == ["", "", "rate_limited_network"]


def test_two_gateways_on_postgresql_send_exactly_the_cap(tmp_path, smtp_sink: Sink) -> None:
    """Two `serve` processes, one PostgreSQL, cap 5, sixty reports from one address: five confirmations
    (before the fix the two gateways' counts raced and 8 went out)."""
    import subprocess
    import sys
    import time
    from concurrent.futures import ThreadPoolExecutor
    from pathlib import Path

    from gateway.assembly import build_store
    from gateway.config import load_config
    from storage import schema
    from tests.conftest import PG_URL, free_port, reset_postgres, wait_for_port

    if not PG_URL:
        pytest.skip("ABUSE_GATEWAY_TEST_PG is not set")
    reset_postgres(PG_URL)
    store = build_store(load_config(None, environ={"ABUSE_GATEWAY_STORE_URL": PG_URL}))
    schema.upgrade(store.engine)
    ports, procs = [free_port(), free_port()], []
    for n, port in enumerate(ports):
        home = tmp_path / f"gw{n}"
        home.mkdir()
        (home / "gateway.toml").write_text(
            f'[smtp]\nlisten = ["127.0.0.1:{port}"]\nhostname = "gw{n}.test"\n'
            f'[intake]\naddresses = ["abuse@example.org"]\n'
            f'[store]\nurl = "{PG_URL}"\nspool_dir = "{home}/spool"\n'
            f'[confirm]\nfrom = "abuse@example.org"\nsmarthost = "{smtp_sink.address}"\n'
            f'secret_file = "{tmp_path}/key"\nper_address_per_hour = 5\n'
        )
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "gateway", "serve", "--config", str(home / "gateway.toml")],
                cwd=Path(__file__).resolve().parents[1],
                stdout=subprocess.DEVNULL,
                stderr=(home / "stderr.log").open("wb"),
            )
        )
    try:
        for port in ports:
            wait_for_port(port)
        logs = [tmp_path / f"gw{n}" / "stderr.log" for n in range(2)]
        deadline = time.monotonic() + 60  # both intake processes running, so both take part
        while not all(b"intake worker ready" in log.read_bytes() for log in logs):
            assert time.monotonic() < deadline, "intake processes did not start"
            time.sleep(0.1)
        with ThreadPoolExecutor(max_workers=16) as pool:
            jobs = [pool.submit(_send_from, ports[n % 2], _report(), "same@example.net") for n in range(60)]
            for job in jobs:
                job.result()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            rows = store.list_outbox()
            if len(rows) == 60 and all(r["state"] in ("sent", "suppressed") for r in rows):
                break
            time.sleep(0.2)
        # No wait for stragglers: a row turns `sent` only after the sink's 250, so the sink has them all.
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=60)
    rows = store.list_outbox()
    store.engine.dispose()
    assert len(rows) == 60
    assert sum(r["state"] == "sent" for r in rows) == 5
    assert len(smtp_sink.handler.received) == 5
