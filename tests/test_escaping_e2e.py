"""What people see is escaped; what is kept is not (issue 3), through the real CLI."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from gateway.cli import main
from tests.conftest import CORPUS, load_eml
from tests.conftest import run_cli as run

LIVE_LINK = re.compile(r"https?://", re.IGNORECASE)


def test_html_report_is_shown_escaped_everywhere_and_kept_raw(cli_config: Path) -> None:
    raw = load_eml("report_html_links.eml")
    case_id = run(cli_config, "ingest", "--sender", "reporter@example.net", input=raw).strip()
    shown = run(cli_config, "cases", "show", case_id)
    view = json.loads(run(cli_config, "cases", "show", case_id, "--json"))
    listed = run(cli_config, "cases", "list") + run(cli_config, "cases", "list", "--json")
    exported = run(cli_config, "cases", "export")
    message = view["messages"][0]
    assert "click here (hxxps://phish[.]evil-bank[.]example[.]com/verify?u=1)" in message["text"]
    assert message["subject"] == "Phish at hxxps://evil-bank[.]example[.]com/login and www[.]bad[.]example"
    assert message["attachments"][0]["filename"] == "invoice[.]evil-bank[.]example[.]com[.]zip"
    assert "victim[@]mail[.]example[.]net" in message["text"]
    assert "198[.]51[.]100[.]23" in message["text"]
    assert "Username: rita" in message["text"] and "Password: hunter2:x" in message["text"]
    for text in (shown, message["text"], message["subject"], listed, exported):
        assert not LIVE_LINK.search(text.replace('"kind": "url", "value": "https://', ""))
    result = CliRunner().invoke(main, ["--config", str(cli_config), "cases", "raw", case_id, "1"])
    assert result.stdout_bytes == raw


def test_indicators_are_stored_once_normalised_and_searchable(cli_config: Path) -> None:
    case_id = run(cli_config, "ingest", input=load_eml("report_html_links.eml")).strip()
    other = run(cli_config, "ingest", input=load_eml("report_phishing.eml")).strip()
    view = json.loads(run(cli_config, "cases", "show", case_id, "--json"))
    pairs = {(i["kind"], i["value"]) for i in view["indicators"]}
    assert ("url", "https://phish.evil-bank.example.com/verify?u=1") in pairs
    assert ("ipv4", "198.51.100.23") in pairs and ("ipv6", "2001:db8::7") in pairs
    assert ("email", "victim@mail.example.net") in pairs
    assert len(view["indicators"]) == len(pairs)

    def found(query: str) -> list[str]:
        return [
            c["case_id"] for c in json.loads(run(cli_config, "cases", "list", "--indicator", query, "--json"))
        ]

    assert found("evil-bank.example.com") == [case_id]  # a domain matches URLs on it and its subdomains
    assert found("evil-bank[.]example[.]com") == [case_id]  # a defanged query works too
    assert found("hxxps://phish.evil-bank.example.com/verify?u=1") == [case_id]
    assert found("login-bank.example.com") == [other]
    assert found("nothing-here.example") == []


def test_defanged_report_text_is_recognised_not_doubled(cli_config: Path) -> None:
    raw = b"From: r@example.net\r\nSubject: x\r\n\r\nsafe: hxxps://bad[.]example/x and bad(.)example\r\n"
    case_id = run(cli_config, "ingest", input=raw).strip()
    view = json.loads(run(cli_config, "cases", "show", case_id, "--json"))
    assert "hxxps://bad[.]example/x" in view["messages"][0]["text"]
    assert ("domain", "bad.example") in {(i["kind"], i["value"]) for i in view["indicators"]}


@pytest.mark.skipif(not CORPUS.is_dir(), reason="../shared/corpus is absent")
def test_corpus_shows_no_live_link_in_any_text(tmp_path: Path) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text(
        f'[store]\nurl = "sqlite:///{tmp_path}/c.db"\n[confirm]\nenabled = false\n'
        f'secret_file = "{tmp_path}/key"\n'
    )
    run(path, "db", "upgrade")
    files = sorted(p for p in CORPUS.rglob("*") if p.is_file() and p.name != "README.md")
    run(path, "ingest", *[str(p) for p in files])
    lines = run(path, "cases", "export").split("\n")
    assert all("\u2028" not in line for line in lines)
    for line in filter(None, lines):
        case = json.loads(line)
        assert not LIVE_LINK.search(case["subject"] or "")
        for message in case["messages"]:
            for shown in (
                message["text"],
                message["subject"],
                *(a["filename"] or "" for a in message["attachments"]),
            ):
                assert not LIVE_LINK.search(shown), (case["case_id"], shown[:200])
            if "report" in message:
                assert not LIVE_LINK.search(json.dumps(message["report"]))
    assert hashlib.sha256(b"").hexdigest()  # the lossless half is pinned in test_cli
