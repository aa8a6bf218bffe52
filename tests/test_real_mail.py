"""Real mail the gateway got wrong (issue 16): null senders, missed bounce subjects, backlog imports."""

from __future__ import annotations

import email
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from parsers.auto import classify
from parsers.message import parse_message
from parsers.reports import parse_machine_report
from tests.conftest import RunningGateway, Sink, load_eml, upgrade_store

# A relay or forwarder rewrote the envelope (SRS), so only the message itself says it is a bounce.
RELAYED = "SRS0=ab12=cd=relay.example=bounces@forwarder.example"

NULL_FROM_AND_BOUNCE_SUBJECTS = [
    "dsn_dragonfly_null_from.eml",
    "dsn_mcafee_null_from.eml",
    "bounce_subject_mail_system_error.eml",
    "bounce_subject_could_not_be_delivered.eml",
    "bounce_subject_permanent_failure.eml",
    "bounce_subject_ja_haishin.eml",
]


@pytest.mark.parametrize("name", NULL_FROM_AND_BOUNCE_SUBJECTS)
def test_null_from_and_postmaster_subjects_are_automatic_and_get_no_confirmation(
    gateway_factory, store_url: str, smtp_sink: Sink, name: str
) -> None:
    gateway: RunningGateway = gateway_factory(store_url, confirm={"smarthost": smtp_sink.address})
    assert gateway.send(load_eml(name), mail_from=RELAYED)[0] == 250
    gateway.wait_idle()
    [case] = gateway.store.list_cases()
    message = gateway.store.show_case(case["case_id"])["messages"][0]
    assert message["kind"] == "automatic", message["kind_rule"]
    [row] = gateway.store.list_outbox()
    assert row["state"] == "suppressed"
    assert smtp_sink.handler.received == []


def test_a_person_forwarding_a_bounce_themed_lure_is_still_a_person() -> None:
    raw = load_eml("bounce_subject_could_not_be_delivered.eml").replace(
        b"Subject: Mail could not be delivered", b"Subject: Fwd: Mail could not be delivered"
    )
    assert classify(parse_message(raw), "reporter@example.net", None).kind == "person"


def test_from_null_address_parses_as_the_empty_address_not_a_local_part() -> None:
    parsed = parse_message(load_eml("dsn_dragonfly_null_from.eml"))
    assert (parsed.from_addr, parsed.from_name) == ("", "MAILER-DAEMON")
    assert parse_message(b"Subject: x\r\n\r\nno From at all\r\n").from_addr is None


# flufl.bounce's own test corpus (`pip download --no-deps --no-binary :all: flufl.bounce`, unpack, point
# FLUFL_BOUNCE_DATA at its tests/data/). Not vendored: it is another project's material, and CI passes
# without it.
_FLUFL = os.environ.get("FLUFL_BOUNCE_DATA")


@pytest.mark.skipif(not _FLUFL or not Path(_FLUFL).is_dir(), reason="FLUFL_BOUNCE_DATA not set")
def test_flufl_bounce_corpus_is_classified_automatic() -> None:
    files = sorted(p for p in Path(str(_FLUFL)).iterdir() if p.suffix == ".txt")
    missed = []
    for path in files:
        raw = path.read_bytes()
        if classify(parse_message(raw), None, parse_machine_report(raw)).kind != "automatic":
            missed.append(path.name)
    assert len(files) - len(missed) >= 114, missed


# ---- point 4: a backlog import is not a pile of bounces ----------------------------------------------------

ROOT = Path(__file__).resolve().parent.parent


def _config(tmp_path: Path, store_url: str, confirm: bool = True) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(
        f'[intake]\naddresses = ["abuse@example.org"]\n[log]\nlevel = "INFO"\n'
        f'[store]\nurl = "{store_url}"\nspool_dir = "{tmp_path / "spool"}"\n'
        f'[confirm]\nenabled = {"true" if confirm else "false"}\nfrom = "abuse@example.org"\n'
        f'outbox_dir = "{tmp_path / "outbox"}"\nsecret_file = "{tmp_path / "reply-token.key"}"\n'
    )
    upgrade_store(store_url)
    return path


def _cli(config: Path, *args: str, input: bytes | None = None) -> tuple[int, str, str]:
    """The real entry point in a subprocess, as an operator or an MTA pipe runs it."""
    proc = subprocess.run(
        [sys.executable, "-m", "gateway", "--config", str(config), *args],
        input=input,
        capture_output=True,
        cwd=ROOT,
        timeout=120,
    )
    return proc.returncode, proc.stdout.decode(), proc.stderr.decode()


def _desk(config: Path, *args: str) -> str:
    """A desk command (what the checks read) through the real CLI in-process: the import under test runs
    as a subprocess; a Python start-up for each look at its outcome cost the file half its time."""
    from click.testing import CliRunner

    from gateway.cli import main

    result = CliRunner().invoke(main, ["--config", str(config), *args])
    assert result.exit_code == 0, result.output
    return result.stdout


def _backlog(tmp_path: Path) -> Path:
    folder = tmp_path / "backlog"
    folder.mkdir()
    for name in ("backlog_report_with_return_path.eml", "backlog_report_without_envelope.eml"):
        (folder / name).write_bytes(load_eml(name))
    return folder


def _message(config: Path, case_id: str) -> dict:
    return json.loads(_desk(config, "cases", "show", case_id, "--json"))["messages"][0]


def _outbox(config: Path) -> list[dict]:
    out = _desk(config, "outbox", "list", "--json")
    return json.loads(out) if out.strip().startswith("[") else [json.loads(line) for line in out.splitlines()]


