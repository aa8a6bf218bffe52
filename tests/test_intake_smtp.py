"""The intake path end to end (issue 2): a real SMTP conversation over a socket, a real store."""

from __future__ import annotations

import base64
import hashlib
import smtplib
import uuid

import pytest

from tests.conftest import RunningGateway, load_eml

REPLY_PREFIXES = ["Re:", "AW:", "SV: VS:", "回复：", "RE: [EXTERNAL]", "Re: Re: Fwd:", "答复: 转发:", "Antw:"]


def _reply(subject: str, template: str = "reply_template.eml") -> bytes:
    raw = load_eml(template).decode()
    return raw.replace("{subject}", subject).replace("{message_id}", uuid.uuid4().hex).encode()


def _open_case(gateway: RunningGateway) -> str:
    code, _ = gateway.send(load_eml("report_phishing.eml"))
    assert code == 250
    gateway.wait_idle()
    cases = gateway.store.list_cases()
    assert len(cases) == 1
    return str(cases[0]["case_id"])


def _only_case(gateway: RunningGateway) -> dict:
    cases = gateway.store.list_cases()
    assert len(cases) == 1, cases
    return gateway.store.show_case(cases[0]["case_id"])


def test_new_report_becomes_a_case_with_its_raw_bytes(gateway: RunningGateway) -> None:
    raw = load_eml("report_phishing.eml")
    code, reply = gateway.send(raw)
    assert code == 250 and reply.startswith(b"2.0.0")
    gateway.wait_idle()
    case = _only_case(gateway)
    assert case["status"] == "open"
    assert case["reporter"] == "reporter@example.net"
    [message] = case["messages"]
    assert message["kind"] == "report"
    assert message["sha256"] == hashlib.sha256(raw).hexdigest()
    assert message["message_id"] == "report-1@mail.example.net"
    assert gateway.store.raw_message(case["case_id"], 1) == raw


@pytest.mark.parametrize("prefix", REPLY_PREFIXES)
def test_reply_with_localized_prefix_threads_into_case(gateway: RunningGateway, prefix: str) -> None:
    case_id = _open_case(gateway)
    code, _ = gateway.send(_reply(f"{prefix} [{case_id}] We received your report"))
    assert code == 250
    gateway.wait_idle()
    case = _only_case(gateway)
    assert [m["kind"] for m in case["messages"]] == ["report", "amendment"]
    assert case["messages"][1]["thread_signal"] == "subject"


@pytest.mark.parametrize(
    "mangle",
    [
        pytest.param(lambda cid: cid.lower(), id="lower-case"),
        pytest.param(lambda cid: cid.replace("-", " "), id="spaces"),
        pytest.param(lambda cid: cid.replace("-", "\u2013"), id="en-dash"),
        pytest.param(lambda cid: f"({cid})", id="parentheses"),
    ],
)
def test_reply_with_mangled_case_id_threads_into_case(gateway: RunningGateway, mangle) -> None:
    case_id = _open_case(gateway)
    gateway.send(_reply(f"Re: Phishing report {mangle(case_id)}"))
    gateway.wait_idle()
    assert len(_only_case(gateway)["messages"]) == 2


def test_reply_with_case_id_split_across_encoded_words_threads_into_case(gateway: RunningGateway) -> None:
    case_id = _open_case(gateway)
    head, tail = f"AW: [{case_id[:6]}", f"{case_id[6:]}] Ihr Bericht"
    head_b64, tail_b64 = (base64.b64encode(part.encode()).decode() for part in (head, tail))
    encoded = f"=?UTF-8?B?{head_b64}?=\r\n =?UTF-8?B?{tail_b64}?="
    gateway.send(_reply(encoded))
    gateway.wait_idle()
    assert len(_only_case(gateway)["messages"]) == 2


def test_mistyped_case_id_opens_a_new_case_and_records_the_reference(gateway: RunningGateway) -> None:
    case_id = _open_case(gateway)
    last = case_id[-1]
    typo = case_id[:-1] + ("0" if last != "0" else "1")
    gateway.send(_reply(f"Re: [{typo}] follow-up"))
    gateway.wait_idle()
    assert len(gateway.store.list_cases()) == 2


@pytest.mark.parametrize(
    "subject",
    [
        "[Ticket#4411] spam from your network",
        "[CSIRT#2015092310000001] phishing",
        "Issue 9876541: open relay",
    ],
)
def test_foreign_ticket_numbers_open_a_new_case(gateway: RunningGateway, subject: str) -> None:
    _open_case(gateway)
    gateway.send(_reply(subject, "report_foreign_subject_template.eml"))
    gateway.wait_idle()
    assert len(gateway.store.list_cases()) == 2


