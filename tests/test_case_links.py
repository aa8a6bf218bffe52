"""The same reporter writing again without the case ID (issue 16): linked, never lost; and the desk's
merge and split, each audited, reversible, with the raw evidence untouched and case IDs never reused."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from tests.conftest import RunningGateway

ROOT = Path(__file__).resolve().parents[1]


def _mail(subject: str, body: str, *, sender: str = "reporter@example.net") -> bytes:
    lines = [
        f"From: {sender}",
        "To: abuse@example.org",
        f"Subject: {subject}",
        f"Message-ID: <{uuid.uuid4().hex}@mail.example.net>",
        "Content-Type: text/plain; charset=utf-8",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n" + body + "\r\n").encode()


FIRST = _mail("Phishing page at your bank", "The page https://login-first.example.com/verify steals cards.")
SECOND = _mail("forgot one more thing", "Also https://second-site.example.net/x and the password: hunter2")


@pytest.fixture
def config_file(tmp_path: Path, gateway: RunningGateway) -> Path:
    """A config for the real CLI on the running gateway's store."""
    path = tmp_path / "cli.toml"
    path.write_text(
        f'[store]\nurl = "{gateway.service.config.store.url}"\nspool_dir = "{tmp_path}/cli-spool"\n'
        f'[confirm]\nenabled = false\noutbox_dir = "{tmp_path}/outbox"\nsecret_file = "{tmp_path}/key"\n'
    )
    return path


def _cli(config: Path, *args: str, input: bytes | None = None) -> tuple[int, str, str]:
    """The real CLI entry point, in-process (click's runner keeps stdout and stderr apart): a subprocess
    per call cost the suite a Python start-up each time, and these tests are about what the CLI says."""
    from click.testing import CliRunner

    from gateway.cli import main

    result = CliRunner().invoke(main, ["--config", str(config), *args], input=input)
    return result.exit_code, result.stdout_bytes.decode("utf-8", "replace"), result.stderr


def _show(config: Path, case_id: str) -> dict:
    code, out, err = _cli(config, "cases", "show", case_id, "--json")
    assert code == 0, err
    return json.loads(out)


def _two_reports(gateway: RunningGateway, second: bytes = SECOND, sender: str = "reporter@example.net"):
    gateway.send(FIRST)
    gateway.wait_idle()
    gateway.send(second, mail_from=sender)
    gateway.wait_idle()
    newest, oldest = (c["case_id"] for c in gateway.store.list_cases())
    return oldest, newest


def test_second_report_from_the_same_reporter_without_case_id_is_linked_both_ways(
    gateway: RunningGateway, config_file: Path
) -> None:
    first, second = _two_reports(gateway)
    later = _show(config_file, second)
    earlier = _show(config_file, first)
    assert [(r["case_id"], r["relation"]) for r in later["related"]] == [(first, "same_reporter")]
    assert [(r["case_id"], r["relation"]) for r in earlier["related"]] == [(second, "same_reporter")]
    code, out, _ = _cli(config_file, "cases", "show", first)
    assert code == 0 and f"Related: {second}" in out


def test_report_from_another_reporter_is_not_linked(gateway: RunningGateway, config_file: Path) -> None:
    other = _mail("unrelated", "nothing to see", sender="someone-else@example.com")
    first, second = _two_reports(gateway, other, sender="someone-else@example.com")
    assert _show(config_file, second)["related"] == []
    assert _show(config_file, first)["related"] == []


def test_merge_moves_messages_keeps_raw_bytes_and_mail_naming_the_merged_id_joins_the_target(
    gateway: RunningGateway, config_file: Path
) -> None:
    first, second = _two_reports(gateway)
    code, out, err = _cli(config_file, "cases", "merge", second, first)
    assert code == 0, err
    assert f"{second} merged into {first}" in out

    target, merged = _show(config_file, first), _show(config_file, second)
    assert [m["index"] for m in target["messages"]] == [1, 2]
    assert merged["status"] == "merged" and merged["merged_into"] == first and merged["messages"] == []
    assert {"kind": "url", "value": "https://second-site.example.net/x"} in target["indicators"]
    code, raw, _ = _cli(config_file, "cases", "raw", first, "2")
    assert code == 0 and raw.encode() == SECOND

    gateway.send(_mail(f"Re: [{second}] we received your report", "and one more: hunter3"))
    gateway.wait_idle()
    target = _show(config_file, first)
    assert [m["thread_signal"] for m in target["messages"]][-1] == "subject"
    assert len(_show(config_file, second)["messages"]) == 0
    code, out, _ = _cli(config_file, "audit", "list", "--json")
    assert any(e["action"] == "merge" and second in e["target"] for e in json.loads(out))


def test_unmerge_puts_every_message_back_where_it_was(gateway: RunningGateway, config_file: Path) -> None:
    first, second = _two_reports(gateway)
    assert _cli(config_file, "cases", "merge", second, first)[0] == 0
    code, _, err = _cli(config_file, "cases", "unmerge", second)
    assert code == 0, err

    restored, target = _show(config_file, second), _show(config_file, first)
    assert restored["status"] == "open" and restored["merged_into"] is None
    assert [m["index"] for m in restored["messages"]] == [1]
    assert [m["index"] for m in target["messages"]] == [1]
    assert {"kind": "url", "value": "https://second-site.example.net/x"} not in target["indicators"]
    assert _cli(config_file, "cases", "raw", second, "1")[1].encode() == SECOND


def test_split_moves_one_message_into_a_new_linked_case_and_unsplit_returns_it(
    gateway: RunningGateway, config_file: Path
) -> None:
    gateway.send(FIRST)
    gateway.wait_idle()
    [case] = gateway.store.list_cases()
    case_id = case["case_id"]
    amendment = _mail(f"Re: [{case_id}] report", "unrelated new abuse at https://third.example.org/p")
    gateway.send(amendment)
    gateway.wait_idle()

    code, out, err = _cli(config_file, "cases", "split", case_id, "2")
    assert code == 0, err
    new_id = out.split()[-1]
    assert new_id != case_id and new_id.startswith("ABU-")
    split = _show(config_file, new_id)
    assert [(m["index"], m["kind"]) for m in split["messages"]] == [(1, "report")]
    assert {"kind": "url", "value": "https://third.example.org/p"} in split["indicators"]
    assert [(r["case_id"], r["relation"]) for r in split["related"]] == [(case_id, "split_from")]
    assert _cli(config_file, "cases", "raw", new_id, "1")[1].encode() == amendment
    assert len(_show(config_file, case_id)["messages"]) == 1

    code, _, err = _cli(config_file, "cases", "unsplit", new_id)
    assert code == 0, err
    back = _show(config_file, case_id)
    assert [m["index"] for m in back["messages"]] == [1, 2]
    assert _show(config_file, new_id)["status"] == "merged"
    code, out, _ = _cli(config_file, "audit", "list", "--json")
    assert {"split", "unsplit"} <= {e["action"] for e in json.loads(out)}


def test_merge_into_itself_or_an_unknown_case_is_refused_in_words(
    gateway: RunningGateway, config_file: Path
) -> None:
    gateway.send(FIRST)
    gateway.wait_idle()
    [case] = gateway.store.list_cases()
    code, _, err = _cli(config_file, "cases", "merge", case["case_id"], case["case_id"])
    assert code == 2 and "cannot be merged into itself" in err and "Traceback" not in err
    code, _, err = _cli(config_file, "cases", "merge", case["case_id"], "ABU-0000-0000")
    assert code == 1 and "no case" in err
    code, _, err = _cli(config_file, "cases", "split", case["case_id"], "1")
    assert code == 2 and "only that message" in err
