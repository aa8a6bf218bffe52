"""Threading trust (issue 15, point 6), over SMTP: who counts as a participant of a case is decided by
envelope senders of verified messages, a stranger's mail is flagged whatever signal brought it in, it gets
no acknowledgement carrying the signed reply address, and it never reopens a closed case."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from parsers.reply_token import make_reply_token
from tests.conftest import RunningGateway, load_eml

REPORT = load_eml("report_phishing.eml")  # From/envelope reporter@example.net, Message-ID report-1@...
MALLORY = "mallory@evil.example"


def _mail(
    subject: str,
    *,
    sender: str = "reporter@example.net",
    headers: tuple[str, ...] = (),
    message_id: str | None = None,
) -> bytes:
    lines = [
        f"From: {sender}",
        "To: abuse@example.org",
        f"Subject: {subject}",
        f"Message-ID: <{message_id or uuid.uuid4().hex}@mail.example.net>",
        *headers,
        "Content-Type: text/plain; charset=utf-8",
    ]
    return ("\r\n".join(lines) + "\r\n\r\nMore details.\r\n").encode()


@pytest.fixture
def opened(gateway: RunningGateway) -> tuple[RunningGateway, str]:
    gateway.send(REPORT)
    gateway.wait_idle()
    [summary] = gateway.store.list_cases()
    return gateway, summary["case_id"]


def _messages(gateway: RunningGateway, case_id: str) -> list[dict]:
    return gateway.store.show_case(case_id)["messages"]


def _outbox_to(gateway: RunningGateway, recipient: str) -> list[dict]:
    return [row for row in gateway.store.list_outbox() if row["recipient"] == recipient]


def test_stranger_matching_by_subject_gets_no_acknowledgement_with_the_reply_address(opened) -> None:
    gateway, case_id = opened
    gateway.send(_mail(f"Re: [{case_id}] let me in", sender=MALLORY), mail_from=MALLORY)
    gateway.wait_idle()
    assert "unverified_sender" in _messages(gateway, case_id)[1]["flags"]
    rows = _outbox_to(gateway, MALLORY)
    assert [(r["state"], r["suppressed_reason"]) for r in rows] == [("suppressed", "unverified_sender")]


def test_stranger_matching_by_header_is_flagged_unverified(opened) -> None:
    gateway, case_id = opened
    reply = _mail("hi", sender=MALLORY, headers=("In-Reply-To: <report-1@mail.example.net>",))
    gateway.send(reply, mail_from=MALLORY)
    gateway.wait_idle()
    second = _messages(gateway, case_id)[1]
    assert second["thread_signal"] == "header"
    assert "unverified_sender" in second["flags"]
    assert [r["state"] for r in _outbox_to(gateway, MALLORY)] == ["suppressed"]


def test_from_header_naming_the_reporter_does_not_verify_a_stranger(opened) -> None:
    gateway, case_id = opened
    gateway.send(_mail(f"Re: [{case_id}]", sender="reporter@example.net"), mail_from=MALLORY)
    gateway.wait_idle()
    assert "unverified_sender" in _messages(gateway, case_id)[1]["flags"]


def test_reply_token_used_by_a_non_participant_is_flagged(opened, tmp_path: Path) -> None:
    gateway, case_id = opened
    key = (tmp_path / "reply-token.key").read_bytes().strip()
    token_address = f"abuse+{make_reply_token(case_id, key)}@example.org"
    gateway.send(_mail("no id in here", sender=MALLORY), mail_from=MALLORY, rcpt_tos=[token_address])
    gateway.wait_idle()
    second = _messages(gateway, case_id)[1]
    assert second["thread_signal"] == "token"
    assert "unverified_sender" in second["flags"]


def test_reporter_using_the_reply_token_is_not_flagged(opened, tmp_path: Path) -> None:
    gateway, case_id = opened
    key = (tmp_path / "reply-token.key").read_bytes().strip()
    token_address = f"abuse+{make_reply_token(case_id, key)}@example.org"
    gateway.send(_mail("the zip password"), rcpt_tos=[token_address])
    gateway.wait_idle()
    assert _messages(gateway, case_id)[1]["flags"] == []


def test_reply_to_a_strangers_message_inherits_the_flag(opened) -> None:
    gateway, case_id = opened
    gateway.send(_mail(f"Re: [{case_id}]", sender=MALLORY, message_id="mallory-1"), mail_from=MALLORY)
    accomplice = "accomplice@evil.example"
    follow_up = _mail("more", sender=accomplice, headers=("In-Reply-To: <mallory-1@mail.example.net>",))
    gateway.send(follow_up, mail_from=accomplice)
    gateway.wait_idle()
    third = _messages(gateway, case_id)[2]
    assert third["thread_signal"] == "header"
    assert "unverified_sender" in third["flags"]


def test_an_automatic_message_does_not_make_its_sender_a_participant(opened) -> None:
    gateway, case_id = opened
    robot = "robot@evil.example"
    auto = _mail(
        "On holiday",
        sender=robot,
        headers=("In-Reply-To: <report-1@mail.example.net>", "Auto-Submitted: auto-replied"),
    )
    gateway.send(auto, mail_from=robot)
    gateway.send(_mail(f"Re: [{case_id}] now I am in", sender=robot), mail_from=robot)
    gateway.wait_idle()
    messages = _messages(gateway, case_id)
    assert messages[1]["kind"] == "automatic"
    assert "unverified_sender" in messages[2]["flags"]


def test_unverified_message_joins_a_closed_case_flagged_without_reopening_it(opened) -> None:
    gateway, case_id = opened
    assert gateway.store.set_status(case_id, "closed", "by test")
    gateway.send(_mail(f"Re: [{case_id}] reopen please", sender=MALLORY), mail_from=MALLORY)
    gateway.wait_idle()
    case = gateway.store.show_case(case_id)
    assert case["status"] == "closed"
    assert [e["kind"] for e in case["events"]] == ["closed"]
    assert {"unverified_sender", "joined_closed_case"} <= set(case["messages"][1]["flags"])


def test_automatic_message_joins_a_closed_case_without_reopening_it(opened) -> None:
    gateway, case_id = opened
    assert gateway.store.set_status(case_id, "closed", "by test")
    auto = _mail(f"Automatic reply: [{case_id}]", headers=("Auto-Submitted: auto-replied",))
    gateway.send(auto)
    gateway.wait_idle()
    case = gateway.store.show_case(case_id)
    assert case["status"] == "closed"
    assert case["messages"][1]["kind"] == "automatic"
    assert "joined_closed_case" in case["messages"][1]["flags"]


def test_participant_reply_still_reopens_a_closed_case(opened) -> None:
    gateway, case_id = opened
    assert gateway.store.set_status(case_id, "closed", "by test")
    gateway.send(_mail(f"Re: [{case_id}] it is back"))
    gateway.wait_idle()
    assert gateway.store.show_case(case_id)["status"] == "open"
