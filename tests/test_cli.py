"""The command line as a user runs it: `abuse-gateway …` / `python -m gateway …` with a config file."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from gateway.cli import EX_TEMPFAIL, EX_USAGE, main
from tests.conftest import CORPUS, load_eml, upgrade_store

ROOT = Path(__file__).resolve().parents[1]


def _write_config(tmp_path: Path, store_url: str, extra: str = "") -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(
        f"""
[smtp]
listen = ["127.0.0.1:0"]
hostname = "mx.test.example"

[intake]
addresses = ["abuse@example.org"]

[store]
url = "{store_url}"
spool_dir = "{tmp_path / "spool"}"

[confirm]
from = "abuse@example.org"
outbox_dir = "{tmp_path / "outbox"}"
secret_file = "{tmp_path / "reply-token.key"}"
smarthost_password = "hunter2"
{extra}
"""
    )
    return path


def _cli(config: Path, *args: str, input: bytes | None = None) -> tuple[int, bytes, bytes]:
    """The real entry point in a subprocess, as an MTA pipe or an operator would run it."""
    env = {**os.environ, "ABUSE_GATEWAY_CONFIG": str(config)}
    proc = subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        input=input,
        capture_output=True,
        env=env,
        cwd=ROOT,
        timeout=120,
    )
    return proc.returncode, proc.stdout, proc.stderr


@pytest.fixture
def configured(tmp_path: Path, store_url: str) -> Path:
    config = _write_config(tmp_path, store_url)
    upgrade_store(store_url)
    return config


def invoke(config: Path, *args: str, input: bytes | None = None):
    return CliRunner().invoke(main, ["--config", str(config), *args], input=input)


def test_ingest_from_stdin_prints_the_case_id_and_cases_raw_returns_the_exact_bytes(configured: Path) -> None:
    raw = load_eml("report_phishing.eml")
    code, out, err = _cli(configured, "ingest", "--sender", "reporter@example.net", input=raw)
    assert code == 0, err
    case_id = out.decode().strip()
    assert case_id.startswith("ABU-")
    code, out, err = _cli(configured, "cases", "raw", case_id, "1")
    assert code == 0, err
    assert out == raw


def test_cases_show_json_has_the_contract_fields(configured: Path) -> None:
    result = invoke(
        configured, "ingest", "--sender", "reporter@example.net", input=load_eml("report_phishing.eml")
    )
    case_id = result.output.strip()
    view = json.loads(invoke(configured, "cases", "show", case_id, "--json").output)
    for key in ("case_id", "status", "reporter", "created_at", "updated_at", "messages", "indicators"):
        assert key in view
    message = view["messages"][0]
    for key in (
        "index",
        "kind",
        "sender",
        "subject",
        "received_at",
        "message_id",
        "sha256",
        "thread_signal",
        "text",
        "attachments",
        "defects",
        "flags",
    ):
        assert key in message
    listed = json.loads(invoke(configured, "cases", "list", "--json").output)
    assert [c["case_id"] for c in listed] == [case_id]
    assert {"case_id", "status", "reporter", "subject", "messages", "created_at"} <= set(listed[0])
    exported = [json.loads(line) for line in invoke(configured, "cases", "export").output.splitlines()]
    assert exported[0]["case_id"] == case_id and exported[0]["messages"][0]["sha256"] == message["sha256"]


def test_unknown_case_exits_1(configured: Path) -> None:
    assert invoke(configured, "cases", "show", "ABU-0000-0000").exit_code == 1


def test_ingest_of_a_maildir_prints_one_case_id_per_message(configured: Path, tmp_path: Path) -> None:
    import mailbox

    box = mailbox.Maildir(str(tmp_path / "Maildir"), create=True)
    for n in range(3):
        box.add(
            load_eml("report_foreign_subject_template.eml")
            .replace(b"{subject}", f"spam {n}".encode())
            .replace(b"{message_id}", f"m{n}".encode())
        )
    result = invoke(configured, "ingest", str(tmp_path / "Maildir"))
    assert result.exit_code == 0, result.output
    assert len(set(result.output.split())) == 3


def test_ingest_exits_75_when_store_and_spool_are_unavailable(tmp_path: Path) -> None:
    blocked = tmp_path / "not-a-dir"
    blocked.write_text("a file where the store and spool directories should be")
    config = tmp_path / "gateway.toml"
    config.write_text(
        f'[store]\nurl = "sqlite:///{blocked}/sub/cases.db"\n'
        f'spool_dir = "{blocked}/spool"\ncommit_budget = 1\n'
        f'[confirm]\nsecret_file = "{tmp_path}/key"\n'
    )
    code, _, err = _cli(config, "ingest", input=load_eml("report_phishing.eml"))
    assert code == EX_TEMPFAIL, err


def test_bad_config_value_exits_2_and_names_the_key(tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text('[smtp]\nmax_recipients = "many"\n')
    result = invoke(config, "check-config")
    assert result.exit_code == EX_USAGE
    assert "[smtp] `max_recipients`: must be a whole number" in result.output


def test_environment_overrides_the_config_file(tmp_path: Path) -> None:
    config = _write_config(tmp_path, f"sqlite:///{tmp_path}/cases.db")
    env = {
        **os.environ,
        "ABUSE_GATEWAY_SMTP_MAX_RECIPIENTS": "7",
        "ABUSE_GATEWAY_INTAKE_ADDRESSES": "abuse@a.example,abuse@b.example",
    }
    proc = subprocess.run(
        [sys.executable, "-m", "gateway", "check-config", "--config", str(config)],
        capture_output=True,
        env=env,
        cwd=ROOT,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    settings = json.loads(proc.stdout.decode().split("\n", 1)[1])
    assert settings["smtp"]["max_recipients"] == 7
    assert settings["intake"]["addresses"] == ["abuse@a.example", "abuse@b.example"]


def test_check_config_masks_secrets(tmp_path: Path) -> None:
    result = invoke(_write_config(tmp_path, f"sqlite:///{tmp_path}/c.db"), "check-config")
    assert result.exit_code == 0
    assert "hunter2" not in result.output and "********" in result.output


def test_check_config_with_no_config_warns_about_the_missing_smarthost(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "gateway", "check-config"],
        capture_output=True,
        cwd=tmp_path,
        env={k: v for k, v in os.environ.items() if not k.startswith("ABUSE_GATEWAY")},
        timeout=60,
    )
    assert proc.returncode == 0
    assert b"127.0.0.1:2525" in proc.stdout
    assert b"smarthost" in proc.stderr


def test_serve_refuses_a_store_that_needs_upgrading(tmp_path: Path) -> None:
    config = _write_config(tmp_path, f"sqlite:///{tmp_path}/fresh.db")
    code, _, err = _cli(config, "serve")
    assert code == EX_USAGE
    assert b"db upgrade" in err


def test_reprocess_failed_retries_a_processing_failed_message(
    gateway_factory, sqlite_url: str, tmp_path: Path
) -> None:
    def broken(raw: bytes):
        raise ValueError("boom")

    gateway = gateway_factory(sqlite_url, parse=broken)
    gateway.send(load_eml("report_phishing.eml"))
    gateway.wait_idle(timeout=30)
    gateway.stop()
    config = _write_config(tmp_path, sqlite_url)
    result = invoke(config, "reprocess", "--failed")
    assert result.exit_code == 0, result.output
    assert "reprocessed 1" in result.output
    [case] = json.loads(invoke(config, "cases", "list", "--json").output)
    view = json.loads(invoke(config, "cases", "show", case["case_id"], "--json").output)
    assert "processing_failed" not in view["messages"][0]["flags"]
    assert view["messages"][0]["subject"].startswith("Phishing site")
    assert view["indicators"]  # the failed attempt indexed nothing; the retry did
    assert invoke(config, "reprocess", "--all").exit_code == 0
    again = json.loads(invoke(config, "cases", "show", case["case_id"], "--json").output)
    assert again["indicators"] == view["indicators"]  # a second pass adds no copies


@pytest.mark.skipif(not CORPUS.is_dir(), reason="../shared/corpus is absent")
def test_every_corpus_file_is_ingested_losslessly(tmp_path: Path) -> None:
    config = _write_config(tmp_path, f"sqlite:///{tmp_path}/corpus.db")
    assert invoke(config, "db", "upgrade").exit_code == 0
    files = sorted(p for p in CORPUS.rglob("*") if p.is_file() and p.name != "README.md")
    code, out, err = _cli(config, "ingest", *[str(p) for p in files])
    assert code == 0, err[-2000:]
    case_ids = out.decode().split()
    assert len(case_ids) == len(files)
    assert all(c.startswith("ABU-") for c in case_ids)
    from sqlalchemy import select
    from sqlmodel import Session

    from storage.engine import make_engine
    from storage.models import InboxEntry

    engine = make_engine(f"sqlite:///{tmp_path}/corpus.db")
    with Session(engine) as session:
        stored = [
            (e.sha256, hashlib.sha256(e.raw).hexdigest()) for e in session.exec(select(InboxEntry)).scalars()
        ]
    assert sorted(s for s, _ in stored) == sorted(hashlib.sha256(p.read_bytes()).hexdigest() for p in files)
    assert all(a == b for a, b in stored)
