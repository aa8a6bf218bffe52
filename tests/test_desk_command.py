"""`abuse-gateway web` as an operator runs it: a process of its own on [web] listen, answering /healthz,
stopping on SIGTERM; and the CLI half of the desk's actions that the web added (`cases csam --possible`)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import free_port, load_eml, make_config, run_cli, start_gateway


def test_web_command_serves_healthz_on_the_configured_port_and_stops_on_sigterm(
    cli_config: Path, store_url: str
) -> None:
    if not store_url.startswith("sqlite"):
        pytest.skip("one backend is enough for the process contract")
    port = free_port()
    config = cli_config.with_name("web.toml")
    config.write_text(cli_config.read_text() + f'[web]\nlisten = "127.0.0.1:{port}"\n')
    binary = Path(sys.executable).with_name("abuse-gateway")
    proc = subprocess.Popen([str(binary), "web", "--config", str(config)], stderr=subprocess.PIPE)
    try:
        deadline, body = time.monotonic() + 30, b""
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as resp:
                    body = resp.read()
                    assert resp.headers["content-security-policy"].startswith("default-src 'none'")
                break
            except OSError:
                time.sleep(0.1)
        assert body == b"ok"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            raise
    assert proc.returncode == 0


def test_web_command_on_a_missing_store_exits_2(tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text(f'[store]\nurl = "sqlite:///{tmp_path}/none.db"\n')
    binary = Path(sys.executable).with_name("abuse-gateway")
    result = subprocess.run([str(binary), "web", "--config", str(config)], capture_output=True, timeout=60)
    assert result.returncode == 2 and b"db upgrade" in result.stderr


def test_cases_csam_possible_raises_the_signal_that_hides_content_from_analysts(tmp_path: Path) -> None:
    config = make_config(tmp_path, f"sqlite:///{tmp_path}/cases.db", confirm={"enabled": False})
    gateway = start_gateway(config)
    try:
        assert gateway.send(load_eml("person_plain_report.eml"))[0] == 250
        gateway.wait_idle()
        case_id = gateway.store.desk.queue(limit=1).rows[0].case_id
    finally:
        gateway.stop()
    toml = tmp_path / "gateway.toml"
    toml.write_text(f'[store]\nurl = "sqlite:///{tmp_path}/cases.db"\nspool_dir = "{tmp_path}/spool"\n')
    out = run_cli(toml, "cases", "csam", case_id, "--possible", "--reason", "looks like it")
    assert "marked possible CSAM" in out
    from gateway.assembly import build_store
    from gateway.viewing import Sight, sight

    view = build_store(config).show_case(case_id)
    assert view["possible_csam"] and not view["csam"]
    assert sight("analyst", True) is Sight.METADATA
    assert any(m["source"] == "desk" and m["kind"] == "possible_csam" for m in view["csam_marks"])
