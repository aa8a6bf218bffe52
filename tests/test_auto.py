"""classify / is_bulk_or_list over fixtures (DSNs from several MTAs, out-of-office, reports, people) and
the shared corpus."""

from __future__ import annotations

from email.header import decode_header, make_header
from email.message import Message
from email.parser import BytesParser
from email.policy import compat32
from email.utils import parseaddr
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parsers.auto import auto_reply_suppressed, classify, is_bulk_or_list
from parsers.reports import parse_machine_report
from parsers.types import Classification, ParsedMessage

DATA = Path(__file__).with_name("data")
CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus"


def _decoded(value: object) -> str:
    text = str(value).encode("ascii", "surrogateescape").decode("utf-8", "replace")  # raw 8-bit headers
    try:
        return str(make_header(decode_header(text)))
    except Exception:
        return str(value)


def _local_parse(raw: bytes) -> ParsedMessage:
    """Stand-in for parsers.message.parse_message while that module is being written: headers only."""
    msg: Message = BytesParser(policy=compat32).parsebytes(raw, headersonly=True)
    headers = tuple((name, " ".join(_decoded(value).split())) for name, value in msg.raw_items())
    first = {name.lower(): value for name, value in reversed(headers)}
    return ParsedMessage(
        subject=first.get("subject", ""),
        from_addr=parseaddr(first.get("from", ""))[1] or None,
        content_type=msg.get_content_type(),
        headers=headers,
    )


try:
    from parsers.message import parse_message as _parse_message

    _parse_message(b"Subject: probe\r\n\r\nbody\r\n")
    parse_message = _parse_message
except Exception:  # absent or still being written: fall back to the stdlib helper above
    parse_message = _local_parse


def classify_raw(raw: bytes, envelope_sender: str | None = None) -> Classification:
    return classify(parse_message(raw), envelope_sender, parse_machine_report(raw))


def classify_file(name: str, envelope_sender: str | None = None) -> Classification:
    return classify_raw((DATA / name).read_bytes(), envelope_sender)


def msg(headers: str, body: str = "Hello\r\n") -> bytes:
    return (headers.strip().replace("\n", "\r\n") + "\r\n\r\n" + body).encode()


@pytest.mark.parametrize(
    ("name", "kind", "rule"),
    [
        ("arf_mailbox_provider.eml", "machine_report", "arf"),  # carries Auto-Submitted: auto-generated
        ("arf_auth_failure_rfc6591.eml", "machine_report", "arf"),
        ("arf_base64_in_mixed.eml", "machine_report", "arf"),
        ("xarf_0_2_yaml_login_attack.eml", "machine_report", "x-arf"),
        ("xarf_v4_content_csam_attachment.eml", "machine_report", "xarf-json"),
        ("xarf_v4_content_csam_body.eml", "machine_report", "xarf-json"),
        ("xarf_v3_childabuse_body.eml", "machine_report", "xarf-json"),
        ("dsn_postfix.eml", "automatic", "dsn:report-type"),
        ("dsn_exchange.eml", "automatic", "dsn:report-type"),
        ("dsn_exim.eml", "automatic", "dsn:x-failed-recipients"),
        ("dsn_qmail.eml", "automatic", "dsn:mailer-daemon"),
        ("ooo_exchange.eml", "automatic", "auto-submitted:auto-generated"),
        ("ooo_exchange_legacy_de.eml", "automatic", "subject:ooo"),
        ("ooo_gmail.eml", "automatic", "auto-submitted:auto-replied"),
        ("person_plain_report.eml", "person", "default"),
        ("person_spamcop_report.eml", "person", "default"),
        ("person_forwarded_arf.eml", "person", "default"),
    ],
)
def test_fixtures(name: str, kind: str, rule: str) -> None:
    assert classify_file(name) == Classification(kind, rule)  # type: ignore[arg-type]


def test_a_person_stays_a_person_with_a_normal_envelope_sender() -> None:
    assert classify_file("person_plain_report.eml", "alice@victim.example").kind == "person"


@pytest.mark.parametrize("sender", ["", "<>", " <> "])
def test_null_envelope_sender_is_a_bounce(sender: str) -> None:
    raw = msg("From: someone@example.org\nSubject: Returned")
    assert classify_raw(raw, sender) == Classification("automatic", "dsn:null-sender")


