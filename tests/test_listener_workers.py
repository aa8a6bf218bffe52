"""`serve --workers N`: several listener processes on one port (SO_REUSEPORT), one store, one case per
report. Real `serve` subprocesses, real sockets; which process holds which connection is read from /proc."""

from __future__ import annotations

import json
import os
import signal
import smtplib
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from tests.conftest import free_port, upgrade_store

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads sockets from /proc (Linux)")
_LISTEN, _ESTABLISHED = "0A", "01"


def _sockets_on(port: int, state: str) -> set[str]:
    """Inodes of the IPv4 TCP sockets bound locally to `port` in `state` (hex codes of /proc/net/tcp)."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == state:
            inodes.add(fields[9])
    return inodes


def _family(pid: int) -> list[int]:
    pids = [pid]
    for task in Path(f"/proc/{pid}/task").iterdir():
        pids += [int(c) for c in (task / "children").read_text().split()]
    return pids


def _owners(pid: int, inodes: set[str]) -> dict[int, int]:
    """Which of `pid` and its children hold how many of the sockets `inodes`."""
    held: dict[int, int] = {}
    for member in _family(pid):
        for fd in Path(f"/proc/{member}/fd").iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:[") and target[8:-1] in inodes:
                held[member] = held.get(member, 0) + 1
    return held


def _wait_for_log(path: Path, line: bytes, count: int = 1, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while path.read_bytes().count(line) < count:
        if time.monotonic() > deadline:
            pytest.fail(f"serve did not log {line!r}")
        time.sleep(0.1)


def _wait_listeners(proc: subprocess.Popen[bytes], port: int, count: int, timeout: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        owners = _owners(proc.pid, _sockets_on(port, _LISTEN))
        if len(owners) == count:
            return owners
        time.sleep(0.1)
    pytest.fail(f"expected {count} listening processes, have {owners}")


@pytest.fixture
def two_workers(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int, Path]]:
    port = free_port()
    config = tmp_path / "gateway.toml"
    config.write_text(
        f'[smtp]\nlisten = ["127.0.0.1:{port}"]\nmax_sessions_per_ip = 100\n'
        f'[intake]\naddresses = ["abuse@example.org"]\n'
        f'[store]\nurl = "sqlite:///{tmp_path}/cases.db"\nspool_dir = "{tmp_path}/spool"\n'
        f'[confirm]\nenabled = false\nsecret_file = "{tmp_path}/key"\n'
    )
    upgrade_store(f"sqlite:///{tmp_path}/cases.db")
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--config", str(config), "--workers", "2"],
        cwd=ROOT,
        stderr=(tmp_path / "serve.log").open("wb"),
    )
    try:
        # READY: reading a child's /proc entries while it starts up has stalled it here.
        _wait_for_log(tmp_path / "serve.log", b"serving: ")
        _wait_listeners(proc, port, 2)
        yield proc, port, config
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def _report(n: int) -> bytes:
    return (
        f"From: reporter{n}@example.net\r\nTo: abuse@example.org\r\nSubject: phishing {n}\r\n"
        f"Message-ID: <r{n}@example.net>\r\n\r\nPhishing at https://bad{n}.example/login\r\n"
    ).encode()


def _case_count(config: Path) -> int:
    """`cases list --json` through the real CLI in-process: polled, and a Python start-up per look cost
    more than the look."""
    from click.testing import CliRunner

    from gateway.cli import main

    result = CliRunner().invoke(main, ["cases", "list", "--json", "--config", str(config)])
    assert result.exit_code == 0, result.output
    return len(json.loads(result.stdout))


def _wait_cases(config: Path, count: int, timeout: float = 30.0) -> int:
    deadline = time.monotonic() + timeout
    while (found := _case_count(config)) < count and time.monotonic() < deadline:
        time.sleep(0.3)
    return found


def _sessions_on_both(stack: ExitStack, proc: subprocess.Popen[bytes], port: int) -> list[smtplib.SMTP]:
    """24 sessions past EHLO, held by both listener processes (the kernel hashes each connection to one
    socket of the group: all 24 on one process has a chance of 2 in 16 million)."""
    clients = [stack.enter_context(smtplib.SMTP("127.0.0.1", port, timeout=30)) for _ in range(24)]
    for client in clients:
        client.ehlo("client.test")
    holders = _owners(proc.pid, _sockets_on(port, _ESTABLISHED))
    assert len(holders) == 2, holders
    return clients


def test_two_workers_share_connections_and_store_every_report(two_workers) -> None:
    proc, port, config = two_workers
    with ExitStack() as stack:
        clients = _sessions_on_both(stack, proc, port)
        for n, client in enumerate(clients):
            client.sendmail(f"reporter{n}@example.net", ["abuse@example.org"], _report(n))
    assert _wait_cases(config, 24) == 24
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 0


def test_a_killed_listener_process_is_replaced_and_mail_keeps_flowing(two_workers) -> None:
    proc, port, config = two_workers
    child = next(pid for pid in _wait_listeners(proc, port, 2) if pid != proc.pid)
    os.kill(child, signal.SIGKILL)
    _wait_for_log(config.parent / "serve.log", b"listener process ready: pid=", count=2)  # its replacement
    owners = _wait_listeners(proc, port, 2)
    assert child not in owners
    for n in range(10):
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
            client.sendmail(f"reporter{n}@example.net", ["abuse@example.org"], _report(n))
    assert _wait_cases(config, 10) == 10


def test_stopping_finishes_a_session_open_on_a_listener_process(two_workers) -> None:
    proc, port, config = two_workers
    with ExitStack() as stack:
        clients = _sessions_on_both(stack, proc, port)
        for client in clients:
            client.mail("reporter@example.net")
            client.rcpt("abuse@example.org")
        proc.send_signal(signal.SIGTERM)  # every process stops accepting, then lets its sessions finish
        time.sleep(1.0)
        for n, client in enumerate(clients):
            assert client.data(_report(n))[0] == 250
    assert proc.wait(60) == 0
    assert _case_count(config) == 24
