"""Issue 21 over real SMTP: the desk answers a reporter through the outbox, the answer threads back, the
confirmation is a receipt (counts and digests), in the reporter's language, and carries nothing of the
report whoever sent it."""

from __future__ import annotations

import email
import re
import uuid
from email import policy
from email.message import EmailMessage
from pathlib import Path

import pytest

from gateway.reporter_desk import DeskMailError, queue_reply
from parsers.reply_token import token_from_address, verify_reply_token
from tests.conftest import RunningGateway, Sink, load_eml, run_cli

REPORT = load_eml("report_phishing.eml")


def _gateway(gateway_factory, store_url: str, sink: Sink, **status: object) -> RunningGateway:
    # require_authenticated is issue 22's; these reports come from 127.0.0.1 with no SPF or DKIM to pass.
    return gateway_factory(
        store_url,
        confirm={"smarthost": sink.address, "require_authenticated": False},
        status=status,
    )


def _config_file(gateway: RunningGateway, tmp_path: Path, templates: Path | None = None) -> Path:
    """A config file naming the running gateway's store, key and sender, for the real CLI."""
    config = gateway.service.config
    path = tmp_path / "cli.toml"
    lines = [
        f'[store]\nurl = "{config.store.url}"\nspool_dir = "{config.store.spool_dir}"',
        f'[confirm]\nfrom = "{config.confirm.from_}"\nsecret_file = "{config.confirm.secret_file}"',
        f'outbox_dir = "{config.confirm.outbox_dir}"',
    ]
    if config.status.base_url:
        lines.append(f'[status]\nbase_url = "{config.status.base_url}"')
    if templates is not None:
        lines.append(f'[reply]\ntemplates_dir = "{templates}"')
    path.write_text("\n".join(lines) + "\n")
    return path


def _mails(sink: Sink, count: int) -> list[EmailMessage]:
    return [email.message_from_bytes(raw, policy=policy.default) for _, _, raw in sink.wait_for(count)]


def _answer(subject: str, *headers: str) -> bytes:
    lines = [
        "From: Rita Reporter <reporter@example.net>",
        "To: abuse@example.org",
        f"Subject: {subject}",
        f"Message-ID: <{uuid.uuid4().hex}@mail.example.net>",
        *headers,
    ]
    return ("\r\n".join(lines) + "\r\n\r\nHere is the password you asked for: hunter2\r\n").encode()


def _key(gateway: RunningGateway) -> list[bytes]:
    return [Path(gateway.service.config.confirm.secret_file).read_bytes().strip()]


def test_desk_reply_reaches_the_reporter_with_case_subject_token_and_in_reply_to_our_last_message(
    gateway_factory, store_url: str, smtp_sink: Sink, tmp_path: Path
) -> None:
    gateway = _gateway(gateway_factory, store_url, smtp_sink)
    gateway.send(REPORT)
    [confirmation] = _mails(smtp_sink, 1)
    case_id = gateway.store.list_cases()[0]["case_id"]
    reply = tmp_path / "reply.txt"
    reply.write_text("Subject: About the page you reported\n\nHello,\n\nwhich browser showed the page?\n")
    config = _config_file(gateway, tmp_path)
    out = run_cli(config, "cases", "reply", case_id, "--file", str(reply))
    assert "reply queued" in out
    _, rcpts, raw = smtp_sink.wait_for(2)[1]
    answer = email.message_from_bytes(raw, policy=policy.default)
    assert rcpts == ["reporter@example.net"]
    assert answer["Subject"] == f"[{case_id}] About the page you reported"
    assert answer["In-Reply-To"] == confirmation["Message-ID"]
    assert answer["References"] == confirmation["Message-ID"]
    assert answer["Auto-Submitted"] is None  # a person wrote it
    token = token_from_address(str(answer["Reply-To"]))
    assert token and verify_reply_token(token, _key(gateway)) == case_id
    assert "which browser showed the page?" in answer.get_content()
    # The exact bytes are stored on the row and shown in the case's timeline.
    [row] = gateway.wait_outbox(
        lambda rows: any(r["kind"] == "reply" and r["state"] == "sent" for r in rows)
    )[:1]
    assert row["kind"] == "reply"
    _, stored = gateway.store.outbox_message(row["id"])
    assert stored == raw
    shown = run_cli(config, "cases", "show", case_id)
    assert "which browser showed the page?" in shown and f"#{row['id']} reply" in shown
    # A second reply answers our last message to them: the first reply.
    run_cli(config, "cases", "reply", case_id, "--template", "need-more-info")
    second = _mails(smtp_sink, 3)[2]
    assert second["In-Reply-To"] == answer["Message-ID"]
    assert second["Subject"] == f"[{case_id}] We need more information about your report"
    assert case_id in second.get_content() and "{" not in second.get_content()


