"""Confirmations (issue 4): queued with the case, sent through a real SMTP sink, never abusable."""

from __future__ import annotations

import email
import os
import socket
import stat
import threading
import uuid
from email import policy
from email.message import EmailMessage
from pathlib import Path

import pytest

from gateway.config import Config
from parsers.reply_token import token_from_address, verify_reply_token
from tests.conftest import RunningGateway, Sink, load_eml

REPORT = load_eml("report_phishing.eml")


def _with_headers(raw: bytes, *headers: str, subject: str | None = None) -> bytes:
    """The phishing report with extra headers (and a fresh Message-ID so nothing is a redelivery)."""
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = [
        line
        for line in head.split(b"\r\n")
        if not line.lower().startswith(b"message-id:")
        and not (subject and line.lower().startswith(b"subject:"))
    ]
    lines.append(f"Message-ID: <{uuid.uuid4().hex}@mail.example.net>".encode())
    if subject:
        lines.append(f"Subject: {subject}".encode())
    lines += [h.encode() for h in headers]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


@pytest.fixture
def confirming(gateway_factory, store_url: str, smtp_sink: Sink) -> RunningGateway:
    return gateway_factory(store_url, confirm={"smarthost": smtp_sink.address})


def _received(sink: Sink, count: int = 1) -> list[EmailMessage]:
    return [email.message_from_bytes(raw, policy=policy.default) for _, _, raw in sink.wait_for(count)]


def test_confirmation_arrives_with_case_id_and_rfc3834_headers(
    confirming: RunningGateway, smtp_sink: Sink
) -> None:
    confirming.send(REPORT, mail_from="bounces-to@example.net")
    confirming.wait_idle()
    [case] = confirming.store.list_cases()
    [confirmation] = _received(smtp_sink)
    mail_from, rcpts, _ = smtp_sink.handler.received[0]
    assert rcpts == ["bounces-to@example.net"]  # RFC 3834 §4: the envelope sender, not From
    assert confirmation["Subject"] == f"[{case['case_id']}] We received your report"
    assert confirmation["To"] == "bounces-to@example.net"
    assert confirmation["In-Reply-To"] == "<report-1@mail.example.net>"
    assert confirmation["References"] == "<report-1@mail.example.net>"
    assert confirmation["Auto-Submitted"] == "auto-replied"
    assert confirmation["X-Auto-Response-Suppress"] == "All"
    assert confirmation["X-Abuse-Gateway-Loop"]
    assert mail_from == "abuse@example.org"
    token = token_from_address(str(confirmation["Reply-To"]))
    keys = [Path(confirming.service.config.confirm.secret_file).read_bytes().strip()]
    assert token and verify_reply_token(token, keys) == case["case_id"]
    [row] = confirming.wait_outbox(lambda rows: rows and rows[0]["state"] == "sent")
    assert f"<{row['message_id']}>" == confirmation["Message-ID"]


def test_confirmation_never_echoes_report_content(confirming: RunningGateway, smtp_sink: Sink) -> None:
    confirming.send(REPORT)
    [(_, _, raw)] = smtp_sink.wait_for(1)
    text = raw.decode("utf-8", "replace").lower()
    for leaked in (
        "login-bank",
        "verify?id",
        "s3cr3t",
        "phishing site",
        "impersonating",
        "203.0.113.7",
        "http",
    ):
        assert leaked not in text


def test_replies_thread_by_subject_header_and_reply_token(
    confirming: RunningGateway, smtp_sink: Sink
) -> None:
    confirming.send(REPORT)
    [confirmation] = _received(smtp_sink)
    case_id = confirming.store.list_cases()[0]["case_id"]
    by_subject = _with_headers(REPORT, subject=f"Re: [{case_id}] We received your report")
    by_header = _with_headers(
        REPORT, f"In-Reply-To: {confirmation['Message-ID']}", subject="Re: your automatic message"
    )
    by_token = _with_headers(REPORT, subject="one more thing")
    confirming.send(by_subject)
    confirming.send(by_header)
    confirming.send(by_token, rcpt_tos=[str(confirmation["Reply-To"])])
    confirming.wait_idle()
    [case] = confirming.store.list_cases()
    signals = [m["thread_signal"] for m in confirming.store.show_case(case["case_id"])["messages"]]
    assert signals == ["none", "subject", "header", "token"]


