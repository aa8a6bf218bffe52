"""The CSAM compartment at the desk (issue 19): marking, preservation nothing can skip, who looked, and
nothing leaving. Through the real CLI on a real store (SQLite and PostgreSQL); no real material anywhere —
the "attachments" are a PDF stub and a PNG stub from tests/data."""

from __future__ import annotations

import dataclasses
import getpass
import hashlib
import json
import os
import select
import stat
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import func, update
from sqlmodel import Session
from sqlmodel import select as sql_select

from gateway.cli import main
from gateway.config import ConfigError, load_config
from gateway.intake import prepare
from gateway.service import build_store, build_threader
from parsers.message import parse_message
from storage.inbox import Envelope, Spool, store_now
from storage.models import AuditEvent, Case, CaseEvent, CsamMark, InboxEntry, Message, OutboxRow
from tests.conftest import load_eml, run_cli

CLI = [sys.executable, "-c", "from gateway.cli import main; main()"]


def _cli(config: Path, *args: str, input: bytes | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["--config", str(config), *args], input=input)
    return result.exit_code, result.stdout_bytes.decode("utf-8", "replace"), result.stderr


def _unique(name: str) -> bytes:
    raw = load_eml(name)
    if b"Message-ID: <" in raw:
        return raw.replace(b"Message-ID: <", f"Message-ID: <{uuid.uuid4().hex}".encode(), 1)
    return f"Message-ID: <{uuid.uuid4().hex}@test.example>\r\n".encode() + raw


def _ingest(config: Path, name: str = "report_phishing.eml", *extra: str) -> str:
    return run_cli(config, "ingest", "--sender", "reporter@example.net", *extra, input=_unique(name)).strip()


def _ingest_with_signals(config: Path, raw: bytes, signals: tuple[str, ...]) -> str:
    """The intake commit, given a prepared message whose signals another stage set (term list, hash list):
    the store must turn them into `possible_csam`, recorded sources and preservation."""
    settings = load_config(config)
    store = build_store(settings)
    try:
        envelope = Envelope("reporter@example.net", ("abuse@example.org",), None, False)
        store_now(
            store.engine, Spool(settings.store.spool_dir), [raw], envelope, settings.store.commit_budget
        )
        [entry] = store.claim_inbox()
        item = dataclasses.replace(prepare(entry), csam_signals=signals)
        [committed] = store.commit_processed([item], build_threader(settings).resolve)
        return committed.case_id
    finally:
        store.engine.dispose()


def _show(config: Path, case_id: str) -> dict:
    return json.loads(run_cli(config, "cases", "show", case_id, "--metadata", "--json"))


def _engine_session(config: Path):  # type: ignore[no-untyped-def]
    store = build_store(load_config(config))
    return store, Session(store.engine)


def _age_everything(config: Path, case_id: str, days: int) -> None:
    """Every timestamp of the case, its messages, raw entries, events and marks moved `days` back — all but
    the preservation's end, which is what is being tested."""
    then = datetime.now(UTC) - timedelta(days=days)
    store = build_store(load_config(config))
    with Session(store.engine) as session, session.begin():
        case = session.exec(sql_select(Case).where(Case.case_id == case_id)).one()
        session.execute(update(Case).where(Case.id == case.id).values(created_at=then, updated_at=then))
        inbox_ids = list(session.exec(sql_select(Message.inbox_id).where(Message.case_pk == case.id)))
        session.execute(update(Message).where(Message.case_pk == case.id).values(received_at=then))
        session.execute(
            update(InboxEntry).where(InboxEntry.id.in_(inbox_ids)).values(received_at=then, processed_at=then)
        )
        session.execute(update(CaseEvent).where(CaseEvent.case_pk == case.id).values(at=then))
        session.execute(update(CsamMark).where(CsamMark.case_pk == case.id).values(at=then))
        session.execute(update(OutboxRow).where(OutboxRow.case_pk == case.id).values(created_at=then))
    store.engine.dispose()


def _raw_count(config: Path) -> int:
    store = build_store(load_config(config))
    with Session(store.engine) as session:
        count = int(session.exec(sql_select(func.count()).select_from(InboxEntry)).one())
    store.engine.dispose()
    return count


# ---- marking ---------------------------------------------------------------------------------------------