def test_ingest_of_a_directory_without_sender_stores_reports_not_bounces(
    tmp_path: Path, store_url: str
) -> None:
    config = _config(tmp_path, store_url)
    code, out, err = _cli(config, "ingest", str(_backlog(tmp_path)))
    assert code == 0, err
    with_rp, without = out.split()
    first, second = _message(config, with_rp), _message(config, without)
    assert (first["kind"], first["sender"]) == ("report", "alice.reporter@example.net")  # topmost Return-Path
    assert (second["kind"], second["sender"]) == ("report", None)  # unknown, not the null sender ""
    # One `stored:` line per entry: each entry is prepared once, not once per intake child.
    assert err.count("stored:") == 2, err
    assert "duplicate=True" not in err


def test_a_backlog_import_mails_nobody_unless_asked(tmp_path: Path, store_url: str) -> None:
    config = _config(tmp_path, store_url)
    assert _cli(config, "ingest", str(_backlog(tmp_path)))[0] == 0
    rows = _outbox(config)
    assert sorted(r["suppressed_reason"] for r in rows) == ["not_requested", "not_requested"]
    assert all(r["state"] == "suppressed" for r in rows)


def test_ingest_confirm_queues_a_confirmation_to_the_return_path(tmp_path: Path, store_url: str) -> None:
    config = _config(tmp_path, store_url)
    folder = _backlog(tmp_path)
    (folder / "backlog_report_without_envelope.eml").unlink()
    assert _cli(config, "ingest", "--confirm", str(folder))[0] == 0
    [row] = _outbox(config)
    assert (row["state"], row["recipient"]) == ("queued", "alice.reporter@example.net")


def test_ingest_from_stdin_confirms_by_default_and_sender_overrides_return_path(
    tmp_path: Path, store_url: str
) -> None:
    config = _config(tmp_path, store_url)
    raw = load_eml("backlog_report_with_return_path.eml")
    code, out, err = _cli(config, "ingest", "--sender", "carol@example.org", input=raw)
    assert code == 0, err
    assert _message(config, out.strip())["sender"] == "carol@example.org"
    [row] = _outbox(config)
    assert (row["state"], row["recipient"]) == ("queued", "carol@example.org")


def test_ingest_of_a_null_return_path_is_a_bounce(tmp_path: Path, store_url: str) -> None:
    config = _config(tmp_path, store_url)
    raw = b"Return-Path: <>\r\n" + load_eml("backlog_report_without_envelope.eml")
    code, out, err = _cli(config, "ingest", "--confirm", input=raw)
    assert code == 0, err
    message = _message(config, out.strip())
    assert (message["kind"], message["sender"]) == ("automatic", "")


# ---- point 2: returned Message-IDs wherever bounces put them ----------------------------------------------

REPORT = load_eml("report_phishing.eml")


@pytest.mark.parametrize(
    "template",
    [
        "dsn_pasted_headers_multipart_template.eml",  # headers pasted into a text/plain part of a multipart
        "dsn_message_id_no_brackets_template.eml",  # `Message-Id: id@host`, no angle brackets
        "dsn_text_rfc822_header_template.eml",  # text/rfc822-header, the common misspelling
        "dsn_message_partial_template.eml",  # message/partial: the first fragment holds the headers
    ],
)
def test_bounce_of_a_confirmation_lands_in_its_case_and_marks_it_bounced(
    gateway_factory, store_url: str, smtp_sink: Sink, template: str
) -> None:
    gateway: RunningGateway = gateway_factory(store_url, confirm={"smarthost": smtp_sink.address})
    gateway.send(REPORT)
    [(_, _, confirmation)] = smtp_sink.wait_for(1)
    gateway.wait_outbox(lambda rows: rows and rows[0]["state"] == "sent")
    message_id = email.message_from_bytes(confirmation)["Message-ID"].strip().strip("<>")
    bounce = load_eml(template).replace(b"{message_id}", message_id.encode())
    bounce = bounce.replace(b"{nonce}", uuid.uuid4().hex.encode())
    gateway.send(bounce, mail_from="")
    gateway.wait_idle()
    [summary] = gateway.store.list_cases()
    case = gateway.store.show_case(summary["case_id"])
    assert [(m["kind"], m["thread_signal"]) for m in case["messages"]] == [
        ("report", "none"),
        ("automatic", "header"),
    ]
    rows = gateway.store.list_outbox()
    assert [r["state"] for r in rows if r["kind"] == "confirmation"] == ["bounced"]
    assert len(smtp_sink.handler.received) == 1


# ---- point 3: Hotmail / Outlook.com JMRP -------------------------------------------------------------------


def test_hotmail_jmrp_complaint_is_a_machine_report_with_the_message_as_evidence_and_no_confirmation(
    gateway_factory, store_url: str, smtp_sink: Sink
) -> None:
    gateway: RunningGateway = gateway_factory(store_url, confirm={"smarthost": smtp_sink.address})
    assert gateway.send(load_eml("jmrp_hotmail_complaint.eml"), mail_from="staff@hotmail.com")[0] == 250
    gateway.wait_idle()
    [summary] = gateway.store.list_cases()
    case = gateway.store.show_case(summary["case_id"])
    [message] = case["messages"]
    assert (message["kind"], message["kind_rule"]) == ("machine_report", "jmrp")
    [evidence] = message["evidence"]
    assert "sender.example" in json.dumps(evidence)  # the complained-about message, not the robot's note
    [row] = gateway.store.list_outbox()
    assert (row["state"], row["suppressed_reason"]) == ("suppressed", "machine_report")
    assert smtp_sink.handler.received == []


def test_a_person_attaching_a_message_is_not_jmrp() -> None:
    raw = load_eml("jmrp_hotmail_complaint.eml").replace(b"X-HmXmrOriginalRecipient", b"X-Original-To")
    assert parse_machine_report(raw) is None