def test_mailer_daemon_envelope_sender() -> None:
    raw = msg("From: someone@example.org\nSubject: hi")
    assert classify_raw(raw, "MAILER-DAEMON@mx.example.org").rule == "dsn:mailer-daemon"


def test_postmaster_needs_a_bounce_subject() -> None:
    """Postmasters write abuse reports too; only a delivery-failure subject makes postmaster@ a bounce."""
    human = msg("From: Postmaster <postmaster@isp.example>\nSubject: Your customer is spamming us")
    ndr = msg("From: postmaster@isp.example\nSubject: Undeliverable: hello")
    assert classify_raw(human).kind == "person"
    assert classify_raw(ndr) == Classification("automatic", "dsn:postmaster")


def test_return_path_null() -> None:
    assert classify_raw(msg("Return-Path: <>\nFrom: a@b.example")).rule == "dsn:null-return-path"


@pytest.mark.parametrize(
    ("header", "rule"),
    [
        ("Auto-Submitted: auto-replied; owner-email=x@y.example", "auto-submitted:auto-replied"),
        ("Auto-Submitted: Auto-Generated (failure)", "auto-submitted:auto-generated"),
        ("Auto-Submitted: auto-notified", "auto-submitted:auto-notified"),
        ("Precedence: auto_reply", "precedence:auto_reply"),
        ("X-Autoreply: yes", "x-autoreply"),
        ("X-Autorespond: Vacation", "x-autorespond"),
        ("X-MS-Exchange-Inbox-Rules-Loop: jane@customer.example", "exchange:inbox-rules-loop"),
        ("X-Challenge: please reply to confirm", "challenge:x-challenge"),
        ("X-Delivery-Agent: TMDA/1.1.12 (Ferry Lane)", "challenge:tmda"),
        ("X-TMDA-Fingerprint: abc", "challenge:tmda"),
        ("X-AskVersion: 2.4.1 (http://www.paganini.net/ask)", "challenge:x-askversion"),
        ("X-Boxtrapper: abc", "challenge:x-boxtrapper"),
    ],
)
def test_automatic_headers(header: str, rule: str) -> None:
    assert classify_raw(msg(f"From: a@b.example\nSubject: hi\n{header}")) == Classification("automatic", rule)


@pytest.mark.parametrize(
    "header", ["Auto-Submitted: no", "X-Autoreply: no", "X-Auto-Response-Suppress: All", "Precedence: bulk"]
)
def test_not_automatic_headers(header: str) -> None:
    """`Auto-Submitted: no` is what a person's mail says (RFC 3834 §5); X-Auto-Response-Suppress is set by
    Outlook on human mail, and bulk is a confirmation question, not a classification."""
    result = classify_raw(msg(f"From: a@b.example\nSubject: hi\n{header}"))
    assert result == Classification("person", "default")


@pytest.mark.parametrize(
    "subject",
    [
        "Automatic reply: [Case #1] received",
        "Auto-Reply: hello",
        "Autoreply: hello",
        "Out of Office: hello",
        "Out of the office",
        "Abwesenheitsnotiz: hello",
        "Automatische Antwort: hello",
        "Réponse automatique : hello",
        "Respuesta automática: hello",
        "Risposta automatica: hello",
        "Автоответ: hello",
        "=?utf-8?b?0JDQstGC0L7QvtGC0LLQtdGCOiBoZWxsbw==?=",  # Автоответ: hello, RFC 2047 encoded
        "[EXTERNAL] Automatic reply: hello",
    ],
)
def test_ooo_subjects(subject: str) -> None:
    result = classify_raw(msg(f"From: a@b.example\nSubject: {subject}"))
    assert result == Classification("automatic", "subject:ooo")


def test_challenge_subject() -> None:
    raw = msg("From: a-confirm+123@b.example\nSubject: Please confirm your message")
    assert classify_raw(raw) == Classification("automatic", "subject:challenge")