def test_desk_marks_a_case_csam_with_who_and_why_and_lists_it_by_flag(cli_config: Path) -> None:
    marked, plain = _ingest(cli_config), _ingest(cli_config)
    out = run_cli(cli_config, "cases", "csam", marked, "--reason", "hotline ticket 4411")
    assert f"{marked} marked CSAM; preserved until" in out
    view = _show(cli_config, marked)
    assert view["csam"] is True and view["possible_csam"] is False
    assert view["csam_sources"] == ["desk"]
    [mark] = view["csam_marks"]
    assert mark["by"] == getpass.getuser() and mark["reason"] == "hotline ticket 4411"
    listed = [
        r["case_id"] for r in json.loads(run_cli(cli_config, "cases", "list", "--flag", "csam", "--json"))
    ]
    assert listed == [marked]
    assert plain not in listed
    listed_text = run_cli(cli_config, "cases", "list")
    assert "[withheld: CSAM compartment]" in listed_text and listed_text.count("Phishing") == 1
    events = json.loads(run_cli(cli_config, "audit", "list", "--case", marked, "--json"))
    assert [(e["action"], e["actor"], e["reason"]) for e in events][-1] == (
        "csam_mark",
        getpass.getuser(),
        "hotline ticket 4411",
    )
    shown = run_cli(cli_config, "cases", "show", marked, "--reason", "checking the mark")
    assert (
        "CSAM: yes, confirmed" in shown and "marked by the desk" in shown and "hotline ticket 4411" in shown
    )


def test_a_machine_report_of_csam_is_marked_csam_with_its_source(cli_config: Path) -> None:
    case_id = _ingest(cli_config, "xarf_v4_content_csam_attachment.eml")
    view = _show(cli_config, case_id)
    assert view["csam"] is True and view["csam_sources"] == ["machine_report"]
    assert view["preserve_until"] is not None


def test_intake_signals_set_possible_csam_never_csam_with_their_sources(cli_config: Path) -> None:
    signals = ("terms:en", "hash_match:iwf:sha256:0")
    case_id = _ingest_with_signals(cli_config, _unique("report_phishing.eml"), signals)
    view = _show(cli_config, case_id)
    assert view["possible_csam"] is True and view["csam"] is False
    assert view["possible_csam_sources"] == list(signals)
    until = datetime.fromisoformat(view["preserve_until"])
    assert until > datetime.now(UTC) + timedelta(days=364)
    found = json.loads(run_cli(cli_config, "cases", "list", "--flag", "possible_csam", "--json"))
    assert [r["case_id"] for r in found] == [case_id]
    assert json.loads(run_cli(cli_config, "cases", "list", "--flag", "csam", "--json")) == []
    shown = run_cli(cli_config, "cases", "show", case_id, "--metadata")
    assert "CSAM: possibly" in shown and "CSAM term list (en)" in shown and "hash list iwf" in shown


def test_clearing_a_signal_ends_its_preservation_but_clearing_a_mark_keeps_its_year(cli_config: Path) -> None:
    signalled = _ingest_with_signals(cli_config, _unique("report_phishing.eml"), ("terms:de",))
    run_cli(cli_config, "cases", "csam", signalled, "--clear", "--reason", "a German news article, not CSAM")
    view = _show(cli_config, signalled)
    assert view["possible_csam"] is False and view["preserve_until"] is None
    [mark] = view["csam_marks"]
    assert mark["cleared"]["reason"] == "a German news article, not CSAM"
    confirmed = _ingest(cli_config)
    run_cli(cli_config, "cases", "csam", confirmed, "--reason", "seen by the hotline")
    before = _show(cli_config, confirmed)["preserve_until"]
    run_cli(cli_config, "cases", "csam", confirmed, "--clear", "--reason", "wrong case")
    after = _show(cli_config, confirmed)
    assert after["csam"] is False and after["preserve_until"] == before
    code, _, err = _cli(cli_config, "cases", "csam", confirmed, "--clear", "--reason", "again")
    assert code == 2 and "no CSAM mark or signal to clear" in err
    code, _, err = _cli(cli_config, "cases", "csam", confirmed, "--reason", "  ")
    assert code == 2 and "--reason needs words" in err


def test_preserve_days_below_the_legal_year_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "short.toml"
    path.write_text("[csam]\npreserve_days = 30\n")
    with pytest.raises(ConfigError, match="preserve_days"):
        load_config(path)
    path.write_text("[csam]\npreserve_days = 730\n")
    assert load_config(path).csam.preserve_days == 730


# ---- preservation ----------------------------------------------------------------------------------------


