"""The desk's command line (issue 17): times with offsets, filters and full-text search, case IDs as
people say them. Each through the real CLI on a real store (SQLite and PostgreSQL)."""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import update
from sqlmodel import Session

from gateway.assembly import build_store
from gateway.config import load_config
from storage.models import Case
from tests.conftest import load_eml, run_cli

ROOT = Path(__file__).resolve().parents[1]


def _cli(config: Path, *args: str, input: bytes | None = None) -> tuple[int, str, str]:
    """The real CLI entry point, in-process (click's runner keeps stdout and stderr apart): a subprocess
    per call cost the suite a Python start-up each time, and these tests are about what the CLI says."""
    from click.testing import CliRunner

    from gateway.cli import main

    result = CliRunner().invoke(main, ["--config", str(config), *args], input=input)
    return result.exit_code, result.stdout_bytes.decode("utf-8", "replace"), result.stderr


def _ingest(config: Path, name: str = "report_phishing.eml", sender: str = "reporter@example.net") -> str:
    raw = load_eml(name).replace(b"{nonce}", uuid.uuid4().hex.encode())
    raw = raw.replace(b"Message-ID: <report-1@", f"Message-ID: <{uuid.uuid4().hex}@".encode())
    return run_cli(config, "ingest", "--sender", sender, input=raw).strip()


def _set_updated(config: Path, case_id: str, at: datetime) -> None:
    store = build_store(load_config(config))
    with Session(store.engine) as session, session.begin():
        session.execute(update(Case).where(Case.case_id == case_id).values(updated_at=at, created_at=at))
    store.engine.dispose()


def _listed(config: Path, *args: str) -> list[str]:
    return [row["case_id"] for row in json.loads(run_cli(config, "cases", "list", "--json", *args))]


def test_export_since_honours_the_offset_of_the_instant_given(cli_config: Path) -> None:
    early, late = _ingest(cli_config), _ingest(cli_config)
    _set_updated(cli_config, early, datetime(2026, 12, 1, 19, 0, tzinfo=UTC))
    _set_updated(cli_config, late, datetime(2026, 12, 1, 20, 0, tzinfo=UTC))
    for since in ("2026-12-01T20:45:00+01:00", "2026-12-01T14:45:00-05:00", "2026-12-01T19:45:00Z"):
        exported = run_cli(cli_config, "cases", "export", "--since", since).splitlines()
        assert [json.loads(line)["case_id"] for line in exported] == [late], since
        assert _listed(cli_config, "--since", since) == [late], since
    # Naive means UTC, and says so in --help.
    assert _listed(cli_config, "--since", "2026-12-01T19:45:00") == [late]
    assert _listed(cli_config, "--until", "2026-12-01T19:45:00") == [early]
    assert "no offset = UTC" in run_cli(cli_config, "cases", "list", "--help")


def test_list_accepts_relative_durations(cli_config: Path) -> None:
    old, new = _ingest(cli_config), _ingest(cli_config)
    _set_updated(cli_config, old, datetime.now(UTC) - timedelta(days=3))
    assert _listed(cli_config, "--since", "24h") == [new]
    assert _listed(cli_config, "--since", "90m") == [new]
    assert set(_listed(cli_config, "--since", "7d")) == {old, new}
    code, _, err = _cli(cli_config, "cases", "list", "--since", "yesterday-ish")
    assert code == 2 and "90m, 24h, 7d" in err


def test_every_time_the_list_prints_carries_its_offset(cli_config: Path) -> None:
    _ingest(cli_config)
    [line] = run_cli(cli_config, "cases", "list").splitlines()
    assert "+00:00" in line


def test_text_search_finds_a_url_by_its_live_or_its_escaped_form(cli_config: Path) -> None:
    phishing = _ingest(cli_config)
    _ingest(cli_config, "report_second_reporter_wire.eml", sender="treasurer@example.com")
    assert _listed(cli_config, "--text", "login-bank.example.com") == [phishing]
    assert _listed(cli_config, "--text", "hxxps://login-bank[.]example[.]com/verify") == [phishing]
    assert _listed(cli_config, "--text", "card numbers") == [phishing]
    assert _listed(cli_config, "--text", "Impersonating") == [phishing]  # the subject, any case
    assert _listed(cli_config, "--text", "nowhere-to-be-found") == []
    # Nothing a user types is query syntax: quotes, NEAR, column filters, a lone star.
    for odd in ('"', "body:card NEAR(x)", "*", "a OR", "'; DROP TABLE cases; --"):
        code, _, err = _cli(cli_config, "cases", "list", "--text", odd)
        assert code == 0 and "Traceback" not in err, odd


