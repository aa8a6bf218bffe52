"""Behaviour of `parsers.message.parse_message`: decoding, body/attachment split, limits, and never raising.

Fixtures are byte-exact `.eml` files under tests/data/ (prefix `parse_`); hostile inputs that are large or
generated are built in the tests themselves.
"""

from __future__ import annotations

import hashlib
import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from parsers.message import DEFAULT_LIMITS, ParseLimits, parse_message
from parsers.types import ParsedMessage

DATA = Path(__file__).resolve().parent / "data"
CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus"
PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"


def load(name: str) -> bytes:
    """Fixture bytes exactly as stored: line endings are part of what each fixture pins."""
    return (DATA / f"parse_{name}.eml").read_bytes()


def parse(name: str) -> ParsedMessage:
    return parse_message(load(name))


def has_defect(parsed: ParsedMessage, prefix: str) -> bool:
    return any(defect.startswith(prefix) for defect in parsed.defects)


def nested_multipart(depth: int) -> bytes:
    lines = [b"From: a@example.org", b"Content-Type: multipart/mixed; boundary=b0", b""]
    for level in range(1, depth):
        lines += [b"--b%d" % (level - 1), b"Content-Type: multipart/mixed; boundary=b%d" % level, b""]
    lines += [b"--b%d" % (depth - 1), b"Content-Type: text/plain", b"", b"deep text", b""]
    return b"\r\n".join(lines)


# ------------------------------------------------------------------------------------- ordinary mail


def test_plain_report_yields_addresses_ids_date_and_body() -> None:
    parsed = parse("plain_report")
    assert parsed.subject == "Phishing site at bad.example"
    assert parsed.from_addr == "rita.reporter@reporter.example"
    assert parsed.from_name == "Rita Reporter"
    assert parsed.to == ("abuse@desk.example", "second@desk.example")
    assert parsed.cc == ("noc@reporter.example",)
    assert parsed.reply_to == ("replies@reporter.example",)
    assert parsed.message_id == "report-1@reporter.example"
    assert parsed.in_reply_to == ("case-9@desk.example",)
    assert parsed.references == ("root@desk.example", "case-9@desk.example")
    assert parsed.date == datetime(2025, 3, 3, 9, 59, tzinfo=timezone(timedelta(hours=1)))
    assert parsed.content_type == "text/plain"
    assert "https://bad.example/login is phishing" in parsed.text
    assert "\r" not in parsed.text
    assert parsed.html_text is None
    assert parsed.attachments == ()
    assert parsed.defects == ()


def test_plain_report_keeps_headers_in_order_and_received_newest_first() -> None:
    parsed = parse("plain_report")
    assert [name for name, _ in parsed.headers][:4] == ["Received", "Received", "Received", "From"]
    assert parsed.header("subject") == "Phishing site at bad.example"
    assert len(parsed.received) == 3
    assert parsed.received[0].startswith("from relay1.desk.example")
    assert all("\n" not in value and "\r" not in value for _, value in parsed.headers)


def test_sender_ip_is_first_public_hop_not_internal_relay_or_forged_older_header() -> None:
    assert parse("plain_report").sender_ip == "93.184.216.34"


@pytest.mark.parametrize(
    ("received", "expected"),
    [
        ("from helo.example (rdns.example [8.8.4.4]) by mx.desk.example", "8.8.4.4"),
        ("from [8.8.4.4] (helo=claims.example) by mx.desk.example with esmtp", "8.8.4.4"),
        ("from [1.1.1.1] by mx.desk.example", None),  # a bare HELO literal is the sender's word
        ("from x (y [10.1.2.3]) by mx.desk.example", None),
        ("from host.example (host.example [IPv6:2001:4860:4860::8888]) by mx", "2001:4860:4860::8888"),
        ("by mx.desk.example with HTTP", None),
        ("from nearby.example (nearby.example [9.9.9.9]) by mx.desk.example", "9.9.9.9"),
    ],
)
def test_sender_ip_reads_the_mta_recorded_address_not_the_helo(received: str, expected: str | None) -> None:
    raw = f"Received: {received}\r\nFrom: a@example.org\r\n\r\nbody\r\n".encode()
    assert parse_message(raw).sender_ip == expected


def test_html_only_report_shows_link_target_beside_anchor() -> None:
    parsed = parse("html_only")
    assert "click here (https://bad.example/login)" in parsed.text
    assert parsed.text == parsed.html_text
    assert parsed.html_links == (
        "https://bad.example/login",
        "https://bad.example/same",
        "mailto:owner@bad.example",
    )


def test_html_link_whose_text_is_its_target_is_not_repeated() -> None:
    text = parse("html_only").text
    assert "https://bad.example/same" in text
    assert "https://bad.example/same (https://bad.example/same)" not in text


def test_html_drops_script_and_style_decodes_entities_and_breaks_blocks() -> None:
    text = parse("html_only").text
    assert "alert" not in text and "color" not in text
    assert "& this:" in text and "Café" in text
    assert "\n" in text