def test_a_marked_case_aged_past_every_retention_survives_purge_with_its_raw_bytes(cli_config: Path) -> None:
    marked, ordinary = _ingest(cli_config), _ingest(cli_config)
    signalled = _ingest_with_signals(cli_config, _unique("report_phishing.eml"), ("terms:fr",))
    run_cli(cli_config, "cases", "csam", marked, "--reason", "confirmed")
    for case_id in (marked, signalled, ordinary):
        run_cli(cli_config, "cases", "close", case_id)
        _age_everything(cli_config, case_id, 4000)
    out = run_cli(cli_config, "purge", "--older-than", "1")
    assert f"removed {ordinary}" in out and "purged 1 case(s)" in out
    remaining = {r["case_id"] for r in json.loads(run_cli(cli_config, "cases", "list", "--json"))}
    assert {marked, signalled} <= remaining and ordinary not in remaining
    assert _raw_count(cli_config) == 2  # the two survivors' raw messages
    raw = CliRunner().invoke(
        main, ["--config", str(cli_config), "cases", "raw", marked, "1", "--reason", "check evidence"]
    )
    assert raw.exit_code == 0 and b"Phishing" in raw.stdout_bytes


def test_purge_dry_run_names_what_goes_and_why_each_old_case_stays(cli_config: Path) -> None:
    doomed, held, marked, still_open = (_ingest(cli_config) for _ in range(4))
    run_cli(cli_config, "cases", "csam", marked, "--reason", "confirmed")
    for case_id in (doomed, held, marked):
        run_cli(cli_config, "cases", "close", case_id)
    run_cli(cli_config, "cases", "hold", held)
    for case_id in (doomed, held, marked, still_open):
        _age_everything(cli_config, case_id, 100)
    out = run_cli(cli_config, "purge", "--older-than", "30", "--dry-run")
    assert f"would remove {doomed}" in out and "would purge 1 case(s)" in out
    assert f"keeps {held}: legal hold" in out
    assert f"keeps {marked}: CSAM mark: preserved until" in out
    assert f"keeps {still_open}: status open" in out
    assert len(json.loads(run_cli(cli_config, "cases", "list", "--json"))) == 4


def _purge_on_terminal(config: Path, answer: bytes, *extra: str) -> tuple[int, bytes]:
    """`purge` with stdin and stdout on a pseudo-terminal, answering its question with `answer`."""
    master, slave = os.openpty()
    proc = subprocess.Popen(
        [*CLI, "--config", str(config), "purge", "--older-than", "30", *extra],
        stdin=slave,
        stdout=slave,
        stderr=slave,
    )
    os.close(slave)
    output = b""
    answered = False
    while True:
        ready, _, _ = select.select([master], [], [], 60)
        if not ready:
            proc.kill()
            pytest.fail("purge on the pty wrote nothing for 60 s")
        try:
            data = os.read(master, 65536)
        except OSError:
            break
        if not data:
            break
        output += data
        if not answered and b"for good?" in output:
            os.write(master, answer)
            answered = True
    os.close(master)
    return proc.wait(timeout=60), output


def test_purge_on_a_terminal_asks_first_unless_yes(cli_config: Path) -> None:
    case_id = _ingest(cli_config)
    run_cli(cli_config, "cases", "close", case_id)
    _age_everything(cli_config, case_id, 100)
    code, output = _purge_on_terminal(cli_config, b"n\n")
    assert b"for good?" in output and code == 1 and b"nothing removed" in output
    assert len(json.loads(run_cli(cli_config, "cases", "list", "--json"))) == 1
    code, output = _purge_on_terminal(cli_config, b"", "--yes")
    assert code == 0 and b"for good?" not in output and f"removed {case_id}".encode() in output


def test_merge_and_split_carry_the_preservation_with_the_messages(cli_config: Path) -> None:
    marked, target = _ingest(cli_config), _ingest(cli_config)
    run_cli(cli_config, "cases", "csam", marked, "--reason", "confirmed")
    run_cli(cli_config, "cases", "merge", marked, target)
    merged_view = _show(cli_config, target)
    assert merged_view["csam"] is True and merged_view["preserve_until"] is not None
    run_cli(cli_config, "cases", "close", target)
    _age_everything(cli_config, target, 4000)
    assert "purged 0 case(s)" in run_cli(cli_config, "purge", "--older-than", "1")

    source = _ingest_with_signals(cli_config, _unique("report_phishing.eml"), ("terms:es",))
    second = _unique("report_phishing.eml").replace(b"Subject: ", f"Subject: {source} ".encode(), 1)
    assert _ingest_with_signals(cli_config, second, ()) == source
    out = run_cli(cli_config, "cases", "split", source, "2")
    new_case = out.split(" is now ")[1].strip()
    split_view = _show(cli_config, new_case)
    assert split_view["possible_csam"] is True
    assert split_view["preserve_until"] == _show(cli_config, source)["preserve_until"]
    marks_before = len(_show(cli_config, source)["csam_marks"])
    run_cli(cli_config, "cases", "unsplit", new_case)
    assert len(_show(cli_config, source)["csam_marks"]) == marks_before  # undo copies nothing twice