def test_text_search_forgets_a_purged_case(cli_config: Path) -> None:
    phishing = _ingest(cli_config)
    run_cli(cli_config, "cases", "close", phishing)
    _set_updated(cli_config, phishing, datetime.now(UTC) - timedelta(days=400))
    run_cli(cli_config, "purge", "--older-than", "30")
    assert _listed(cli_config, "--text", "card numbers") == []
    again = _ingest(cli_config)
    assert _listed(cli_config, "--text", "card numbers") == [again]


def test_list_filters_by_reporter_kind_and_flag(cli_config: Path) -> None:
    phishing = _ingest(cli_config)
    wire = _ingest(cli_config, "report_second_reporter_wire.eml", sender="treasurer@example.com")
    assert _listed(cli_config, "--reporter", "treasurer@example.com") == [wire]
    assert _listed(cli_config, "--reporter", "REPORTER@example.net") == [phishing]
    assert set(_listed(cli_config, "--kind", "report")) == {phishing, wire}
    assert _listed(cli_config, "--kind", "machine_report") == []
    assert _listed(cli_config, "--flag", "processing_failed") == []
    assert _listed(cli_config, "--indicator", "login-bank.example.com", "--reporter", "x@y.example") == []


@pytest.mark.parametrize(
    ("option", "value"), [("--status", "opened"), ("--kind", "phishing"), ("--limit", "0")]
)
def test_unknown_filter_value_is_a_usage_error_not_an_empty_list(
    cli_config: Path, option: str, value: str
) -> None:
    code, out, err = _cli(cli_config, "cases", "list", option, value)
    assert code == 2 and out == "" and option in err


def test_a_cut_list_says_so_on_stderr(cli_config: Path) -> None:
    for _ in range(3):
        _ingest(cli_config)
    code, out, err = _cli(cli_config, "cases", "list", "--limit", "2")
    assert code == 0 and len(out.splitlines()) == 2
    assert "showing 2 of 3" in err
    code, out, err = _cli(cli_config, "cases", "list", "--limit", "3")
    assert "showing" not in err


def test_case_ids_are_accepted_as_people_say_them(cli_config: Path) -> None:
    case_id = _ingest(cli_config)
    prefix, first, second = case_id.split("-")
    spoken = [
        case_id.lower(),
        f"{prefix.lower()} {first.lower()} {second.lower()}",
        f"{prefix}{first}{second}",
        f"{first}-{second}",
        case_id.replace("0", "O").replace("1", "l"),
    ]
    for typed in spoken:
        code, out, err = _cli(cli_config, "cases", "show", typed, "--json")
        assert code == 0, (typed, err)
        assert json.loads(out)["case_id"] == case_id


def test_a_case_id_failing_its_check_character_says_so_and_an_unknown_one_says_no_case(
    cli_config: Path,
) -> None:
    from parsers.case_ref import new_case_id

    case_id = _ingest(cli_config)
    last = case_id[-1]
    typo = case_id[:-1] + ("2" if last != "2" else "3")
    code, _, err = _cli(cli_config, "cases", "show", typo)
    assert code == 2 and "not a valid case ID: check character" in err
    unknown = new_case_id()
    code, _, err = _cli(cli_config, "cases", "raw", unknown, "1")
    assert code == 1 and ("no message" in err or "no case" in err)
    code, _, err = _cli(cli_config, "cases", "show", unknown)
    assert code == 1 and f"no case {unknown}" in err


def test_the_postgresql_search_repeats_the_index_expression() -> None:
    """The query must spell the migration's expression exactly, or PostgreSQL scans every message."""
    import importlib

    from storage import search

    migration = importlib.import_module("storage.migrations.versions.0008_full_text_search")
    assert migration.PG_TSVECTOR == search.PG_TSVECTOR
    assert migration.FTS_TEXT_CHARS == search.FTS_TEXT_CHARS


