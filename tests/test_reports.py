"""parse_machine_report over fixtures written from RFC 5965/6591, X-ARF 0.2 and XARF v3/v4, and the corpus."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parsers.reports import _flat_yaml, is_csam, parse_machine_report, report_type

DATA = Path(__file__).with_name("data")
CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus"


def parse(name: str):
    report = parse_machine_report((DATA / name).read_bytes())
    assert report is not None, name
    return report


def test_arf_mailbox_provider_keeps_every_field_case_insensitively() -> None:
    report = parse("arf_mailbox_provider.eml")
    assert report.format == "arf"
    assert report.category == "abuse"
    assert report.source_ip == "198.51.100.23"  # sent as lower-case `source-ip:`
    # RFC 5965 §3.2 repeatable fields are lists; non-standard fields seen in the wild are kept.
    assert report.fields["reported-domain"] == ["news.shop.example", "Shop.Example."]
    assert report.fields["original-rcpt-to"] == ["<redacted@mailprovider.example>"]
    assert report.fields["received-date"] == "Tue, 14 May 2024 09:01:02 +0000"
    assert report.fields["abuse-type"] == "complaint"
    assert report.fields["redacted-address"] == "redacted@mailprovider.example"
    assert report.fields["authentication-results"] == [
        "mx.mailprovider.example; spf=pass smtp.mailfrom=news.shop.example; dkim=pass header.d=shop.example"
    ]
    assert report.domains == ("news.shop.example", "shop.example")
    assert report.urls == ("http://shop.example/unsubscribe?u=8812", "http://tracker.shop.example/o/8812")
    headers = dict(report.original_headers)
    assert headers["Message-ID"] == "<8812.20240514090058@news.shop.example>"
    assert headers["Subject"] == "Großer Sommerschlussverkauf"  # RFC 2047 decoded
    assert headers["From"].startswith("Schöner Shop")


def test_arf_rfc6591_auth_failure_with_rfc822_headers_part() -> None:
    report = parse("arf_auth_failure_rfc6591.eml")
    assert (report.category, report.source_ip) == ("auth-failure", "192.0.2.1")
    assert report.fields["auth-failure"] == "signature"
    assert report.fields["dkim-selector"] == "foo"
    assert report.domains == ("example.net",)
    assert dict(report.original_headers)["Message-ID"] == "<8787KJKJ3K4J3K4J3K4J3.mail@example.net>"
    assert dict(report.original_headers)["DKIM-Signature"].startswith("v=1; c=count/0;")


def test_arf_base64_feedback_part_inside_multipart_mixed() -> None:
    report = parse("arf_base64_in_mixed.eml")
    assert report.category == "fraud"
    assert report.source_ip == "2001:db8::25"  # brackets removed, canonical form
    assert report.fields["original-rcpt-to"] == ["victim@provider.example", "other@provider.example"]
    assert report.urls == ("http://phish.example/login",)
    assert dict(report.original_headers)["Subject"] == "Verify your account"


def test_x_arf_0_2_yaml() -> None:
    report = parse("xarf_0_2_yaml_login_attack.eml")
    assert report.format == "x-arf"
    assert report.category == "abuse"
    assert report.source_ip == "203.0.113.77"
    assert report_type(report) == "login-attack"
    assert report.fields["user-agent"] == "fail2ban-xarf 1.0"
    assert report.fields["date"] == "Thu, 12 Jan 2012 10:00:00 +0100"
    assert report.fields["port"] == "22"
    assert report.fields["occurrences"] == "12"  # trailing YAML comment dropped
    assert report.fields["tlp"] is None
    assert not is_csam(report)


@pytest.mark.parametrize("name", ["xarf_v4_content_csam_attachment.eml", "xarf_v4_content_csam_body.eml"])
def test_xarf_v4_csam_as_attachment_and_as_body(name: str) -> None:
    report = parse(name)
    assert (report.format, report.category) == ("xarf", "content")
    assert report.fields["type"] == "csam"
    assert report_type(report) == "csam"
    assert is_csam(report)
    assert report.source_ip == "192.0.2.66"
    assert report.urls == ("https://img-host.example/gallery/88",)


@pytest.mark.parametrize(
    ("name", "category", "kind", "source_ip"),
    [
        ("xarf_v4_messaging_spam_octet.eml", "messaging", "spam", "198.51.100.99"),
        ("xarf_v4_connection_ddos_json.eml", "connection", "ddos", "203.0.113.200"),
        ("xarf_v4_content_phishing_json.eml", "content", "phishing", None),
    ],
)
def test_xarf_v4_categories(name: str, category: str, kind: str, source_ip: str | None) -> None:
    report = parse(name)
    assert (report.category, report_type(report), report.source_ip) == (category, kind, source_ip)
    assert not is_csam(report)


def test_xarf_v4_url_source_identifier_is_a_url() -> None:
    report = parse("xarf_v4_content_phishing_json.eml")
    assert report.urls == ("https://login.bank.example.phish.example/secure",)


def test_xarf_v3_child_abuse_is_csam() -> None:
    report = parse("xarf_v3_childabuse_body.eml")
    assert (report.format, report.category, report.source_ip) == ("xarf", "content", "192.0.2.55")
    assert report_type(report) == "childabuse"
    assert is_csam(report)


@pytest.mark.parametrize(
    "name",
    [
        "person_plain_report.eml",
        "person_spamcop_report.eml",
        "person_forwarded_arf.eml",  # an ARF inside message/rfc822 is a person's forward, not a report
        "dsn_postfix.eml",
        "dsn_exim.eml",
        "dsn_exchange.eml",
        "ooo_exchange.eml",
        "ooo_gmail.eml",
    ],
)
def test_not_machine_reports(name: str) -> None:
    assert parse_machine_report((DATA / name).read_bytes()) is None


def test_json_that_is_not_xarf_is_ignored() -> None:
    raw = b'Content-Type: application/json\r\n\r\n{"xarf_version": "4.0.0", "category": "content"}'
    assert parse_machine_report(raw) is None
    assert parse_machine_report(b"Content-Type: text/plain\r\n\r\n{not json") is None


def test_x_arf_header_without_yaml_is_not_a_report() -> None:
    assert parse_machine_report(b"X-ARF: yes\r\nContent-Type: text/plain\r\n\r\nhello there\r\n") is None


def test_flat_yaml_is_safe_and_flat() -> None:
    fields = _flat_yaml(
        "---\nCategory: abuse\nSource: !!python/object:os.system 'x'\nList:\n  - a\nQuoted: \"a\\tb\"\n"
        "Single: 'it''s'\nNo: no\n"
    )
    assert fields["category"] == "abuse"
    assert fields["source"] == "!!python/object:os.system 'x'"  # a tag is text here, never evaluated
    assert fields["list"] is None
    assert fields["quoted"] == "a\tb"
    assert fields["single"] == "it's"
    assert fields["no"] == "no"  # no YAML 1.1 boolean coercion


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2000))
def test_never_raises_on_arbitrary_bytes(raw: bytes) -> None:
    parse_machine_report(raw)


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=500))
def test_never_raises_on_report_shaped_text(body: str) -> None:
    raw = (
        "Content-Type: multipart/report; report-type=feedback-report; boundary=b\r\nX-ARF: yes\r\n\r\n"
        f"--b\r\nContent-Type: message/feedback-report\r\n\r\n{body}\r\n"
        f"--b\r\nContent-Type: application/json\r\n\r\n{{{body}\r\n--b--\r\n"
    ).encode("utf-8", "surrogateescape")
    parse_machine_report(raw)


def _corpus_with_report_type(report_type_value: str) -> list[Path]:
    from email.parser import BytesHeaderParser
    from email.policy import compat32

    if not CORPUS.is_dir():
        return []
    found = []
    for path in sorted(p for p in CORPUS.rglob("*") if p.is_file()):
        raw = path.read_bytes()
        if b"report-type" not in raw.lower():
            continue
        msg = BytesHeaderParser(policy=compat32).parsebytes(raw)
        if str(msg.get_param("report-type", "")).lower() == report_type_value:
            found.append(path)
    return found


def test_corpus_arf_reports_parse_with_a_category() -> None:
    files = _corpus_with_report_type("feedback-report")
    if not files:
        pytest.skip("shared corpus absent")
    for path in files:
        report = parse_machine_report(path.read_bytes())
        assert report is not None and report.format == "arf", path
        assert report.category, path
        assert report.source_ip, path
        assert report.original_headers, path


def test_corpus_netease_base64_arf_in_multipart_mixed() -> None:
    path = CORPUS / "parsedmarc" / "samples" / "failure" / "[Netease DMARC Failure Report] Rent Reminder.eml"
    if not path.is_file():
        pytest.skip("shared corpus absent")
    report = parse_machine_report(path.read_bytes())
    assert report is not None
    assert (report.category, report.source_ip) == ("auth-failure", "167.89.69.24")
    assert report.domains == ("cardinal.com",)


def test_corpus_never_raises() -> None:
    if not CORPUS.is_dir():
        pytest.skip("shared corpus absent")
    for path in CORPUS.rglob("*"):
        if path.is_file():
            parse_machine_report(path.read_bytes())