@pytest.mark.parametrize(
    "subject",
    [
        "Fwd: Automatic reply: phishing",  # a person forwarding: anchored rules do not fire
        "Please verify your email address",  # a phishing subject a reporter forwards as-is
        "Spam about out of office tools",
        "Undeliverable: hello",  # a bounce subject alone, from an ordinary sender
    ],
)
def test_person_subjects(subject: str) -> None:
    assert classify_raw(msg(f"From: a@b.example\nSubject: {subject}")).kind == "person"


def test_report_wins_over_auto_rules() -> None:
    raw = (DATA / "arf_mailbox_provider.eml").read_bytes()
    assert classify_raw(raw, "").kind == "machine_report"  # even from the null sender


def test_other_multipart_reports_are_automatic() -> None:
    mdn = msg("Content-Type: multipart/report; report-type=disposition-notification; boundary=x")
    tls = msg('From: a@b.example\nContent-Type: multipart/report; boundary="x"; report-type=tlsrpt')
    bare = msg("From: a@b.example\nContent-Type: multipart/report; boundary=x")
    assert classify_raw(mdn) == Classification("automatic", "mdn:report-type")
    assert classify_raw(tls) == Classification("automatic", "report:tlsrpt")
    assert classify_raw(bare) == Classification("automatic", "report:unknown")


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        ("Precedence: bulk", "precedence:bulk"),
        ("Precedence: JUNK", "precedence:junk"),
        ("Precedence: list", "precedence:list"),
        ("List-Id: Abuse discussion <abuse.lists.example>", "list-id"),
        ("List-Unsubscribe: <mailto:leave@lists.example>", "list-unsubscribe"),
        ("Precedence: first-class", None),
        ("X-Other: 1", None),
    ],
)
def test_is_bulk_or_list(header: str, reason: str | None) -> None:
    assert is_bulk_or_list(parse_message(msg(f"From: a@b.example\n{header}"))) == reason


def test_auto_reply_suppressed() -> None:
    suppressed = parse_message(msg("X-Auto-Response-Suppress: DR, OOF"))
    assert auto_reply_suppressed(suppressed) == "x-auto-response-suppress"
    assert auto_reply_suppressed(parse_message(msg("X-Auto-Response-Suppress: DR"))) is None
    assert auto_reply_suppressed(parse_message(msg("List-Id: <x.example>"))) == "list-id"


_NAMES = st.sampled_from(
    ["Auto-Submitted", "Subject", "Precedence", "Content-Type", "X-Autoreply", "Return-Path", "X-Tmda-X"]
)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(_NAMES, st.text(max_size=40))),
    st.one_of(st.none(), st.text(max_size=20)),
    st.one_of(st.none(), st.text(max_size=20)),
)
def test_classify_never_raises(
    headers: list[tuple[str, str]], sender: str | None, from_addr: str | None
) -> None:
    parsed = ParsedMessage(headers=tuple(headers), from_addr=from_addr, content_type="multipart/report")
    assert classify(parsed, sender, None).kind in ("person", "automatic")
    is_bulk_or_list(parsed)
    auto_reply_suppressed(parsed)


def _corpus_by_report_type(wanted: str) -> list[Path]:
    if not CORPUS.is_dir():
        return []
    found = []
    for path in sorted(p for p in CORPUS.rglob("*") if p.is_file()):
        raw = path.read_bytes()
        if b"report-type" not in raw.lower():
            continue
        top = BytesParser(policy=compat32).parsebytes(raw, headersonly=True)
        if str(top.get_param("report-type", "")).lower() == wanted:
            found.append(path)
    return found


def test_corpus_dsns_are_automatic() -> None:
    files = _corpus_by_report_type("delivery-status")
    if not files:
        pytest.skip("shared corpus absent")
    for path in files:
        result = classify_raw(path.read_bytes())  # no envelope: the content alone must decide
        assert result == Classification("automatic", "dsn:report-type"), path


def test_corpus_arfs_are_machine_reports() -> None:
    files = _corpus_by_report_type("feedback-report")
    if not files:
        pytest.skip("shared corpus absent")
    for path in files:
        raw = path.read_bytes()
        report = parse_machine_report(raw)
        assert report is not None and report.category, path
        assert classify(parse_message(raw), None, report) == Classification("machine_report", "arf"), path
