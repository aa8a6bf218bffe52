"""Threading that survives real mail clients (issue 5): each signal end to end over SMTP, strangers,
redelivery, closed cases and bounces of our own confirmations."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from tests.conftest import RunningGateway, Sink, load_eml, run_cli

REPORT = load_eml("report_phishing.eml")


def _mail(
    subject: str,
    *,
    sender: str = "reporter@example.net",
    body: str = "More details.",
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
    return ("\r\n".join(lines) + "\r\n\r\n" + body + "\r\n").encode()


def _template(name: str, **values: str) -> bytes:
    raw = load_eml(name).decode()
    for key, value in {"nonce": uuid.uuid4().hex, **values}.items():
        raw = raw.replace("{" + key + "}", value)
    return raw.encode()


def _case(gateway: RunningGateway) -> dict:
    [summary] = gateway.store.list_cases()
    return gateway.store.show_case(summary["case_id"])


@pytest.fixture
def opened(gateway: RunningGateway) -> tuple[RunningGateway, str]:
    gateway.send(REPORT)
    gateway.wait_idle()
    return gateway, _case(gateway)["case_id"]


def test_in_reply_to_an_earlier_message_of_the_case_threads_by_header(opened) -> None:
    gateway, _ = opened
    gateway.send(_mail("no id here", headers=("In-Reply-To: <report-1@mail.example.net>",)))
    gateway.wait_idle()
    assert [m["thread_signal"] for m in _case(gateway)["messages"]] == ["none", "header"]


def test_references_chain_threads_by_header(opened) -> None:
    gateway, _ = opened
    refs = "References: <unrelated@x.example> <report-1@mail.example.net>"
    gateway.send(_mail("Outlook mangled the subject", headers=(refs,)))
    gateway.wait_idle()
    assert _case(gateway)["messages"][1]["thread_signal"] == "header"


def test_case_id_in_the_first_lines_of_the_body_threads_by_body(opened) -> None:
    gateway, case_id = opened
    gateway.send(_mail("another sample", body=f"Regarding {case_id}: here is the second URL."))
    gateway.wait_idle()
    assert _case(gateway)["messages"][1]["thread_signal"] == "body"


def test_case_id_in_an_attached_forwarded_confirmation_threads_by_body(opened) -> None:
    gateway, case_id = opened
    gateway.send(_template("forward_of_confirmation_template.eml", case_id=case_id))
    gateway.wait_idle()
    assert _case(gateway)["messages"][1]["thread_signal"] == "body"


def test_subject_beats_body_and_extra_ids_become_cross_references(opened) -> None:
    gateway, case_id = opened
    gateway.send(_mail("second report", sender="reporter@example.net"))
    gateway.wait_idle()
    other = next(c["case_id"] for c in gateway.store.list_cases() if c["case_id"] != case_id)
    gateway.send(_mail(f"Re: {case_id} and {other}", body=f"see {other}"))
    gateway.wait_idle()
    messages = gateway.store.show_case(case_id)["messages"]
    assert messages[-1]["thread_signal"] == "subject"
    assert f"cross_reference:{other}" in messages[-1]["flags"]


def test_stranger_quoting_a_case_id_is_stored_but_flagged_unverified(opened) -> None:
    gateway, case_id = opened
    gateway.send(
        _mail(f"Re: [{case_id}] I want in", sender="mallory@evil.example"), mail_from="mallory@evil.example"
    )
    gateway.wait_idle()
    case = _case(gateway)
    assert case["reporter"] == "reporter@example.net"
    assert "unverified_sender" in case["messages"][1]["flags"]
    assert "unverified_sender" in case["flags"]


def test_reporter_replying_by_subject_is_not_flagged(opened) -> None:
    gateway, case_id = opened
    gateway.send(_mail(f"Re: [{case_id}]"))
    gateway.wait_idle()
    assert "unverified_sender" not in _case(gateway)["messages"][1]["flags"]


def test_a_sender_who_replied_by_header_is_still_not_a_participant(opened) -> None:
    # Issue 15 reversed issue 5 here: a Message-ID can be copied as easily as a subject, so a header match
    # from a stranger is flagged too, and the stranger does not become a participant by it.
    gateway, case_id = opened
    colleague = "colleague@example.net"
    gateway.send(
        _mail("fwd", sender=colleague, headers=("In-Reply-To: <report-1@mail.example.net>",)),
        mail_from=colleague,
    )
    gateway.send(_mail(f"Re: [{case_id}] one more", sender=colleague), mail_from=colleague)
    gateway.wait_idle()
    assert ["unverified_sender" in m["flags"] for m in _case(gateway)["messages"]] == [False, True, True]


def test_same_bytes_delivered_twice_are_stored_once(gateway: RunningGateway) -> None:
    assert gateway.send(REPORT)[0] == 250
    assert gateway.send(REPORT)[0] == 250  # the first 250 "never arrived"; the MTA resends
    gateway.wait_idle()
    assert len(_case(gateway)["messages"]) == 1


def test_same_message_id_with_other_bytes_is_a_new_flagged_message(gateway: RunningGateway) -> None:
    gateway.send(_mail("first", message_id="fixed-id"))
    gateway.send(_mail("first, edited", message_id="fixed-id"))
    gateway.wait_idle()
    cases = gateway.store.list_cases()
    flags = [m["flags"] for c in cases for m in gateway.store.show_case(c["case_id"])["messages"]]
    assert sorted("duplicate_message_id" in f for f in flags) == [False, True]


def test_message_without_message_id_is_keyed_by_its_bytes(gateway: RunningGateway) -> None:
    raw = b"From: a@example.net\r\nSubject: no id\r\n\r\nbody\r\n"
    gateway.send(raw)
    gateway.send(raw)
    gateway.send(raw.replace(b"body", b"other body"))
    gateway.wait_idle()
    assert sum(c["messages"] for c in gateway.store.list_cases()) == 2


def test_a_message_to_a_closed_case_reopens_it_and_says_which(opened) -> None:
    gateway, case_id = opened
    assert gateway.store.set_status(case_id, "closed", "by test")
    gateway.send(_mail(f"Re: [{case_id}] it is back online"))
    gateway.wait_idle()
    case = _case(gateway)
    assert case["status"] == "open"
    assert [e["kind"] for e in case["events"]] == ["closed", "reopened"]
    assert "inbox entry" in case["events"][-1]["detail"]


def test_bounce_of_a_confirmation_threads_as_automatic_and_marks_it_bounced(
    gateway_factory, store_url: str, smtp_sink: Sink
) -> None:
    gateway = gateway_factory(store_url, confirm={"smarthost": smtp_sink.address})
    gateway.send(REPORT)
    [(_, _, confirmation)] = smtp_sink.wait_for(1)
    gateway.wait_outbox(lambda rows: rows and rows[0]["state"] == "sent")
    dsn = _template("dsn_of_confirmation_template.eml", original=confirmation.decode())
    gateway.send(dsn, mail_from="")
    gateway.wait_idle()
    case = _case(gateway)
    assert [(m["kind"], m["thread_signal"]) for m in case["messages"]] == [
        ("report", "none"),
        ("automatic", "header"),
    ]
    rows = gateway.store.list_outbox()
    assert [r["state"] for r in rows if r["kind"] == "confirmation"] == ["bounced"]
    assert len(smtp_sink.handler.received) == 1  # nothing is sent to a bounce


def test_forged_reply_token_is_treated_as_no_token(opened) -> None:
    gateway, case_id = opened
    forged = f"abuse+{case_id.lower()}.aaaaaaaaaaaaaaaa@example.org"
    gateway.send(_mail("hello"), rcpt_tos=[forged])
    gateway.wait_idle()
    assert len(gateway.store.list_cases()) == 2


def test_copies_and_replies_inside_one_processing_batch_thread_like_separate_ones(
    tmp_path: Path, cli_config: Path
) -> None:
    # A backlog import processes many messages in one transaction, and the redelivery check is asked for the
    # whole batch at once: a copy, a byte-identical message without Message-ID, a reply by header and a
    # reused Message-ID that arrive in the same batch as the original must come out as if sent one by one.
    report = _mail("Phishing at our bank", message_id="orig-1")
    reply = _mail(
        "Re: Phishing", body="Password: hunter2", headers=("In-Reply-To: <orig-1@mail.example.net>",)
    )
    no_id = b"From: a@example.net\r\nSubject: no id\r\n\r\nbody\r\n"
    edited = _mail("Phishing at our bank, edited", message_id="orig-1")
    backlog = tmp_path / "backlog"
    backlog.mkdir()
    for n, raw in enumerate([report, report, reply, no_id, no_id, edited]):
        (backlog / f"{n}.eml").write_bytes(raw)
    # The envelope sender decides participation (issue 15): a backlog import names it with --sender.
    run_cli(cli_config, "ingest", "--sender", "reporter@example.net", str(backlog))

    cases = json.loads(run_cli(cli_config, "cases", "list", "--json"))
    shown = {
        c["case_id"]: json.loads(run_cli(cli_config, "cases", "show", c["case_id"], "--json")) for c in cases
    }
    by_first_subject = {case["messages"][0]["subject"]: case for case in shown.values()}
    assert sorted(by_first_subject) == ["Phishing at our bank", "Phishing at our bank, edited", "no id"]
    # The copy is stored once, the reply joins by header; the re-used Message-ID with other bytes is kept
    # and flagged (as in test_same_message_id_with_other_bytes_is_a_new_flagged_message).
    first = by_first_subject["Phishing at our bank"]["messages"]
    assert [(m["thread_signal"], m["flags"]) for m in first] == [("none", []), ("header", [])]
    assert by_first_subject["Phishing at our bank, edited"]["messages"][0]["flags"] == [
        "duplicate_message_id"
    ]
    assert len(by_first_subject["no id"]["messages"]) == 1
