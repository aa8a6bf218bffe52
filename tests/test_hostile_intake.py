"""Issue 15, points 4 and 5: one message cannot stall or exhaust intake, and a dead intake child cannot
freeze the listener. Real `serve` subprocesses, real SMTP, the real CLI; children are found via /proc."""

from __future__ import annotations

import json
import re
import signal
import smtplib
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import upgrade_store
from tests.test_reliability import _free_port, _start_serve, _write_config
from tests.test_systemd import (  # noqa: F401 (fixtures)
    SERVICE,
    Deployment,
    NotifySocket,
    _kernel_sandbox_available,
    _unit_sandbox,
    _unit_settings,
    deployment,
    notify_socket,
    upgraded,
)
from tests.test_systemd import _stop as _stop_unit

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="reads children from /proc")
DEADLINE = 60.0  # generous: a polling deadline, not a speed claim


def _cli(config: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", "--config", str(config), *args], cwd=ROOT, capture_output=True
    )


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def _logged_pid(log: Path, pattern: bytes, after: int = 0) -> int:
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        found = re.findall(pattern + rb"(\d+)", log.read_bytes()[after:])
        if found:
            return int(found[-1])
        time.sleep(0.1)
    pytest.fail(f"serve never logged {pattern!r}: {log.read_text()[-3000:]}")


def _cases(config: Path) -> list[dict]:
    """`cases list --json` through the real CLI in-process: these loops poll it, and a Python start-up
    per look cost seconds a test; what the desk then reads (show, raw) still goes through a subprocess."""
    from click.testing import CliRunner

    from gateway.cli import main

    result = CliRunner().invoke(main, ["--config", str(config), "cases", "list", "--json"])
    assert result.exit_code == 0, result.output
    return list(json.loads(result.stdout))


def _wait_gone(pid: int) -> None:
    """Until `pid` is dead (a zombie, or reaped): SIGKILL is delivered asynchronously."""
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        try:
            if Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] == "Z":
                return
        except OSError:
            return
        time.sleep(0.02)
    pytest.fail(f"{pid} outlived SIGKILL")


def _wait_for_case(config: Path, subject: str) -> dict:
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        for case in _cases(config):
            if case["subject"] == subject:
                return case
        time.sleep(0.3)
    pytest.fail(f"no case with subject {subject!r}")


def _send(port: int, raw: bytes) -> int:
    with smtplib.SMTP("127.0.0.1", port, timeout=20) as client:
        client.ehlo("client.test")
        client.mail("reporter@example.net")
        client.rcpt("abuse@example.org")
        return client.data(raw)[0]


def _report(subject: str, body: str = "See https://phish.example/login") -> bytes:
    return (
        f"From: reporter@example.net\r\nTo: abuse@example.org\r\nSubject: {subject}\r\n"
        f"Message-ID: <{subject.replace(' ', '-')}@example.net>\r\n\r\n{body}\r\n"
    ).encode()


def _serve(tmp_path: Path, intake: str = "") -> tuple[subprocess.Popen[bytes], int, Path, Path]:
    port = _free_port()
    config = _write_config(tmp_path, f"sqlite:///{tmp_path}/cases.db", port)
    if intake:
        config.write_text(config.read_text().replace("[intake]\n", f"[intake]\n{intake}", 1))
    upgrade_store(f"sqlite:///{tmp_path}/cases.db")
    log = tmp_path / "serve.log"
    return _start_serve(config, port, log), port, config, log


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait(10)