def test_the_reporters_answer_to_a_desk_reply_threads_back_by_header_token_and_subject(
    gateway_factory, store_url: str, smtp_sink: Sink
) -> None:
    gateway = _gateway(gateway_factory, store_url, smtp_sink)
    gateway.send(REPORT)
    smtp_sink.wait_for(1)
    case_id = gateway.store.list_cases()[0]["case_id"]
    config = gateway.service.config
    queue_reply(config, gateway.store, case_id, actor="desk", text="Please send the password.\n")
    reply = _mails(smtp_sink, 2)[1]
    gateway.send(_answer("Re: your mail", f"In-Reply-To: {reply['Message-ID']}"))
    gateway.send(_answer("the password"), rcpt_tos=[str(reply["Reply-To"])])
    gateway.send(_answer(f"Re: {reply['Subject']}"))
    gateway.wait_idle()
    [case] = gateway.store.list_cases()
    signals = [m["thread_signal"] for m in gateway.store.show_case(case["case_id"])["messages"]]
    assert signals == ["none", "header", "token", "subject"]


def test_receipt_counts_and_digests_match_what_was_stored_and_name_no_file(
    gateway_factory, store_url: str, smtp_sink: Sink
) -> None:
    gateway = _gateway(gateway_factory, store_url, smtp_sink)
    gateway.send(load_eml("report_two_attachments.eml"))
    [confirmation] = _mails(smtp_sink, 1)
    gateway.wait_idle()
    [case] = gateway.store.list_cases()
    view = gateway.store.show_case(case["case_id"])
    digests = [a["sha256"] for a in view["messages"][0]["attachments"]]
    assert len(digests) == 2
    text = confirmation.get_content()
    assert f"messages in case {case['case_id']}: 1" in text
    assert "links in this message: 2" in text
    assert "attachments in this message: 2" in text
    assert re.findall(r"SHA-256 ([0-9a-f]{64})", text) == digests
    assert "Nothing was rejected or removed" in text
    for leaked in ("SECRETNAME", "OTHERNAME", "invoice", "screenshot", "bad.example"):
        assert leaked not in text
    # The follow-up (the forgotten password) gets its own receipt: message 2 of the case, no file.
    gateway.send(_answer(f"Re: [{case['case_id']}] We received your report"))
    ack = _mails(smtp_sink, 2)[1]
    assert ack["Subject"] == f"[{case['case_id']}] Added to your case"
    assert f"messages in case {case['case_id']}: 2" in ack.get_content()
    assert "attachments in this message: 0" in ack.get_content()


@pytest.mark.parametrize("fixture", ["report_content_language_de.eml", "report_german_text.eml"])
def test_german_report_gets_the_german_confirmation_properly_encoded(
    gateway_factory, store_url: str, smtp_sink: Sink, fixture: str
) -> None:
    gateway = _gateway(gateway_factory, store_url, smtp_sink)
    gateway.send(load_eml(fixture), mail_from="melder@example.net")
    [(_, _, raw)] = smtp_sink.wait_for(1)
    case_id = gateway.store.list_cases()[0]["case_id"]
    raw.decode("ascii")  # 7bit on the wire: RFC 2047 subject, encoded UTF-8 body
    mail = email.message_from_bytes(raw, policy=policy.default)
    assert mail["Subject"] == f"[{case_id}] Wir haben Ihre Meldung erhalten"
    assert mail.get_content_charset() == "utf-8"
    assert mail["Content-Transfer-Encoding"] in ("quoted-printable", "base64")
    assert "Guten Tag," in mail.get_content() and "Prüfsummen" in mail.get_content()
    [row] = gateway.wait_outbox(lambda rows: rows and rows[0]["state"] == "sent")
    assert row["language"] == "de"