NEVER_CONFIRMED = [
    pytest.param("", (), "null_sender", id="null-sender"),
    pytest.param("MAILER-DAEMON@example.net", (), "system_sender", id="mailer-daemon"),
    pytest.param("postmaster@example.net", (), "system_sender", id="postmaster"),
    pytest.param("noreply@example.net", (), "system_sender", id="noreply"),
    pytest.param("no-reply@example.net", (), "system_sender", id="no-reply"),
    pytest.param("r@example.net", ("Auto-Submitted: auto-replied",), "automatic", id="auto-submitted"),
    pytest.param("r@example.net", ("Auto-Submitted: auto-generated",), "automatic", id="auto-generated"),
    pytest.param("r@example.net", ("Precedence: bulk",), "bulk_or_list", id="precedence-bulk"),
    pytest.param("r@example.net", ("Precedence: junk",), "bulk_or_list", id="precedence-junk"),
    pytest.param("r@example.net", ("Precedence: list",), "bulk_or_list", id="precedence-list"),
    pytest.param("r@example.net", ("List-Id: <abuse.lists.example.net>",), "bulk_or_list", id="list-id"),
    pytest.param(
        "r@example.net", ("List-Unsubscribe: <mailto:u@example.net>",), "bulk_or_list", id="list-unsub"
    ),
    pytest.param(
        "r@example.net", ("X-Auto-Response-Suppress: All",), "x_auto_response_suppress", id="xars-all"
    ),
    pytest.param(
        "r@example.net",
        ("X-Auto-Response-Suppress: DR, AutoReply",),
        "x_auto_response_suppress",
        id="xars-auto",
    ),
    pytest.param("r@example.net", ("X-Abuse-Gateway-Loop: 0123abcd",), "own_mail", id="our-loop-header"),
]


@pytest.mark.parametrize(("sender", "headers", "reason"), NEVER_CONFIRMED)
def test_no_confirmation_is_sent_to(
    gateway_factory, store_url: str, smtp_sink: Sink, sender: str, headers: tuple[str, ...], reason: str
) -> None:
    gateway = gateway_factory(store_url, confirm={"smarthost": smtp_sink.address})
    assert gateway.send(_with_headers(REPORT, *headers), mail_from=sender)[0] == 250
    gateway.wait_idle()
    [case] = gateway.store.list_cases()  # the report itself is always stored
    [row] = gateway.store.list_outbox()
    assert (row["state"], row["suppressed_reason"]) == ("suppressed", reason)
    message = gateway.store.show_case(case["case_id"])["messages"][0]
    assert f"confirmation_suppressed:{reason}" in message["flags"]
    assert smtp_sink.handler.received == []


def test_machine_reports_get_no_confirmation(gateway_factory, store_url: str, smtp_sink: Sink) -> None:
    gateway = gateway_factory(store_url, confirm={"smarthost": smtp_sink.address})
    gateway.send(load_eml("arf_mailbox_provider.eml"), mail_from="fbl@provider.example")
    gateway.wait_idle()
    [row] = gateway.store.list_outbox()
    assert (row["state"], row["suppressed_reason"]) == ("suppressed", "machine_report")


def test_a_reply_to_our_own_confirmation_message_id_is_not_confirmed(
    confirming: RunningGateway, smtp_sink: Sink
) -> None:
    confirming.send(REPORT)
    [confirmation] = _received(smtp_sink)
    looped = confirmation.as_bytes()  # our own mail delivered back to us, loop header and all
    confirming.send(looped, mail_from="abuse@example.org")
    confirming.wait_idle()
    rows = confirming.store.list_outbox()
    assert len(smtp_sink.handler.received) == 1
    assert any(r["suppressed_reason"] == "own_mail" for r in rows)


def test_per_address_cap_suppresses_confirmations_but_stores_every_report(
    gateway_factory, store_url: str, smtp_sink: Sink
) -> None:
    gateway = gateway_factory(store_url, confirm={"smarthost": smtp_sink.address, "per_address_per_hour": 2})
    for n in range(4):
        gateway.send(_with_headers(REPORT, subject=f"report {n}"), mail_from="flood@example.net")
        gateway.wait_idle()
    assert len(gateway.store.list_cases()) == 4
    rows = gateway.wait_outbox(lambda rows: sum(r["state"] == "sent" for r in rows) == 2)
    assert sorted(r["suppressed_reason"] or "" for r in rows) == [
        "",
        "",
        "rate_limited_address",
        "rate_limited_address",
    ]


