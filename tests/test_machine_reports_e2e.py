"""Machine reports and automatic mail through the whole gateway (issue 6), and schema upgrades (issue 8)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from sqlalchemy import MetaData, insert, text

from storage import schema
from storage.engine import make_engine
from tests.conftest import RunningGateway, load_eml


def _fresh(raw: bytes) -> bytes:
    """The same report as if sent again later: only its outer Message-ID differs."""
    return raw.replace(b"Message-ID: <fbl-", f"Message-ID: <{uuid.uuid4().hex}-".encode(), 1)


def _views(gateway: RunningGateway) -> list[dict]:
    return [gateway.store.show_case(c["case_id"]) for c in gateway.store.list_cases()]


def test_arf_report_is_a_machine_report_with_its_fields_and_indicators(gateway: RunningGateway) -> None:
    gateway.send(load_eml("arf_mailbox_provider.eml"), mail_from="fbl@mailprovider.example")
    gateway.wait_idle()
    [case] = _views(gateway)
    [message] = case["messages"]
    assert (message["kind"], message["kind_rule"]) == ("machine_report", "arf")
    report = message["report"]
    assert report["format"] == "arf" and report["category"] == "abuse"
    assert report["source_ip"] == "198[.]51[.]100[.]23"  # shown escaped
    indicators = {(i["kind"], i["value"]) for i in case["indicators"]}
    assert ("ipv4", "198.51.100.23") in indicators
    assert ("domain", "news.shop.example") in indicators
    assert ("url", "http://tracker.shop.example/o/8812") in indicators


def test_machine_reports_about_one_source_group_into_one_case(gateway: RunningGateway) -> None:
    raw = load_eml("arf_mailbox_provider.eml")
    for _ in range(3):
        gateway.send(_fresh(raw), mail_from="fbl@mailprovider.example")
        gateway.wait_idle()
    gateway.send(load_eml("arf_auth_failure_rfc6591.eml"), mail_from="dmarc@receiver.example")
    gateway.send(load_eml("report_phishing.eml"))
    gateway.wait_idle()
    sizes = sorted((v["kind"], len(v["messages"])) for v in _views(gateway))
    assert sizes == [("machine_report", 1), ("machine_report", 3), ("report", 1)]
    grouped = next(v for v in _views(gateway) if len(v["messages"]) == 3)
    assert ["grouped" in m["flags"] for m in grouped["messages"]] == [False, True, True]


def test_grouping_window_zero_opens_a_case_per_report(gateway_factory, store_url: str) -> None:
    gateway = gateway_factory(store_url, intake={"machine_report_group_window": 0})
    raw = load_eml("arf_mailbox_provider.eml")
    gateway.send(_fresh(raw), mail_from="fbl@mailprovider.example")
    gateway.send(_fresh(raw), mail_from="fbl@mailprovider.example")
    gateway.wait_idle()
    assert len(gateway.store.list_cases()) == 2


def test_dsn_and_out_of_office_are_automatic(gateway: RunningGateway) -> None:
    gateway.send(load_eml("dsn_postfix.eml"), mail_from="")
    gateway.send(load_eml("ooo_exchange.eml"), mail_from="someone@corp.example")
    gateway.wait_idle()
    kinds = sorted(m["kind"] for v in _views(gateway) for m in v["messages"])
    assert kinds == ["automatic", "automatic"]


def test_spamcop_style_forward_keeps_the_forwarded_mail_as_evidence(gateway: RunningGateway) -> None:
    gateway.send(load_eml("person_spamcop_report.eml"), mail_from="1234567890@bounces.spamcop.example")
    gateway.wait_idle()
    [case] = _views(gateway)
    [message] = case["messages"]
    assert message["kind"] == "report"
    [evidence] = message["evidence"]
    assert evidence["source"] == "attachment"
    assert evidence["subject"]
    assert evidence["received"], "the Received chain of the forwarded spam"
    assert "[SpamCop" not in evidence["subject"]
    assert "SpamCop" in message["text"]  # the reporter's own text stays the report


def test_inline_forward_is_split_into_own_text_and_evidence(gateway: RunningGateway) -> None:
    raw = (
        b"From: rita@example.net\r\nTo: abuse@example.org\r\nSubject: Fwd: Your account\r\n"
        b"Message-ID: <inline-fwd@example.net>\r\n\r\n"
        b"This phish reached our staff.\r\n\r\n"
        b"---------- Forwarded message ---------\r\n"
        b"From: Bank Security <security@evil-bank.example.com>\r\n"
        b"Date: Mon, 23 Nov 2026 08:00:00 +0000\r\n"
        b"Subject: Your account is locked\r\n"
        b"To: staff@example.net\r\n\r\n"
        b"Unlock it at https://evil-bank.example.com/unlock now.\r\n"
    )
    gateway.send(raw)
    gateway.wait_idle()
    [case] = _views(gateway)
    [evidence] = case["messages"][0]["evidence"]
    assert evidence["source"] == "inline"
    assert evidence["from"] == "security[@]evil-bank[.]example[.]com"
    assert evidence["subject"] == "Your account is locked"
    assert "hxxps://evil-bank[.]example[.]com/unlock" in evidence["text"]
    assert ("domain", "evil-bank.example.com") in {(i["kind"], i["value"]) for i in case["indicators"]}


def test_upgrading_an_old_schema_with_data_in_it_loses_nothing(store_url: str) -> None:
    engine = make_engine(store_url)
    schema.upgrade(engine, "0001")
    old = MetaData()
    old.reflect(engine)  # the tables exactly as revision 0001 made them
    now = datetime.now(UTC)
    with engine.begin() as conn:
        inbox_id = conn.execute(
            insert(old.tables["inbox"]).values(
                intake_uid="u1",
                received_at=now,
                mail_from="r@example.net",
                rcpt_tos=["abuse@example.org"],
                size=5,
                sha256="abc",
                raw=b"hello",
                state="done",
                attempts=1,
            )
        ).inserted_primary_key[0]
        case_pk = conn.execute(
            insert(old.tables["cases"]).values(
                case_id="ABU-0000-0000",
                status="open",
                subject="s",
                escaped_subject="s",
                kind="report",
                hold=False,
                created_at=now,
                updated_at=now,
            )
        ).inserted_primary_key[0]
        conn.execute(
            insert(old.tables["messages"]).values(
                case_pk=case_pk,
                index=1,
                inbox_id=inbox_id,
                kind="report",
                kind_rule="default",
                envelope_sender="r@example.net",
                subject="s",
                escaped_subject="s",
                received_at=now,
                in_reply_to=[],
                references=[],
                sha256="abc",
                thread_signal="none",
                text="hello",
                escaped_text="hello",
                defects=[],
                flags=[],
            )
        )
    assert schema.needs_upgrade(engine)
    schema.upgrade(engine)
    assert not schema.needs_upgrade(engine)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT raw FROM inbox")).scalar_one() == b"hello"
        assert conn.execute(text("SELECT text, evidence FROM messages")).one() == ("hello", None)
    engine.dispose()