def test_unknown_recipient_is_refused_at_rcpt_with_550(gateway: RunningGateway) -> None:
    with smtplib.SMTP("127.0.0.1", gateway.port, timeout=10) as client:
        client.ehlo("client.test")
        client.mail("reporter@example.net")
        code, reply = client.rcpt("postmaster@example.org")
    assert (code, reply[:5]) == (550, b"5.1.1")


def test_plus_tagged_address_is_accepted(gateway: RunningGateway) -> None:
    code, _ = gateway.send(load_eml("report_phishing.eml"), rcpt_tos=["abuse+anything@example.org"])
    assert code == 250


def test_too_many_recipients_get_452(gateway_factory, store_url: str) -> None:
    gateway = gateway_factory(store_url, smtp={"max_recipients": 2})
    with smtplib.SMTP("127.0.0.1", gateway.port, timeout=10) as client:
        client.ehlo("client.test")
        client.mail("reporter@example.net")
        assert client.rcpt("abuse@example.org")[0] == 250
        assert client.rcpt("abuse+a@example.org")[0] == 250
        code, reply = client.rcpt("abuse+b@example.org")
    assert (code, reply[:5]) == (452, b"4.5.3")


def test_oversized_message_is_refused_with_552(gateway_factory, store_url: str) -> None:
    gateway = gateway_factory(store_url, smtp={"max_message_bytes": 10_000})
    with smtplib.SMTP("127.0.0.1", gateway.port, timeout=10) as client:
        client.ehlo("client.test")
        assert client.has_extn("size") and client.esmtp_features["size"] == "10000"
        assert client.has_extn("smtputf8") and client.has_extn("8bitmime")
        client.mail("reporter@example.net")
        client.rcpt("abuse@example.org")
        code, reply = client.data(b"Subject: big\r\n\r\n" + b"x" * 20_000 + b"\r\n")
    assert (code, reply[:5]) == (552, b"5.3.4")
    with smtplib.SMTP("127.0.0.1", gateway.port, timeout=10) as client:
        client.ehlo("client.test")
        code, reply = client.mail("reporter@example.net", options=["SIZE=50000"])
    assert (code, reply[:5]) == (552, b"5.3.4")
    assert gateway.store.list_cases() == []


def test_junk_bytes_without_headers_are_stored_as_a_case(gateway: RunningGateway) -> None:
    raw = load_eml("junk_no_headers.eml")
    assert gateway.send(raw)[0] == 250
    gateway.wait_idle()
    case = _only_case(gateway)
    assert gateway.store.raw_message(case["case_id"], 1) == raw
    assert case["messages"][0]["defects"]


def test_eight_bit_and_utf8_envelope_are_accepted(gateway: RunningGateway) -> None:
    raw = "Subject: Grüße\r\nFrom: jörg@bücher.example\r\n\r\nÜberweisung an https://bücher.example/x\r\n".encode()
    with smtplib.SMTP("127.0.0.1", gateway.port, timeout=10) as client:
        client.ehlo("client.test")
        code, _ = client.mail("jörg@bücher.example", options=["SMTPUTF8", "BODY=8BITMIME"])
        assert code == 250
        client.rcpt("abuse@example.org")
        code, _ = client.data(raw)
    assert code == 250
    gateway.wait_idle()
    case = _only_case(gateway)
    assert gateway.store.raw_message(case["case_id"], 1) == raw


def test_parser_that_raises_still_yields_a_stored_case(gateway_factory, store_url: str) -> None:
    def broken_parser(raw: bytes):
        raise RuntimeError("parser bug")

    gateway = gateway_factory(store_url, parse=broken_parser)
    raw = load_eml("report_phishing.eml")
    assert gateway.send(raw)[0] == 250
    gateway.wait_idle(timeout=30)
    case = _only_case(gateway)
    [message] = case["messages"]
    assert "processing_failed" in message["flags"]
    assert message["defects"] == ["processing_failed: RuntimeError"]
    assert gateway.store.raw_message(case["case_id"], 1) == raw


def test_many_concurrent_sessions_are_all_stored(gateway: RunningGateway) -> None:
    from concurrent.futures import ThreadPoolExecutor

    raws = [_reply(f"report number {n}", "report_foreign_subject_template.eml") for n in range(40)]
    with ThreadPoolExecutor(max_workers=10) as pool:
        codes = list(pool.map(lambda raw: gateway.send(raw)[0], raws))
    assert codes == [250] * 40
    gateway.wait_idle()
    assert len(gateway.store.list_cases()) == 40