def test_per_domain_cap_suppresses_confirmations(gateway_factory, store_url: str, smtp_sink: Sink) -> None:
    gateway = gateway_factory(store_url, confirm={"smarthost": smtp_sink.address, "per_domain_per_hour": 1})
    gateway.send(_with_headers(REPORT, subject="a"), mail_from="one@forged.example")
    gateway.send(_with_headers(REPORT, subject="b"), mail_from="two@forged.example")
    gateway.wait_idle()
    reasons = sorted(r["suppressed_reason"] or "" for r in gateway.store.list_outbox())
    assert reasons == ["", "rate_limited_domain"]


def test_amendment_gets_a_short_acknowledgement(confirming: RunningGateway, smtp_sink: Sink) -> None:
    confirming.send(REPORT)
    smtp_sink.wait_for(1)
    case_id = confirming.store.list_cases()[0]["case_id"]
    confirming.send(_with_headers(REPORT, subject=f"Re: [{case_id}] more"))
    [_, ack] = _received(smtp_sink, 2)
    assert ack["Subject"] == f"[{case_id}] Added to your case"
    assert ack["Auto-Submitted"] == "auto-replied"


def test_smarthost_451_then_250_delivers_on_retry(gateway_factory, store_url: str, smtp_sink: Sink) -> None:
    smtp_sink.handler.replies = ["451 4.3.0 try again later"]
    gateway = gateway_factory(store_url, confirm={"smarthost": smtp_sink.address})
    gateway.send(REPORT)
    smtp_sink.wait_for(1)
    gateway.wait_outbox(lambda rows: rows and rows[0]["state"] == "sent")
    assert len(smtp_sink.handler.received) == 1


def test_smarthost_deferring_leaves_the_row_retrying_with_its_reply(
    gateway_factory, store_url: str, smtp_sink: Sink
) -> None:
    smtp_sink.handler.replies = ["451 4.3.0 greylisted"] * 3
    gateway = gateway_factory(store_url, confirm={"smarthost": smtp_sink.address})
    gateway.send(REPORT)
    [row] = gateway.wait_outbox(lambda rows: rows and rows[0]["state"] == "retrying")
    assert row["last_error"].startswith("451") and "greylisted" in row["last_error"]
    assert row["next_attempt_at"] and row["attempts"] == 1


def test_smarthost_550_leaves_the_row_failed_with_the_reply(
    gateway_factory, store_url: str, smtp_sink: Sink
) -> None:
    smtp_sink.handler.replies = ["550 5.7.1 relaying denied"]
    gateway = gateway_factory(store_url, confirm={"smarthost": smtp_sink.address})
    gateway.send(REPORT)
    [row] = gateway.wait_outbox(lambda rows: rows and rows[0]["state"] == "failed")
    assert row["last_error"] == "550 5.7.1 relaying denied"
    assert smtp_sink.handler.received == []


def test_restart_resends_nothing_already_sent(gateway_factory, store_url: str, smtp_sink: Sink) -> None:
    first = gateway_factory(store_url, confirm={"smarthost": smtp_sink.address})
    first.send(REPORT)
    first.wait_outbox(lambda rows: rows and rows[0]["state"] == "sent")
    first.stop()
    second = gateway_factory(store_url, confirm={"smarthost": smtp_sink.address})
    second.send(_with_headers(REPORT, subject="a second report"))
    second.wait_outbox(lambda rows: len(rows) == 2 and all(r["state"] == "sent" for r in rows))
    assert len(smtp_sink.handler.received) == 2


def test_a_claim_left_by_a_killed_worker_expires_and_is_sent_once(
    gateway_factory, store_url: str, smtp_sink: Sink
) -> None:
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import update
    from sqlmodel import Session

    from storage.models import OutboxRow

    gateway = gateway_factory(store_url, confirm={"enabled": True, "smarthost": "127.0.0.1:9"})
    gateway.send(REPORT)
    gateway.wait_outbox(lambda rows: rows and rows[0]["state"] in ("retrying", "sending"))
    gateway.stop()
    # What a worker killed mid-send leaves: a 'sending' row whose lease has run out.
    with Session(gateway.store.engine) as session, session.begin():
        session.execute(
            update(OutboxRow).values(
                state="sending",
                claimed_by="dead-worker",
                claimed_until=datetime.now(UTC) - timedelta(seconds=1),
                next_attempt_at=datetime.now(UTC) - timedelta(seconds=1),
            )
        )
    revived = gateway_factory(store_url, confirm={"smarthost": smtp_sink.address})
    revived.wait_outbox(lambda rows: rows and rows[0]["state"] == "sent")
    assert len(smtp_sink.handler.received) == 1


