"""Errors an operator can act on (issue 17): check-config fails on everything that would stop `serve`,
`serve` says what is wrong in one line with an exit code systemd treats right, and no command creates a
store behind the operator's back."""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import click
import pytest

from gateway.cli import EX_TEMPFAIL, EX_USAGE, main
from tests.conftest import free_port, load_eml, self_signed_pair, suite_env

ROOT = Path(__file__).resolve().parents[1]


def _run(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ABUSE_GATEWAY_")} | suite_env()
    proc = subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        capture_output=True,
        cwd=tmp_path,
        env={**clean, **(env or {})},
        timeout=120,
    )
    return proc.returncode, proc.stdout.decode(), proc.stderr.decode()


def _config(tmp_path: Path, body: str, store: str | None = None) -> Path:
    path = tmp_path / "gateway.toml"
    url = store or f"sqlite:///{tmp_path}/cases.db"
    path.write_text(
        f'[store]\nurl = "{url}"\nspool_dir = "{tmp_path}/spool"\n'
        f'[confirm]\noutbox_dir = "{tmp_path}/outbox"\nsecret_file = "{tmp_path}/key"\n{body}'
    )
    return path


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (
            "[smtp]\nmax_recipent = 5\n",
            "unknown key `max_recipent` in [smtp]; did you mean `max_recipients`?",
        ),
        ('[smtp]\nlisten = "127.0.0.1:25"\n', "`listen`: must be a list of host:port strings"),
        ('[smtp]\ntls_cert = "/nonexistent/tls.crt"\ntls_key = "/nonexistent/tls.key"\n', "`tls_cert`"),
        ('[smtp]\ntls_cert = "/etc/hostname"\n', "tls_key is not set"),
        ("[confirm2]\nx = 1\n", "unknown section"),
    ],
)
def test_check_config_fails_with_the_key_named(tmp_path: Path, body: str, says: str) -> None:
    code, _, err = _run(tmp_path, "check-config", "--config", str(_config(tmp_path, body)))
    assert code == EX_USAGE and says in err and "Traceback" not in err


def test_check_config_refuses_an_unsupported_store_dialect(tmp_path: Path) -> None:
    config = _config(tmp_path, "", store="mysql://root@127.0.0.1/cases")
    code, _, err = _run(tmp_path, "check-config", "--config", str(config))
    assert code == EX_USAGE and "[store] `url`" in err and "'mysql' is not supported" in err


def test_check_config_refuses_a_from_that_is_not_an_address(tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text('[confirm]\nfrom = "Abuse Desk"\n')
    code, _, err = _run(tmp_path, "check-config", "--config", str(config))
    assert code == EX_USAGE and "[confirm] `from`" in err and "is not an address" in err


def test_check_config_refuses_a_certificate_and_key_that_do_not_match(tmp_path: Path) -> None:
    cert, _ = self_signed_pair(tmp_path, "one")
    _, other_key = self_signed_pair(tmp_path, "two")
    body = f'[smtp]\ntls_cert = "{cert}"\ntls_key = "{other_key}"\n'
    code, _, err = _run(tmp_path, "check-config", "--config", str(_config(tmp_path, body)))
    assert code == EX_USAGE and "not a matching certificate and key" in err


def test_an_environment_variable_that_names_no_key_is_an_error(tmp_path: Path) -> None:
    env = {"ABUSE_GATEWAY_SMTP_MAX_RECIPENTS": "5"}
    code, _, err = _run(tmp_path, "check-config", "--config", str(_config(tmp_path, "")), env=env)
    assert code == EX_USAGE
    assert "ABUSE_GATEWAY_SMTP_MAX_RECIPENTS names no setting" in err
    assert "did you mean ABUSE_GATEWAY_SMTP_MAX_RECIPIENTS?" in err


def test_check_config_and_db_upgrade_print_the_store_absolute_path(tmp_path: Path) -> None:
    relative = tmp_path / "gateway.toml"
    relative.write_text(f'[confirm]\nsecret_file = "{tmp_path}/key"\n')  # store: the default ./var/cases.db
    code, out, err = _run(tmp_path, "check-config", "--config", str(relative))
    assert code == 0, err
    assert f"store: {tmp_path.resolve()}/var/cases.db" in out.splitlines()[0]
    code, out, err = _run(tmp_path, "db", "upgrade", "--config", str(relative))
    assert code == 0, err
    assert f"{tmp_path.resolve()}/var/cases.db" in out


def test_a_desk_command_where_no_store_exists_says_so_and_creates_nothing(tmp_path: Path) -> None:
    config = _config(tmp_path, "")
    for args in (("cases", "list"), ("outbox", "list"), ("audit", "list"), ("reprocess", "--all")):
        code, _, err = _run(tmp_path, *args, "--config", str(config))
        assert code == EX_USAGE, (args, err)
        assert "no store at" in err and "db upgrade" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "cases.db").exists()


