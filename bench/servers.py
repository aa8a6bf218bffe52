"""Start and stop the systems under test: the gateway (`python -m gateway serve`) and a bare aiosmtpd sink."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"  # all traffic stays on loopback


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def wait_for_greeting(port: int, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before listening")
        try:
            with socket.create_connection((HOST, port), timeout=2) as s:
                if s.recv(512).startswith(b"220"):
                    s.sendall(b"QUIT\r\n")
                    return
        except OSError as exc:
            last = exc
        time.sleep(0.1)
    raise RuntimeError(f"no SMTP greeting on {HOST}:{port} within {timeout}s: {last}")


def gateway_config(
    workdir: Path, port: int, log_level: str, max_message_bytes: int, dns: str | None = None
) -> Path:
    """`dns`: the benchmark's own nameserver (bench/mailauth.py), which intake's SPF/DKIM/DMARC checks
    ask (issue 22); never the host's resolver."""
    path = workdir / "gateway.toml"
    path.write_text(
        f"""[smtp]
listen = ["{HOST}:{port}"]
hostname = "bench.gateway.test"
max_message_bytes = {max_message_bytes}
max_sessions = 2000
max_sessions_per_ip = 2000
idle_timeout = 120.0

[intake]
addresses = ["abuse@example.org"]

[store]
url = "sqlite:///{workdir}/cases.db"
spool_dir = "{workdir}/spool"

[confirm]
enabled = false
outbox_dir = "{workdir}/outbox"
secret_file = "{workdir}/reply-token.key"

[log]
level = "{log_level}"
"""
        + (f'\n[dns]\nnameservers = ["{dns}"]\n' if dns else ""),
        encoding="utf-8",
    )
    return path


def gateway_cli(config: Path, *args: str, timeout: float, stdout: int | None = subprocess.DEVNULL) -> float:
    """Run `python -m gateway <args> --config F`; returns seconds taken. Raises on non-zero exit."""
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "--config", str(config), *args],
        cwd=ROOT,
        stdout=stdout,
        stderr=subprocess.PIPE,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"gateway {' '.join(args)} exited {result.returncode}: {result.stderr[-800:]!r}")
    return time.monotonic() - started


@dataclass
class Server:
    name: str
    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def status(self) -> dict[str, int]:
        """VmRSS / VmHWM (kB) from /proc."""
        return _vm(self.pid)

    def children_status(self) -> dict[str, int]:
        """VmRSS / VmHWM (kB) summed over the server's child processes (intake and listener processes).
        A sum of peaks bounds the peak of the sum from above: the honest side to err on."""
        out = {"VmRSS": 0, "VmHWM": 0, "count": 0}
        for child in _children(self.pid):
            vm = _vm(child)
            if vm:
                out["VmRSS"] += vm.get("VmRSS", 0)
                out["VmHWM"] += vm.get("VmHWM", 0)
                out["count"] += 1
        return out

    def stop(self, timeout: float = 40.0) -> None:
        if self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


def _vm(pid: int) -> dict[str, int]:
    out: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0])
    return out


def _children(pid: int) -> list[int]:
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                found += [int(c) for c in (task / "children").read_text().split()]
    return found


def _spawn(name: str, argv: list[str], port: int, log_path: Path, timeout: float = 30.0) -> Server:
    log = open(log_path, "ab")
    env = dict(os.environ)
    env.pop("ABUSE_GATEWAY_CONFIG", None)
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
    log.close()
    server = Server(name, port, proc, log_path)
    try:
        wait_for_greeting(port, timeout, proc)
    except Exception:
        server.stop(5)
        raise
    return server


def start_gateway(workdir: Path, config: Path, port: int, workers: int = 1) -> Server:
    argv = [sys.executable, "-m", "gateway", "serve", "--config", str(config), "--workers", str(workers)]
    return _spawn("gateway", argv, port, workdir / "gateway.log")


def start_sink(workdir: Path, port: int) -> Server:
    argv = [sys.executable, "-m", "bench.sink", "--port", str(port)]
    return _spawn("sink", argv, port, workdir / "sink.log")