def test_multipart_alternative_gives_plain_text_and_html_as_text() -> None:
    parsed = parse("alternative")
    assert parsed.content_type == "multipart/alternative"
    assert parsed.text == "Plain café text"
    assert parsed.html_text == "HTML text (https://bad.example/x)"
    assert parsed.html_links == ("https://bad.example/x",)
    assert parsed.attachments == ()


def test_attachment_is_hashed_and_named_from_rfc2231_filename() -> None:
    parsed = parse("attachment_pdf")
    assert parsed.text == "See the attached invoice the phisher sent."
    pdf, png = parsed.attachments
    assert pdf.filename == "Rechnung über.pdf"
    assert pdf.content_type == "application/pdf"
    assert pdf.size == len(PDF)
    assert pdf.sha256 == hashlib.sha256(PDF).hexdigest()
    assert png.content_type == "image/png"  # inline, but not text: still a file to hash


# ---------------------------------------------------------------------------------------- headers


def test_encoded_subject_joins_an_id_split_across_two_encoded_words() -> None:
    parsed = parse("encoded_subject")
    assert parsed.subject == "Re: Fall ABU-7K3M-QX2P gelöst"
    assert parsed.from_name == "Jörg"
    assert parsed.defects == ()


def test_folded_subject_is_unfolded() -> None:
    assert parse("folded_subject").subject == "a long subject that was folded\tacross three lines"


def test_undeclared_8bit_subject_is_decoded_and_flagged() -> None:
    parsed = parse("8bit_subject")
    assert parsed.subject == "Grüße vom Abuse-Team"
    assert parsed.header("X-Legacy") == "café"  # not UTF-8: read as latin-1, every byte kept
    assert "undeclared_8bit_header: subject" in parsed.defects
    assert "undeclared_8bit_header: x-legacy" in parsed.defects


def test_malformed_encoded_words_stay_literal_and_are_flagged() -> None:
    parsed = parse("malformed_encoded_word")
    assert parsed.subject == "=?utf-8?q?broken and =?utf-8?b?!!!?= tail"
    assert "bad_header: subject" in parsed.defects


def test_unknown_charset_is_read_as_utf8_and_flagged() -> None:
    parsed = parse("unknown_charset")
    assert parsed.subject == "café"
    assert parsed.text == "café body\n"
    assert "unknown_charset: x-unknown" in parsed.defects


def test_bad_date_gives_none_and_defect() -> None:
    parsed = parse("bad_date")
    assert parsed.date is None
    assert "bad_date" in parsed.defects


def test_date_without_zone_information_is_aware_utc() -> None:
    parsed = parse_message(b"Date: Mon, 03 Mar 2025 09:59:00 -0000\r\n\r\nx")
    assert parsed.date == datetime(2025, 3, 3, 9, 59, tzinfo=UTC)


def test_encoded_word_cannot_smuggle_an_address_into_from() -> None:
    raw = b"From: =?utf-8?q?x_=3Cevil@evil.example=3E?= <real@example.org>\r\n\r\nbody"
    assert parse_message(raw).from_addr == "real@example.org"


def test_unparseable_address_list_falls_back_without_raising() -> None:
    parsed = parse_message(b"From: " + b"(" * 400 + b"a@example.org\r\nTo: <<<>>>,,;;\r\n\r\nbody")
    assert isinstance(parsed, ParsedMessage)
    assert not has_defect(parsed, "parse_error")


# ------------------------------------------------------------------------------- forwarded evidence


def test_forwarded_rfc822_message_is_an_attachment_not_body_text() -> None:
    parsed = parse("rfc822_attachment")
    assert parsed.text == "This spam arrived, see attached."
    assert "SPAM BODY TEXT" not in parsed.text
    (forwarded,) = parsed.attachments
    assert forwarded.content_type == "message/rfc822"
    assert forwarded.size > 0 and len(forwarded.sha256) == 64


def test_arf_report_keeps_feedback_report_and_original_as_attachments() -> None:
    parsed = parse("arf_report")
    assert parsed.content_type == "multipart/report"
    assert parsed.text.startswith("This is an email abuse report")
    assert [a.content_type for a in parsed.attachments] == ["message/feedback-report", "message/rfc822"]
    assert "Spam Spam Spam" not in parsed.text


# ------------------------------------------------------------------------------------- hostile input


def test_junk_bytes_without_headers_are_flagged_and_kept_as_text() -> None:
    parsed = parse_message(b"\x00\xff garbage")
    assert "no_headers" in parsed.defects
    assert "garbage" in parsed.text
    assert "\x00" not in parsed.text


@pytest.mark.parametrize("raw", [b"", b"\r\n\r\n", b"   "])
def test_empty_message_is_flagged(raw: bytes) -> None:
    parsed = parse_message(raw)
    assert parsed.defects == ("empty_message",)
    assert parsed.text == ""