# ---- who looked ------------------------------------------------------------------------------------------


def test_content_of_a_marked_case_needs_a_reason_and_each_view_is_recorded(cli_config: Path) -> None:
    case_id = _ingest(cli_config)
    run_cli(cli_config, "cases", "csam", case_id, "--reason", "confirmed")
    for args in (
        ("cases", "show", case_id),
        ("cases", "show", case_id, "--json"),
        ("cases", "raw", case_id, "1"),
    ):
        code, out, err = _cli(cli_config, *args)
        assert code == 2 and "needs --reason" in err and "Phishing" not in out, args
    meta = run_cli(cli_config, "cases", "show", case_id, "--metadata")
    assert "metadata only" in meta and "Phishing" not in meta and "reporter@" not in meta
    shown = run_cli(cli_config, "cases", "show", case_id, "--reason", "law enforcement request 77")
    assert "Phishing" in shown
    views = [
        e
        for e in json.loads(run_cli(cli_config, "audit", "list", "--case", case_id, "--json"))
        if e["action"] == "viewed"
    ]
    assert [(v["actor"], v["case_id"], v["reason"]) for v in views] == [
        (getpass.getuser(), case_id, "law enforcement request 77")
    ]
    listed = run_cli(cli_config, "audit", "list", "--case", case_id)
    assert "viewed" in listed and "reason: law enforcement request 77" in listed


def test_attachment_goes_to_a_new_0600_file_only_and_answers_who_viewed_it(
    cli_config: Path, tmp_path: Path
) -> None:
    raw = _unique("parse_attachment_pdf.eml")
    case_id = _ingest_with_signals(cli_config, raw, ("hash_match:test-list:sha256:0",))
    out = tmp_path / "file2.bin"
    code, _, err = _cli(cli_config, "cases", "attachment", case_id, "1", "2", "--out", str(out))
    assert code == 2 and "needs --reason" in err and not out.exists()
    code, _, err = _cli(cli_config, "cases", "attachment", case_id, "1", "2", "--out", "-", "--reason", "x")
    assert code == 2 and "never to stdout" in err
    run_cli(
        cli_config, "cases", "attachment", case_id, "1", "2", "--out", str(out), "--reason", "hotline asked"
    )
    expected = parse_message(raw).attachments[1]
    assert hashlib.sha256(out.read_bytes()).hexdigest() == expected.sha256
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    code, _, err = _cli(
        cli_config, "cases", "attachment", case_id, "1", "2", "--out", str(out), "--reason", "again"
    )
    assert code == 2 and "exists" in err
    view = json.loads(run_cli(cli_config, "cases", "show", case_id, "--json", "--reason", "check who viewed"))
    files = view["messages"][0]["attachments"]
    assert [f["viewed_by_person"] for f in files] == [False, True]
    assert files[1]["views"][0]["by"] == getpass.getuser()
    assert [a["viewed_by_person"] for a in _show(cli_config, case_id)["messages"][0]["attachments"]] == [
        False,
        True,
    ]
    events = json.loads(run_cli(cli_config, "audit", "list", "--case", case_id, "--json"))
    attachment_views = [e for e in events if e["action"] == "viewed" and e["attachment"] is not None]
    assert [(e["message"], e["attachment"], e["reason"]) for e in attachment_views] == [
        (1, 2, "hotline asked")
    ]


def test_raw_bytes_of_a_marked_case_count_as_viewing_every_file_of_that_message(cli_config: Path) -> None:
    case_id = _ingest_with_signals(cli_config, _unique("parse_attachment_pdf.eml"), ("terms:en",))
    result = CliRunner().invoke(
        main, ["--config", str(cli_config), "cases", "raw", case_id, "1", "--reason", "export for police"]
    )
    assert result.exit_code == 0
    files = _show(cli_config, case_id)["messages"][0]["attachments"]
    assert [f["viewed_by_person"] for f in files] == [True, True]


# ---- nothing leaves --------------------------------------------------------------------------------------


