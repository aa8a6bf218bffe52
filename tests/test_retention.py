"""Retention and audit (issue 9): holds, purge with the CSAM floor, and an audit trail of evidence exports."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import func, select, update
from sqlmodel import Session

from gateway.assembly import build_store
from storage.models import Case, InboxEntry
from tests.conftest import load_eml
from tests.conftest import run_cli as run


def _age(cli_config: Path, case_id: str, days: int, created_days: int | None = None) -> None:
    """Pretend a case was last touched (and created) that many days ago."""
    from gateway.config import load_config

    store = build_store(load_config(cli_config))
    then = datetime.now(UTC) - timedelta(days=days)
    created = datetime.now(UTC) - timedelta(days=created_days if created_days is not None else days)
    with Session(store.engine) as session, session.begin():
        session.execute(
            update(Case).where(Case.case_id == case_id).values(updated_at=then, created_at=created)
        )
    store.engine.dispose()


def _ingest(cli_config: Path, name: str) -> str:
    raw = load_eml(name).replace(b"Message-ID: <", f"Message-ID: <{uuid.uuid4().hex}".encode(), 1)
    return run(cli_config, "ingest", input=raw).strip()


def test_purge_removes_old_closed_cases_and_their_raw_bytes_but_not_held_or_open_ones(
    cli_config: Path,
) -> None:
    old_closed, held, still_open = (_ingest(cli_config, "report_phishing.eml") for _ in range(3))
    run(cli_config, "cases", "close", old_closed)
    run(cli_config, "cases", "close", held)
    run(cli_config, "cases", "hold", held)
    for case_id in (old_closed, held, still_open):
        _age(cli_config, case_id, 100)
    output = run(cli_config, "purge", "--older-than", "90")
    assert f"removed {old_closed}" in output and "purged 1 case(s)" in output
    remaining = {c["case_id"] for c in json.loads(run(cli_config, "cases", "list", "--json"))}
    assert remaining == {held, still_open}
    from gateway.config import load_config

    store = build_store(load_config(cli_config))
    with Session(store.engine) as session:
        assert session.exec(select(func.count()).select_from(InboxEntry)).one()[0] == 2
    run(cli_config, "cases", "release", held)
    assert f"removed {held}" in run(cli_config, "purge", "--older-than", "90")


def test_csam_case_is_kept_365_days_from_its_mark_whatever_the_setting(cli_config: Path) -> None:
    case_id = _ingest(cli_config, "xarf_v4_content_csam_attachment.eml")
    assert json.loads(run(cli_config, "cases", "show", case_id, "--metadata", "--json"))["csam"] is True
    run(cli_config, "cases", "close", case_id)
    _age(cli_config, case_id, days=200)
    assert "purged 0 case(s)" in run(cli_config, "purge", "--older-than", "30")
    # The year runs from the mark (issue 19), not from the case's creation.
    _age(cli_config, case_id, days=200, created_days=400)
    assert "purged 0 case(s)" in run(cli_config, "purge", "--older-than", "30")
    from gateway.config import load_config
    from storage.models import CsamMark

    store = build_store(load_config(cli_config))
    past = datetime.now(UTC) - timedelta(days=1)
    with Session(store.engine) as session, session.begin():
        session.execute(update(Case).where(Case.case_id == case_id).values(preserve_until=past))
        session.execute(update(CsamMark).values(preserve_until=past))
    store.engine.dispose()
    assert f"removed {case_id}" in run(cli_config, "purge", "--older-than", "30")


def test_raw_and_export_leave_an_audit_trail_naming_the_unix_user(cli_config: Path) -> None:
    import getpass

    case_id = _ingest(cli_config, "report_phishing.eml")
    run(cli_config, "cases", "raw", case_id, "1")
    run(cli_config, "cases", "export")
    events = json.loads(run(cli_config, "audit", "list", "--json"))
    assert [(e["action"], e["target"]) for e in events] == [("export", "all"), ("raw", f"{case_id} 1")]
    assert {e["actor"] for e in events} == {getpass.getuser()}


def test_purge_of_a_case_takes_the_cases_merged_into_it_and_leaves_no_dangling_link(cli_config: Path) -> None:
    target, merged = _ingest(cli_config, "report_phishing.eml"), _ingest(cli_config, "report_phishing.eml")
    run(cli_config, "cases", "merge", merged, target)
    run(cli_config, "cases", "close", target)
    _age(cli_config, target, 100)
    _age(cli_config, merged, 100)
    output = run(cli_config, "purge", "--older-than", "90")
    assert f"removed {target}" in output and f"removed {merged}" in output
    assert json.loads(run(cli_config, "cases", "list", "--json")) == []


def test_merge_carries_hold_to_the_case_that_receives_the_messages(cli_config: Path) -> None:
    target, held = _ingest(cli_config, "report_phishing.eml"), _ingest(cli_config, "report_phishing.eml")
    run(cli_config, "cases", "hold", held)
    run(cli_config, "cases", "merge", held, target)
    run(cli_config, "cases", "close", target)
    _age(cli_config, target, 100)
    assert "purged 0 case(s)" in run(cli_config, "purge", "--older-than", "90")
