"""The desk's people (issue 20): users and roles from the CLI, argon2id hashes, sessions that end when they
should, failed logins counted across processes, and case assignment and notes audited. Through the real CLI
(click's runner) on a real store, SQLite and PostgreSQL."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import update
from sqlmodel import Session, select

from gateway.assembly import build_store
from gateway.config import load_config
from gateway.passwords import hash_password, needs_rehash, verify_password
from storage.desk_models import DeskSession
from storage.users import UserError, token_hash
from storage.util import _now
from tests.conftest import load_eml, run_cli

GOOD = "correct horse battery"


def _cli(config: Path, *args: str, input: str | bytes | None = None) -> tuple[int, str, str]:
    from click.testing import CliRunner

    from gateway.cli import main

    result = CliRunner().invoke(main, ["--config", str(config), *args], input=input)
    return result.exit_code, result.stdout_bytes.decode("utf-8", "replace"), result.stderr


def _store(config: Path):  # type: ignore[no-untyped-def]
    return build_store(load_config(config))


def _password_file(tmp_path: Path, password: str = GOOD) -> str:
    path = tmp_path / f"pw-{uuid.uuid4().hex}"
    path.write_text(password + "\n")
    return str(path)


def _add(config: Path, tmp_path: Path, name: str, role: str = "analyst") -> None:
    run_cli(config, "users", "add", name, "--role", role, "--password-file", _password_file(tmp_path))


def _audit(config: Path) -> list[dict[str, str]]:
    return json.loads(run_cli(config, "audit", "list", "--json"))


def _ingest(config: Path) -> str:
    raw = load_eml("report_phishing.eml").replace(b"{nonce}", uuid.uuid4().hex.encode())
    raw = raw.replace(b"Message-ID: <report-1@", f"Message-ID: <{uuid.uuid4().hex}@".encode())
    return run_cli(config, "ingest", "--sender", "reporter@example.net", input=raw).strip()


def test_argon2id_hashes_verify_and_never_raise() -> None:
    encoded = hash_password(GOOD)
    assert encoded.startswith("$argon2id$")
    assert verify_password(encoded, GOOD)
    assert not verify_password(encoded, GOOD + "x")
    assert not verify_password("not a hash", GOOD)
    assert not verify_password(None, GOOD)  # no user: still a full verification's time, still False
    assert not needs_rehash(encoded)


def test_users_add_list_passwd_disable_enable_role(cli_config: Path, tmp_path: Path) -> None:
    _add(cli_config, tmp_path, "alice", "admin")
    [row] = json.loads(run_cli(cli_config, "users", "list", "--json"))
    assert (row["name"], row["role"], row["disabled"], row["last_login_at"]) == (
        "alice",
        "admin",
        False,
        None,
    )
    assert "argon2" not in json.dumps(row) and "hash" not in json.dumps(row)
    assert "alice" in run_cli(cli_config, "users", "list")
    store = _store(cli_config)
    first = store.users.get("alice").password_hash
    assert verify_password(first, GOOD)

    run_cli(
        cli_config,
        "users",
        "passwd",
        "alice",
        "--password-file",
        _password_file(tmp_path, "another long one"),
    )
    assert verify_password(store.users.get("alice").password_hash, "another long one")
    run_cli(cli_config, "users", "role", "alice", "csam")
    assert store.users.get("alice").role == "csam"
    run_cli(cli_config, "users", "disable", "alice")
    assert store.users.get("alice").disabled
    run_cli(cli_config, "users", "enable", "alice")
    assert not store.users.get("alice").disabled

    actions = [(e["action"], e["target"]) for e in _audit(cli_config) if e["action"].startswith("user_")]
    assert actions[::-1] == [
        ("user_add", "alice role admin"),
        ("user_passwd", "alice"),
        ("user_role", "alice role csam"),
        ("user_disable", "alice"),
        ("user_enable", "alice"),
    ]
    assert all(e["actor"] for e in _audit(cli_config))
    store.engine.dispose()


def test_duplicate_name_is_refused_in_any_case(cli_config: Path, tmp_path: Path) -> None:
    _add(cli_config, tmp_path, "alice")
    for name in ("alice", "ALICE"):
        code, _, err = _cli(
            cli_config, "users", "add", name, "--role", "support", "--password-file", _password_file(tmp_path)
        )
        assert code == 2 and "exists" in err


def test_bad_role_and_bad_name_are_refused(cli_config: Path, tmp_path: Path) -> None:
    code, _, err = _cli(
        cli_config, "users", "add", "bob", "--role", "root", "--password-file", _password_file(tmp_path)
    )
    assert code == 2 and "root" in err
    for name in ("", "a b", "<script>", "x" * 65, "bob\x1b[31m", "b\u202eob", "bob/../x"):
        code, _, err = _cli(
            cli_config, "users", "add", name, "--role", "support", "--password-file", _password_file(tmp_path)
        )
        assert code == 2, name
        assert "\x1b" not in err and "\u202e" not in err
    assert json.loads(run_cli(cli_config, "users", "list", "--json")) == []
    store = _store(cli_config)
    with pytest.raises(UserError):
        store.users.add("bob", "superuser", None)
    with pytest.raises(UserError):
        store.users.add("bad name", "support", None)
    store.engine.dispose()


def test_short_and_empty_passwords_are_refused(cli_config: Path, tmp_path: Path) -> None:
    for password in ("", "short", "eleven char"):
        code, _, err = _cli(
            cli_config,
            "users",
            "add",
            "bob",
            "--role",
            "support",
            "--password-file",
            _password_file(tmp_path, password),
        )
        assert code == 2 and ("empty" in err or "12 characters" in err), password
    empty = tmp_path / "empty"
    empty.write_text("")
    code, _, err = _cli(cli_config, "users", "add", "bob", "--role", "support", "--password-file", str(empty))
    assert code == 2 and "empty" in err
    assert json.loads(run_cli(cli_config, "users", "list", "--json")) == []


def test_password_file_takes_the_first_line_without_its_newline(cli_config: Path, tmp_path: Path) -> None:
    path = tmp_path / "pw"
    path.write_text("first line is the one\nsecond line is not\n")
    run_cli(cli_config, "users", "add", "carol", "--role", "support", "--password-file", str(path))
    store = _store(cli_config)
    assert verify_password(store.users.get("carol").password_hash, "first line is the one")
    store.engine.dispose()


def test_password_prompt_asks_twice_and_must_match(cli_config: Path) -> None:
    code, out, _ = _cli(cli_config, "users", "add", "dave", "--role", "analyst", input=f"{GOOD}\n{GOOD}\n")
    assert code == 0, out
    assert GOOD not in out  # hidden input is not echoed
    store = _store(cli_config)
    assert verify_password(store.users.get("dave").password_hash, GOOD)
    # A mismatch asks again; the second pair wins.
    code, out, _ = _cli(
        cli_config,
        "users",
        "passwd",
        "dave",
        input=f"{GOOD}\nsomething else!\nnew password 123\nnew password 123\n",
    )
    assert code == 0 and "match" in out
    assert verify_password(store.users.get("dave").password_hash, "new password 123")
    store.engine.dispose()


def test_unknown_user_is_not_found(cli_config: Path) -> None:
    for args in (("disable", "nobody"), ("enable", "nobody"), ("role", "nobody", "admin")):
        code, _, err = _cli(cli_config, "users", *args)
        assert code == 1 and "no user" in err


def test_sessions_expire_and_end_with_disable_and_passwd(cli_config: Path, tmp_path: Path) -> None:
    _add(cli_config, tmp_path, "erin")
    store = _store(cli_config)
    token, csrf = store.users.create_session("erin", 3600)
    live = store.users.session(token)
    assert live is not None and (live.name, live.role, live.csrf_token) == ("erin", "analyst", csrf)
    assert store.users.get("erin").last_login_at is not None
    assert store.users.session(token + "x") is None and store.users.session("") is None
    # The store keeps the token's hash, never the token.
    with Session(store.engine) as session:
        [row] = session.exec(select(DeskSession)).all()
        assert row.token_hash == token_hash(token) and token not in row.token_hash

    # A role change applies to live sessions at once.
    run_cli(cli_config, "users", "role", "erin", "support")
    assert store.users.session(token).role == "support"

    run_cli(cli_config, "users", "disable", "erin")
    assert store.users.session(token) is None
    with pytest.raises(UserError):
        store.users.create_session("erin", 3600)
    run_cli(cli_config, "users", "enable", "erin")
    assert store.users.session(token) is None  # disabling ended it for good

    token, _ = store.users.create_session("erin", 3600)
    run_cli(
        cli_config,
        "users",
        "passwd",
        "erin",
        "--password-file",
        _password_file(tmp_path, "a fresh passphrase"),
    )
    assert store.users.session(token) is None

    token, _ = store.users.create_session("erin", 3600)
    with Session(store.engine) as session, session.begin():
        session.execute(update(DeskSession).values(expires_at=_now() - timedelta(seconds=1)))
    assert store.users.session(token) is None

    token, _ = store.users.create_session("erin", 3600)
    store.users.end_session(token)
    assert store.users.session(token) is None
    store.users.create_session("erin", 3600)
    store.users.create_session("erin", 3600)
    assert store.users.end_sessions_of("erin") == 2
    store.engine.dispose()


def test_session_is_touched_at_most_once_a_minute(cli_config: Path, tmp_path: Path) -> None:
    _add(cli_config, tmp_path, "fay")
    store = _store(cli_config)
    token, _ = store.users.create_session("fay", 3600)
    old = _now() - timedelta(minutes=5)
    with Session(store.engine) as session, session.begin():
        session.execute(update(DeskSession).values(last_seen_at=old))
    store.users.session(token)
    with Session(store.engine) as session:
        first = session.exec(select(DeskSession)).one().last_seen_at
    assert first.replace(tzinfo=None) > old.replace(tzinfo=None)
    store.users.session(token)
    with Session(store.engine) as session:
        assert session.exec(select(DeskSession)).one().last_seen_at == first
    store.engine.dispose()


def test_failed_logins_are_counted_by_name_and_by_client(cli_config: Path) -> None:
    store = _store(cli_config)
    users = store.users
    since = _now() - timedelta(minutes=15)
    for _ in range(3):
        users.record_login_failure("gina", "192.0.2.7")
    users.record_login_failure("hank", "192.0.2.7")
    users.record_login_failure("gina", "198.51.100.1")
    assert users.login_failures_since("gina", "203.0.113.9", since) == 4  # the name, from any address
    assert users.login_failures_since("ivan", "192.0.2.7", since) == 4  # the address, for any name
    assert users.login_failures_since("gina", "192.0.2.7", since) == 5  # either, each row once
    assert users.login_failures_since("gina", "192.0.2.7", _now() + timedelta(seconds=1)) == 0
    # A second store object (another web process) sees the same counts.
    other = _store(cli_config)
    assert other.users.login_failures_since("gina", None, since) == 4
    users.clear_login_failures("gina")
    assert users.login_failures_since("gina", None, since) == 0
    assert users.login_failures_since(None, "192.0.2.7", since) == 1  # hank's stays
    store.engine.dispose()
    other.engine.dispose()


def test_assign_and_note_are_audited_and_shown(cli_config: Path, tmp_path: Path) -> None:
    _add(cli_config, tmp_path, "jo")
    _add(cli_config, tmp_path, "kim")
    run_cli(cli_config, "users", "disable", "kim")
    case_id = _ingest(cli_config)

    run_cli(cli_config, "cases", "assign", case_id, "jo")
    code, _, err = _cli(cli_config, "cases", "assign", case_id, "kim")
    assert code == 2 and "disabled" in err
    code, _, err = _cli(cli_config, "cases", "assign", case_id, "nobody-here")
    assert code == 1 and "no user" in err
    code, _, err = _cli(cli_config, "cases", "assign", case_id)
    assert code == 2
    view = json.loads(run_cli(cli_config, "cases", "show", case_id, "--json"))
    assert view["assignee"] == "jo"

    hostile = "<script>alert(1)</script>\n\x1b[2Jline two \u202e"
    run_cli(cli_config, "cases", "note", case_id, input=hostile.encode())
    note_file = tmp_path / "note.txt"
    note_file.write_text("second note")
    run_cli(cli_config, "cases", "note", case_id, "--file", str(note_file))
    code, _, err = _cli(cli_config, "cases", "note", case_id, input=b"x" * (64 * 1024 + 1))
    assert code == 2 and "64 KiB" in err
    code, _, err = _cli(cli_config, "cases", "note", case_id, input=b"  \n")
    assert code == 2 and "empty" in err

    view = json.loads(run_cli(cli_config, "cases", "show", case_id, "--json"))
    assert [n["body"] for n in view["notes"]] == [hostile, "second note"]  # stored exactly as given
    assert all(n["author"] and n["created_at"].endswith("+00:00") for n in view["notes"])
    text = run_cli(cli_config, "cases", "show", case_id)
    assert "Assigned to: jo" in text and "second note" in text
    assert "\x1b" not in text and "\u202e" not in text  # shown through the one display layer

    run_cli(cli_config, "cases", "assign", case_id, "--none")
    view = json.loads(run_cli(cli_config, "cases", "show", case_id, "--json"))
    assert view["assignee"] is None
    kinds = [e["kind"] for e in view["events"]]
    assert kinds[-4:] == ["assigned", "note", "note", "unassigned"]

    trail = [(e["action"], e["target"], e["case_id"]) for e in _audit(cli_config)]
    assert ("assigned", f"{case_id} to jo", case_id) in trail
    assert trail.count(("note", case_id, case_id)) == 2
    assert ("unassigned", case_id, case_id) in trail
    assert all(e["actor"] for e in _audit(cli_config) if e["action"] in ("assigned", "note"))


def test_assign_and_note_on_an_unknown_case_are_not_found(cli_config: Path, tmp_path: Path) -> None:
    _add(cli_config, tmp_path, "lee")
    code, _, err = _cli(cli_config, "cases", "assign", "ABU-0000-0000", "lee")
    assert code == 1 and "no case" in err
    code, _, err = _cli(cli_config, "cases", "note", "ABU-0000-0000", input=b"hello")
    assert code == 1 and "no case" in err


def test_sso_only_user_has_no_password_and_rehash_keeps_sessions(cli_config: Path) -> None:
    run_cli(cli_config, "users", "add", "sso.person@corp.example", "--role", "support", "--sso-only")
    [row] = json.loads(run_cli(cli_config, "users", "list", "--json"))
    assert (row["name"], row["password"]) == ("sso.person@corp.example", False)
    store = _store(cli_config)
    assert store.users.get("sso.person@corp.example").password_hash is None
    assert not verify_password(None, "")
    token, _ = store.users.create_session("sso.person@corp.example", 60)
    store.users.rehash("sso.person@corp.example", hash_password(GOOD))
    assert store.users.session(token) is not None
    store.engine.dispose()


def test_purge_removes_a_closed_case_with_notes(cli_config: Path, tmp_path: Path) -> None:
    case_id = _ingest(cli_config)
    run_cli(cli_config, "cases", "note", case_id, input=b"checked, nothing to do")
    run_cli(cli_config, "cases", "close", case_id)
    store = _store(cli_config)
    assert store.purge(timedelta(0), "tester") == [case_id]
    assert store.show_case(case_id) is None
    store.engine.dispose()