def _cli_on(gateway, tmp_path: Path) -> Path:  # type: ignore[no-untyped-def]
    path = tmp_path / "cli.toml"
    path.write_text(
        f'[store]\nurl = "{gateway.service.config.store.url}"\nspool_dir = "{tmp_path}/cli-spool"\n'
        f'[confirm]\nenabled = false\noutbox_dir = "{tmp_path}/cli-outbox"\nsecret_file = "{tmp_path}/k"\n'
    )
    return path


def test_outbox_keeps_the_exact_bytes_sent_through_the_smarthost(
    gateway_factory, store_url: str, smtp_sink, tmp_path: Path
) -> None:
    confirming = gateway_factory(store_url, confirm={"smarthost": smtp_sink.address})
    confirming.send(load_eml("report_phishing.eml"))
    [(_, _, delivered)] = smtp_sink.wait_for(1)
    rows = confirming.wait_outbox(lambda rows: bool(rows) and rows[0]["state"] == "sent")
    config = _cli_on(confirming, tmp_path)
    [case] = confirming.store.list_cases()

    code, out, err = _cli(config, "outbox", "show", str(rows[0]["id"]))
    assert code == 0, err
    assert out.encode() == delivered.replace(b"\r\n", b"\n")
    listed = json.loads(run_cli(config, "outbox", "list", "--case", case["case_id"].lower(), "--json"))
    assert [r["id"] for r in listed] == [rows[0]["id"]] and listed[0]["bytes"] > 0
    assert (
        json.loads(run_cli(config, "outbox", "list", "--case", _other_case_id(case["case_id"]), "--json"))
        == []
    )
    shown = run_cli(config, "cases", "show", case["case_id"])
    assert f"Sent: #{rows[0]['id']} confirmation to reporter[@]example[.]net: sent" in shown
    assert (
        json.loads(run_cli(config, "cases", "show", case["case_id"], "--json"))["outbox"][0]["state"]
        == "sent"
    )


def _other_case_id(case_id: str) -> str:
    from parsers.case_ref import new_case_id

    other = new_case_id()
    return other if other != case_id else new_case_id()


def test_cases_show_names_things_in_words_and_is_audited(gateway, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    raw = load_eml("report_phishing.eml")
    gateway.send(raw, mail_from="bounce-handler@mta.example.net")
    gateway.wait_idle()
    [case] = gateway.store.list_cases()
    reply = (
        f"From: Rita Reporter <reporter@example.net>\r\nTo: abuse@example.org\r\n"
        f"Subject: Re: [{case['case_id']}] We received your report\r\n"
        f"Message-ID: <{uuid.uuid4().hex}@mail.example.net>\r\n\r\nThe zip password is: infected\r\n"
    ).encode()
    gateway.send(reply, mail_from="bounce-handler@mta.example.net")
    gateway.wait_idle()
    config = _cli_on(gateway, tmp_path)
    shown = run_cli(config, "cases", "show", case["case_id"])
    assert "From: reporter[@]example[.]net   (header)" in shown
    assert "Envelope sender: bounce-handler[@]mta[.]example[.]net" in shown
    assert "Threading: opened a new case" in shown
    assert "Threading: joined by the case ID in the subject" in shown
    assert "Kind: written by a person" in shown
    assert "Envelope recipients: abuse[@]example[.]org" in shown
    assert "Client address: 127[.]0[.]0[.]1" in shown
    assert f"Size: {len(raw)} bytes  sha256 {hashlib.sha256(raw).hexdigest()}" in shown
    assert "CSAM: no; legal hold: no" in shown
    assert "None" not in shown
    audit = json.loads(run_cli(config, "audit", "list", "--json"))
    assert any(e["action"] == "show" and e["target"] == case["case_id"] for e in audit)


def test_full_text_triggers_survive_migrations_that_rebuild_the_messages_table(tmp_path: Path) -> None:
    """SQLite drops a table's triggers when alembic's batch mode rebuilds it (0006 rebuilt `messages`
    after a first draft of the search index): `db upgrade` must leave search in step whatever the order."""
    import sqlite3

    from storage import schema
    from storage.engine import make_engine

    engine = make_engine(f"sqlite:///{tmp_path}/c.db")
    schema.upgrade(engine)
    engine.dispose()
    names = {row[0] for row in sqlite3.connect(tmp_path / "c.db").execute("SELECT name FROM sqlite_master")}
    assert {"messages_fts_insert", "messages_fts_delete", "messages_fts_update"} <= names