def test_forged_sender_confirmation_carries_nothing_but_our_text(
    gateway_factory, store_url: str, smtp_sink: Sink
) -> None:
    gateway = _gateway(gateway_factory, store_url, smtp_sink)
    gateway.send(load_eml("report_forged_sender.eml"), mail_from="victim@example.net")
    [(_, _, raw)] = smtp_sink.wait_for(1)
    text = raw.decode("ascii").lower()
    for leaked in ("marker", "ceo", "urgent", "wire", "evil", "555", "10000", "http", "bank.example", ".exe"):
        assert leaked not in text, leaked
    mail = email.message_from_bytes(raw, policy=policy.default)
    body = mail.get_content()
    # Every line is one of ours: the English template's, the receipt's, or a digest.
    case_id = gateway.store.list_cases()[0]["case_id"]
    for line in body.splitlines():
        assert (
            not line.strip()
            or case_id in line
            or re.fullmatch(r"    SHA-256 [0-9a-f]{64}", line)
            or re.fullmatch(r"  (links|attachments) in this message: \d+", line)
            or line.startswith(
                ("or write to abuse+", "Hello,", "What ", "us if ", "To add ", "reply to ", "Every")
            )
            or line.startswith(("Nothing was", "This is an automatic"))
        ), line


def test_reply_templates_may_name_only_our_values(
    gateway_factory, store_url: str, smtp_sink: Sink, tmp_path: Path
) -> None:
    from click.testing import CliRunner

    from gateway.cli import main

    gateway = _gateway(gateway_factory, store_url, smtp_sink)
    gateway.send(REPORT)
    smtp_sink.wait_for(1)
    case_id = gateway.store.list_cases()[0]["case_id"]
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "quote.txt").write_text("Subject: Re: {subject}\n\nYou wrote: {text}\n")
    config = _config_file(gateway, tmp_path, templates)
    result = CliRunner().invoke(
        main, ["--config", str(config), "cases", "reply", case_id, "--template", "quote"]
    )
    assert result.exit_code == 2 and "unknown placeholder" in result.output
    assert [r["kind"] for r in gateway.store.list_outbox()] == ["confirmation"]


def test_a_reply_to_a_csam_case_refuses_quoted_lines(
    gateway_factory, store_url: str, smtp_sink: Sink, tmp_path
) -> None:
    gateway = _gateway(gateway_factory, store_url, smtp_sink)
    gateway.send(REPORT)
    smtp_sink.wait_for(1)
    case_id = gateway.store.list_cases()[0]["case_id"]
    run_cli(_config_file(gateway, tmp_path), "cases", "csam", case_id, "--reason", "test")
    with pytest.raises(DeskMailError, match="never quotes"):
        queue_reply(gateway.service.config, gateway.store, case_id, actor="desk", text="> you wrote\nok\n")
    assert queue_reply(gateway.service.config, gateway.store, case_id, actor="desk", text="We have acted.\n")


def test_state_change_is_audited_and_the_notice_goes_in_the_reporters_language(
    gateway_factory, store_url: str, smtp_sink: Sink, tmp_path: Path
) -> None:
    gateway = _gateway(gateway_factory, store_url, smtp_sink, base_url="https://status.example.org")
    gateway.send(load_eml("report_german_text.eml"), mail_from="melder@example.net")
    [confirmation] = _mails(smtp_sink, 1)
    case_id = gateway.store.list_cases()[0]["case_id"]
    assert "https://status.example.org/s/" + case_id.lower() in confirmation.get_content()
    config = _config_file(gateway, tmp_path)
    out = run_cli(config, "cases", "state", case_id, "in-review", "--notify")
    assert "in_review" in out
    notice = _mails(smtp_sink, 2)[1]
    assert notice["Subject"] == f"[{case_id}] Stand Ihres Falls: in Prüfung"
    assert notice["In-Reply-To"] == confirmation["Message-ID"]
    assert notice["Auto-Submitted"] == "auto-generated"
    assert "https://status.example.org/s/" in notice.get_content()
    audit = gateway.store.list_audit()
    assert any(a["action"] == "reporter_state" and case_id in a["target"] for a in audit)
    assert gateway.store.show_case(case_id)["reporter_state"] == "in_review"