def test_bomb_ends_processing_failed_with_raw_kept_while_the_next_report_is_stored(tmp_path: Path) -> None:
    # Bounds lowered so a 2 MB bomb is over both: its text is under max_text_chars (so it is prepared
    # in full) but its preparation takes longer than processing_timeout.
    proc, port, config, log = _serve(
        tmp_path, "processing_timeout = 2\nmax_attempts = 2\nmax_text_chars = 4000000\n"
    )
    try:
        intake_pid = _logged_pid(log, rb"intake worker ready: pid=")
        bomb = _report("bomb", "http://a." * (2 * 1024 * 1024 // 9))
        assert _send(port, bomb) == 250
        assert _send(port, _report("normal after bomb")) == 250
        copies = 0
        deadline = time.monotonic() + DEADLINE
        bomb_case = None
        while time.monotonic() < deadline and bomb_case is None:
            # Never two copies of a preparation: the intake process has one preparation child at most.
            copies = max(copies, len(_children(intake_pid)))
            bomb_case = next((c for c in _cases(config) if c["subject"] == ""), None)
            time.sleep(0.2)
        normal = _wait_for_case(config, "normal after bomb")
        assert normal["messages"] == 1
        assert bomb_case is not None, log.read_text()[-3000:]
        shown = _cli(config, "cases", "show", bomb_case["case_id"], "--json")
        message = json.loads(shown.stdout)["messages"][0]
        assert "processing_failed" in message["flags"]
        raw = _cli(config, "cases", "raw", bomb_case["case_id"], "1")
        assert raw.returncode == 0 and raw.stdout == bomb
        assert copies == 1
        text = log.read_bytes()
        assert text.count(b"preparation process killed") == 2  # one per attempt, max_attempts = 2
        assert intake_pid == _logged_pid(log, rb"intake worker ready: pid=")  # intake itself never died
    finally:
        _stop(proc)


def test_text_over_max_text_chars_is_cut_with_a_defect_and_the_raw_kept(tmp_path: Path) -> None:
    proc, port, config, _log = _serve(tmp_path, "max_text_chars = 1024\n")
    try:
        raw = _report("long text", "word " * 2000 + "https://late-phish.example/")
        assert _send(port, raw) == 250
        case = _wait_for_case(config, "long text")
        message = json.loads(_cli(config, "cases", "show", case["case_id"], "--json").stdout)["messages"][0]
        assert any(d.startswith("text_truncated") for d in message["defects"]), message["defects"]
        assert "processing_failed" not in message["flags"]
        assert _cli(config, "cases", "raw", case["case_id"], "1").stdout.count(b"late-phish") == 1
    finally:
        _stop(proc)


def _banner_and_250(port: int, raw: bytes) -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.settimeout(10)
        assert sock.recv(512).startswith(b"220")
    return _send(port, raw)


def test_sigkilled_intake_child_leaves_the_listener_answering_and_mail_is_stored_once_it_is_back(
    tmp_path: Path,
) -> None:
    proc, port, config, log = _serve(tmp_path)
    try:
        assert _send(port, _report("before kill")) == 250
        _wait_for_case(config, "before kill")
        child = _logged_pid(log, rb"intake worker ready: pid=")
        assert child in _children(proc.pid)
        time.sleep(0.5)  # idle: waiting for a wake-up, as the OOM killer would find it
        size = log.stat().st_size
        subprocess.run(["kill", "-KILL", str(child)], check=True)
        _wait_gone(child)
        # The first wake-up after the death is the one that used to block the loop for good.
        assert _banner_and_250(port, _report("after kill")) == 250
        assert _banner_and_250(port, _report("after kill two")) == 250
        fresh = _logged_pid(log, rb"intake worker ready: pid=", after=size)
        assert fresh != child
        _wait_for_case(config, "after kill")
        _wait_for_case(config, "after kill two")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        _stop(proc)


def _niceness(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rpartition(")")[2].split()[16])  # field 19, counted after the comm


def _address_space_limit(pid: int) -> str:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max address space"):
            return line.split()[3]
    return ""


def test_unit_bounds_memory_and_tasks() -> None:
    settings = _unit_settings(SERVICE)
    assert settings.get("MemoryMax") and settings.get("MemoryHigh") and settings.get("TasksMax")


def test_extra_intake_process_nice_and_preparation_cap_work_inside_the_units_syscall_filter(
    upgraded: Deployment, notify_socket: NotifySocket  # noqa: F811
) -> None:
    """os.nice (setpriority) and RLIMIT_AS (prlimit64) fail only at run time under SystemCallFilter=,
    and the gateway suppresses a failed nice: so read the result from /proc, with the unit's filter on."""
    reason = _kernel_sandbox_available()
    if reason:
        pytest.skip(reason)
    text = upgraded.config.read_text()
    upgraded.config.write_text(text.replace("[intake]\n", "[intake]\nprocesses = 2\n", 1))
    assert "processes = 2" in upgraded.config.read_text()
    proc = upgraded.serve(notify_socket, extra_env=_unit_sandbox())
    try:
        notify_socket.wait_for("READY=1")
        deadline = time.monotonic() + DEADLINE
        nice, capped = [], []
        while time.monotonic() < deadline and not (nice and len(capped) >= 2):
            intake = _children(proc.pid)
            nice = [p for p in intake if _niceness(p) == 10]
            capped = [g for p in intake for g in _children(p) if _address_space_limit(g) == str(1 << 30)]
            time.sleep(0.2)
        assert len(nice) == 1, "the second intake process did not lower its priority"
        assert len(capped) == 2, "no preparation child with its address space capped"
    finally:
        stderr = _stop_unit(proc)
    assert b"Traceback" not in stderr, stderr.decode(errors="replace")[-3000:]


def _leased_entry(url: str, holder: str, seconds: float = 120.0) -> None:
    """A pending inbox entry leased to `holder`, as another gateway on the same store leaves it mid-batch."""
    import uuid
    from datetime import UTC, datetime, timedelta

    from sqlmodel import Session

    from storage.engine import make_engine
    from storage.models import InboxEntry

    engine = make_engine(url)
    with Session(engine) as session, session.begin():
        session.add(
            InboxEntry(
                intake_uid=uuid.uuid4().hex,
                size=1,
                sha256="0" * 64,
                raw=b"x",
                claimed_by=holder,
                claimed_until=datetime.now(UTC) + timedelta(seconds=seconds),
            )
        )
    engine.dispose()


def test_a_claim_held_by_another_gateway_does_not_hold_up_the_stop(tmp_path: Path) -> None:
    """Before: a stopping intake child waited for every pending entry of the shared store, so another
    gateway's lease (here a host's that crashed mid-batch, its lease two minutes long) made `serve` wait
    the whole 30 s drain grace, then kill its child."""
    proc, port, config, log = _serve(tmp_path)
    try:
        _leased_entry(f"sqlite:///{tmp_path}/cases.db", "other-host:4242:g17.deadbeef")
        assert _send(port, _report("before stop")) == 250
        _wait_for_case(config, "before stop")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=25) == 0  # under the 30 s grace: the child drained, it was not killed
        assert b"did not drain" not in log.read_bytes()
    finally:
        _stop(proc)


def test_a_stopping_worker_waits_for_what_is_claimable_and_its_own_gateways_leases_only(
    store_url: str,
) -> None:
    from gateway.assembly import build_store
    from gateway.config import load_config
    from storage.claims import new_worker_id

    upgrade_store(store_url)
    store = build_store(load_config(None, environ={"ABUSE_GATEWAY_STORE_URL": store_url}))
    try:
        assert store.undrained("g1.") == 0
        _leased_entry(store_url, "other-host:4242:g1.deadbeef")  # another host: not ours, whatever its mark
        _leased_entry(store_url, new_worker_id("g2."))  # this host, another gateway
        assert store.undrained("g1.") == 0
        _leased_entry(store_url, new_worker_id("g1."))  # a sibling of ours
        assert store.undrained("g1.") == 1
        _leased_entry(store_url, "other-host:4242:g9.cafe", seconds=-1)  # its lease ran out: claimable
        assert store.undrained("g1.") == 2
        assert store.undrained("g2.") == 2
    finally:
        store.engine.dispose()