def test_nul_bytes_never_reach_the_output() -> None:
    parsed = parse_message(b"Subject: a\x00b\r\nFrom: x\x00@example.org\r\n\r\nbody\x00text\r\n")
    assert parsed.subject == "a\ufffdb"
    assert parsed.text == "body\ufffdtext\n"
    assert "nul_bytes" in parsed.defects


def test_bare_lf_line_endings_parse_like_crlf() -> None:
    parsed = parse("bare_lf")
    assert parsed.subject == "bare lf"
    assert parsed.from_addr == "reporter@example.org"
    assert parsed.text == "line one\nline two\n"


def test_bare_cr_line_endings_parse_like_crlf() -> None:
    parsed = parse("bare_cr")
    assert parsed.subject == "bare cr"
    assert parsed.from_addr == "reporter@example.org"
    assert parsed.text == "line one\nline two\n"


def test_ten_megabyte_single_line_body_parses() -> None:
    parsed = parse_message(b"Subject: big\r\n\r\n" + b"A" * 10_000_000)
    assert parsed.subject == "big"
    assert len(parsed.text) == 10_000_000


def test_header_of_100000_folded_lines_stays_within_limits_and_time() -> None:
    raw = b"From: a@example.org\r\nSubject: start\r\n" + b" x\r\n" * 100_000 + b"\r\nbody\r\n"
    started = time.perf_counter()
    parsed = parse_message(raw)
    assert time.perf_counter() - started < 5
    assert parsed.subject.startswith("start x x")
    assert parsed.text == "body\n"


def test_header_block_over_the_byte_limit_is_cut_and_flagged() -> None:
    raw = b"From: a@example.org\r\nSubject: start\r\n" + b" x\r\n" * 600_000 + b"\r\nbody\r\n"
    parsed = parse_message(raw)
    assert has_defect(parsed, "too_complex")
    assert parsed.from_addr == "a@example.org"
    assert parsed.text == "body\n"


def test_too_many_headers_are_cut_and_flagged() -> None:
    raw = b"From: a@example.org\r\n" + b"X-N: 1\r\n" * 5000 + b"\r\nbody"
    parsed = parse_message(raw, ParseLimits(max_headers=100))
    assert len(parsed.headers) == 100
    assert has_defect(parsed, "too_complex")
    assert parsed.text == "body"


def test_sixty_deep_nested_multipart_is_too_complex() -> None:
    parsed = parse_message(nested_multipart(60))
    assert has_defect(parsed, "too_complex")
    assert parsed.content_type == "multipart/mixed"


def test_nesting_beyond_the_recursion_limit_does_not_raise() -> None:
    parsed = parse_message(nested_multipart(1500))
    assert has_defect(parsed, "too_complex")
    assert not has_defect(parsed, "parse_error")


def test_two_thousand_parts_are_too_complex() -> None:
    lines = [b"Content-Type: multipart/mixed; boundary=m", b""]
    for index in range(2000):
        lines += [b"--m", b"Content-Type: application/octet-stream", b"", b"part %d" % index]
    raw = b"\r\n".join([*lines, b"--m--", b""])
    parsed = parse_message(raw)
    assert has_defect(parsed, "too_complex")
    assert 0 < len(parsed.attachments) <= DEFAULT_LIMITS.max_parts


def test_unknown_marked_section_in_html_does_not_stop_conversion() -> None:
    raw = b"Content-Type: text/html\r\n\r\n<p>before</p><![foo bar]><p>after <a href='https://x.example'>x</a></p>"
    parsed = parse_message(raw)
    assert "before" in parsed.text and "after x (https://x.example)" in parsed.text


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2000))
def test_arbitrary_bytes_never_raise(data: bytes) -> None:
    assert isinstance(parse_message(data), ParsedMessage)


_PREFIXES = [
    b"Subject: ",
    b"From: ",
    b"To: ",
    b"Date: ",
    b"Received: from ",
    b"References: ",
    b"Content-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\nContent-Type: ",
    b"Content-Type: text/html; charset=",
    b"Content-Disposition: attachment; filename*=",
    b"Subject: =?utf-8?b?",
]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(_PREFIXES), st.binary(max_size=1500))
def test_header_prefixed_arbitrary_bytes_never_raise(prefix: bytes, data: bytes) -> None:
    parsed = parse_message(prefix + data)
    assert not has_defect(parsed, "parse_error")


# ------------------------------------------------------------------------------------ shared corpus


def _corpus_files() -> list[Path]:
    return sorted(p for p in CORPUS.rglob("*") if p.is_file()) if CORPUS.is_dir() else []


@pytest.mark.skipif(not CORPUS.is_dir(), reason="shared corpus not present")
def test_every_corpus_message_parses_without_raising() -> None:
    files = _corpus_files()
    assert files
    failures = [p.name for p in files if has_defect(parse_message(p.read_bytes()), "parse_error")]
    assert failures == []