class _StalledSmarthost:
    """A smarthost that answers up to DATA's 354, takes the message, and then answers nothing (not the
    end of DATA, not QUIT): what a wedged relay looks like from our side. Records what it is sent after
    the message, and when we hang up."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.message_sent = threading.Event()
        self.hung_up = threading.Event()
        self.after_message: list[bytes] = []
        threading.Thread(target=self._serve, name="stalled-smarthost", daemon=True).start()

    def _serve(self) -> None:
        conn, _ = self.listener.accept()
        with conn, conn.makefile("rb") as reader:
            conn.sendall(b"220 stalled.test ESMTP\r\n")
            in_data = False
            for line in reader:  # ends when the gateway closes the connection
                if self.message_sent.is_set():
                    self.after_message.append(line)
                elif in_data:
                    if line == b".\r\n":
                        self.message_sent.set()
                elif line[:4].upper() == b"DATA":
                    in_data = True
                    conn.sendall(b"354 go ahead\r\n")
                else:
                    conn.sendall(b"250 stalled.test\r\n")
        self.listener.close()
        self.hung_up.set()


def test_stopping_mid_send_hangs_up_on_a_stalled_smarthost_and_the_row_stays_to_be_sent(
    gateway_factory, store_url: str
) -> None:
    """Before the fix the cancelled send said QUIT and waited out the 30 s SMTP timeout for its answer, so
    `serve` took 30 s to stop (seen as 30 s teardowns in the suite, whose sink stops before the gateway)."""
    smarthost = _StalledSmarthost()
    gateway = gateway_factory(store_url, confirm={"smarthost": f"127.0.0.1:{smarthost.port}"})
    gateway.send(REPORT)
    assert smarthost.message_sent.wait(20)
    gateway.stop()
    assert smarthost.hung_up.wait(20)
    assert smarthost.after_message == []  # no QUIT waited for: the connection was simply closed
    assert [row["state"] for row in gateway.store.list_outbox()] == ["sending"]  # sent again after its lease


def test_disabled_confirmations_queue_nothing(gateway_factory, store_url: str) -> None:
    gateway = gateway_factory(store_url, confirm={"enabled": False})
    gateway.send(REPORT)
    gateway.wait_idle()
    assert gateway.store.list_cases() and gateway.store.list_outbox() == []


def test_without_smarthost_the_confirmation_is_written_as_eml(gateway_factory, store_url: str) -> None:
    gateway = gateway_factory(store_url)
    gateway.send(REPORT)
    gateway.wait_outbox(lambda rows: rows and rows[0]["state"] == "sent")
    [eml] = list(Path(gateway.service.config.confirm.outbox_dir).glob("*.eml"))
    assert b"We received your report" in eml.read_bytes()


def test_reply_token_key_is_created_private_on_first_start(gateway_factory, store_url: str) -> None:
    gateway = gateway_factory(store_url)
    key = Path(gateway.service.config.confirm.secret_file)
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    assert len(key.read_bytes().strip()) >= 32


def test_subject_template_cannot_carry_report_text() -> None:
    with pytest.raises(ValueError, match="case_id"):
        Config.model_validate({"confirm": {"subject_template": "[{case_id}] Re: {subject}"}})


def test_a_confirm_worker_woken_as_the_stop_cancels_it_still_stops(tmp_path: Path) -> None:
    """On Python 3.11 `asyncio.wait_for` swallowed a cancel landing as its wait completed: a wake (a
    commit) at the moment of the stop left the worker polling on and `serve`'s stop awaiting it for ever."""
    import asyncio

    from gateway.assembly import build_confirm_worker, build_store
    from tests.conftest import make_config, upgrade_store

    url = f"sqlite:///{tmp_path}/cases.db"
    upgrade_store(url)
    config = make_config(tmp_path, url)
    store = build_store(config)
    worker = build_confirm_worker(config, store)

    async def scenario() -> bool:
        task = asyncio.create_task(worker.run())
        # Polled: the worker has no "now idle" event of its own (its waiters are its wake's).
        while not worker._wake._waiters:  # type: ignore[attr-defined]  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        worker.wake()
        await asyncio.sleep(0)  # the wait completes...
        task.cancel()  # ...and the stop cancels the worker in the same turn of the loop
        done, _ = await asyncio.wait({task}, timeout=5)
        while not task.done():  # (before the fix) end it for good
            task.cancel()
            await asyncio.wait({task}, timeout=1)
        return task in done and task.cancelled()

    try:
        assert asyncio.run(scenario())
    finally:
        store.engine.dispose()