@pytest.mark.parametrize("language", ["en", "de", "fr", "es", "pt", "ru", "zh", "ja"])
def test_every_language_keeps_the_case_tag_and_goes_out_7bit(tmp_path: Path, language: str) -> None:
    from datetime import UTC, datetime

    from gateway.confirm import build_message
    from storage.records import OutboxJob
    from tests.conftest import make_config

    config = make_config(tmp_path, "sqlite://", status={"base_url": "https://status.example.org"})
    receipt = {"messages": 3, "links": 1, "attachments": ["ab" * 32]}
    for kind in ("confirmation", "acknowledgement"):
        job = OutboxJob(
            1,
            "ABU-4V56-RJBV",
            kind,
            "r@example.net",
            "m1@example.org",
            None,
            0,
            datetime.now(UTC),
            language=language,
            receipt=receipt,
        )
        raw = build_message(config, job, b"k" * 32).as_bytes(policy=policy.SMTP)
        raw.decode("ascii")
        mail = email.message_from_bytes(raw, policy=policy.default)
        assert mail["Subject"].startswith("[ABU-4V56-RJBV] ")
        if not mail["Subject"].isascii():
            assert b"=?utf-8?" in raw.lower()
        text = mail.get_content()
        assert "ab" * 32 in text and "3" in text and "https://status.example.org/s/abu-4v56-rjbv." in text
        assert "{" not in text and "}" not in text


def test_reply_to_participants_reaches_the_reporter_of_a_merged_case_too(
    gateway_factory, store_url: str, smtp_sink: Sink, tmp_path: Path
) -> None:
    gateway = _gateway(gateway_factory, store_url, smtp_sink)
    gateway.send(REPORT)
    gateway.send(_answer("the same page"), mail_from="second@example.com")
    smtp_sink.wait_for(2)
    gateway.wait_idle()
    first, second = sorted(gateway.store.list_cases(), key=lambda c: c["created_at"])
    config = _config_file(gateway, tmp_path)
    run_cli(config, "cases", "merge", second["case_id"], first["case_id"])
    run_cli(config, "cases", "reply", first["case_id"], "--to-participants", input=b"Thank you both.\n")
    replies = [(rcpts, raw) for _, rcpts, raw in smtp_sink.wait_for(4)[2:]]
    assert sorted(r for rcpts, _ in replies for r in rcpts) == ["reporter@example.net", "second@example.com"]
    for _, raw in replies:
        assert f"[{first['case_id']}]".encode() in raw and b"Thank you both." in raw
    # Without the flag only the reporter is written to.
    run_cli(config, "cases", "reply", first["case_id"], input=b"Only you.\n")
    assert smtp_sink.wait_for(5)[4][1] == ["reporter@example.net"]


def test_a_bare_follow_up_is_acknowledged_in_the_language_of_its_case(
    gateway_factory, store_url: str, smtp_sink: Sink
) -> None:
    gateway = _gateway(gateway_factory, store_url, smtp_sink)
    gateway.send(load_eml("report_german_text.eml"), mail_from="melder@example.net")
    smtp_sink.wait_for(1)
    case_id = gateway.store.list_cases()[0]["case_id"]
    follow_up = (
        f"From: melder@example.net\r\nTo: abuse@example.org\r\nSubject: Re: [{case_id}]\r\n"
        f"Message-ID: <{uuid.uuid4().hex}@mail.example.net>\r\n\r\nPIN: 4711\r\n"
    ).encode()  # nothing to tell a language by
    gateway.send(follow_up, mail_from="melder@example.net")
    ack = _mails(smtp_sink, 2)[1]
    assert ack["Subject"] == f"[{case_id}] Zu Ihrem Fall hinzugefügt"