def test_export_withholds_csam_content_unless_included_with_a_reason(cli_config: Path) -> None:
    marked, ordinary = _ingest(cli_config), _ingest(cli_config)
    run_cli(cli_config, "cases", "csam", marked, "--reason", "confirmed")
    lines = {
        json.loads(line)["case_id"]: json.loads(line)
        for line in run_cli(cli_config, "cases", "export").split("\n")
        if line
    }
    assert lines[marked]["content_withheld"] is True and lines[marked]["csam"] is True
    assert "Phishing" not in json.dumps(lines[marked])
    assert lines[marked]["messages"][0]["sha256"]
    assert "Phishing" in json.dumps(lines[ordinary]) and lines[ordinary]["csam"] is False
    code, _, err = _cli(cli_config, "cases", "export", "--include-csam")
    assert code == 2 and "--reason" in err
    full = run_cli(cli_config, "cases", "export", "--include-csam", "--reason", "court order 12")
    assert "Phishing" in next(line for line in full.split("\n") if marked in line)
    views = [
        e
        for e in json.loads(run_cli(cli_config, "audit", "list", "--case", marked, "--json"))
        if e["action"] == "viewed"
    ]
    assert [(v["reason"], v["target"]) for v in views] == [("court order 12", f"{marked} (export)")]


def test_marking_a_case_changes_nothing_the_reporter_is_sent(tmp_path: Path, store_url: str) -> None:
    config = tmp_path / "confirming.toml"
    config.write_text(
        f'[store]\nurl = "{store_url}"\nspool_dir = "{tmp_path}/spool"\n'
        f'[confirm]\nenabled = true\nfrom = "abuse@example.org"\noutbox_dir = "{tmp_path}/outbox"\n'
        f'secret_file = "{tmp_path}/key"\n'
    )
    run_cli(config, "db", "upgrade")
    marked, ordinary = (_ingest(config, "report_phishing.eml", "--confirm") for _ in range(2))

    def outbox(case_id: str) -> list[tuple[str, str]]:
        rows = json.loads(run_cli(config, "outbox", "list", "--case", case_id, "--json"))
        return [(r["kind"], r["state"]) for r in rows]

    before = outbox(marked)
    assert before == outbox(ordinary) and before
    run_cli(config, "cases", "csam", marked, "--reason", "confirmed")
    assert outbox(marked) == before
    for case_id in (marked, ordinary):
        follow_up = _unique("report_phishing.eml").replace(b"Subject: ", f"Subject: {case_id} ".encode(), 1)
        run_cli(config, "ingest", "--sender", "reporter@example.net", "--confirm", input=follow_up)
    assert outbox(marked) == outbox(ordinary)
    store = build_store(load_config(config))
    with Session(store.engine) as session:
        audit = list(session.exec(sql_select(AuditEvent.action)))
    store.engine.dispose()
    assert "csam_mark" in audit


# ---- the schema ------------------------------------------------------------------------------------------


def test_upgrade_keeps_an_older_csam_case_preserved_a_year_from_its_creation(store_url: str) -> None:
    from sqlalchemy import text

    from storage import schema
    from storage.engine import make_engine

    engine = make_engine(store_url)
    schema.upgrade(engine, "0010")
    created = datetime.now(UTC) - timedelta(days=100)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO cases (case_id, status, subject, escaped_subject, kind, hold, csam, "
                "created_at, updated_at) "
                "VALUES ('ABU-OLD0-CSAM', 'closed', '', '', 'machine_report', false, true, :at, :at)"
            ),
            {"at": created},
        )
    schema.upgrade(engine)
    with Session(engine) as session:
        case = session.exec(sql_select(Case).where(Case.case_id == "ABU-OLD0-CSAM")).one()
        [mark] = session.exec(sql_select(CsamMark).where(CsamMark.case_pk == case.id)).all()
    engine.dispose()
    until = case.preserve_until
    until = until if until.tzinfo else until.replace(tzinfo=UTC)
    assert abs(until - (created + timedelta(days=365))) < timedelta(seconds=1)
    assert (mark.kind, mark.source) == ("csam", "machine_report")


def test_the_migrations_build_exactly_the_models(store_url: str) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext
    from sqlmodel import SQLModel

    from storage import schema
    from storage.engine import make_engine

    engine = make_engine(store_url)
    schema.upgrade(engine)
    with engine.connect() as conn:
        differences = compare_metadata(MigrationContext.configure(conn), SQLModel.metadata)
    engine.dispose()
    assert [d for d in differences if "fts" not in str(d)] == []