def test_a_desk_command_on_a_store_that_needs_upgrade_says_so(tmp_path: Path) -> None:
    sqlite3.connect(tmp_path / "cases.db").close()  # an empty file: no schema
    code, _, err = _run(tmp_path, "cases", "list", "--config", str(_config(tmp_path, "")))
    assert code == EX_USAGE and "db upgrade" in err and "Traceback" not in err


def test_ingest_with_no_store_spools_the_message_and_creates_no_store(tmp_path: Path) -> None:
    config = _config(tmp_path, "")
    proc = subprocess.run(
        [sys.executable, "-m", "gateway", "ingest", "--config", str(config)],
        input=load_eml("report_phishing.eml"),
        capture_output=True,
        cwd=ROOT,
        env={k: v for k, v in os.environ.items() if not k.startswith("ABUSE_GATEWAY_")},
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.decode().startswith("spooled:")
    assert b"no store at" in proc.stderr
    assert not (tmp_path / "cases.db").exists()


def test_serve_on_a_taken_port_says_so_in_one_line_and_does_not_ask_for_a_restart(tmp_path: Path) -> None:
    port = free_port()
    holder = socket.socket()
    holder.bind(("127.0.0.1", port))
    holder.listen()
    try:
        config = _config(tmp_path, f'[smtp]\nlisten = ["127.0.0.1:{port}"]\n')
        assert _run(tmp_path, "db", "upgrade", "--config", str(config))[0] == 0
        code, _, err = _run(tmp_path, "serve", "--config", str(config))
    finally:
        holder.close()
    assert code == EX_USAGE  # RestartPreventExitStatus=2 in the unit: no restart every 5 s
    assert "Traceback" not in err and f"127.0.0.1:{port}" in err and "in use" in err


def test_serve_with_an_unreachable_store_exits_75_so_systemd_retries(tmp_path: Path) -> None:
    config = _config(tmp_path, "", store=f"postgresql+psycopg://nobody@127.0.0.1:{free_port()}/none")
    code, _, err = _run(tmp_path, "serve", "--config", str(config))
    assert code == EX_TEMPFAIL and "unavailable" in err and "Traceback" not in err


def test_the_unit_does_not_restart_on_configuration_errors() -> None:
    unit = (ROOT / "systemd" / "abuse-gateway.service").read_text()
    assert "RestartPreventExitStatus=2" in unit


def test_version_and_help_for_every_command_and_group(tmp_path: Path) -> None:
    code, out, _ = _run(tmp_path, "--version")
    assert code == 0 and out.startswith("abuse-gateway, version ")

    def walk(command: click.Command, path: str) -> None:
        assert (command.help or "").strip(), f"{path} has no --help text"
        if isinstance(command, click.Group):
            for name, sub in command.commands.items():
                walk(sub, f"{path} {name}")

    walk(main, "abuse-gateway")
