"""Two `serve` processes on one PostgreSQL (issue 8): nothing lost or doubled, replies cross gateways,
confirmations sent once, processing shared."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlmodel import Session

from gateway.assembly import build_store
from gateway.config import load_config
from storage import schema
from storage.models import InboxEntry
from tests.conftest import PG_URL, Sink, free_port, reset_postgres

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(not PG_URL, reason="ABUSE_GATEWAY_TEST_PG is not set")


def _start(tmp: Path, name: str, port: int, sink: Sink) -> tuple[subprocess.Popen[bytes], Path]:
    home = tmp / name
    home.mkdir()
    config = home / "gateway.toml"
    config.write_text(
        f'[smtp]\nlisten = ["127.0.0.1:{port}"]\nhostname = "{name}.test"\n'
        f'[intake]\naddresses = ["abuse@example.org"]\n'
        f'[store]\nurl = "{PG_URL}"\nspool_dir = "{home}/spool"\n'
        f'[confirm]\nfrom = "abuse@example.org"\nsmarthost = "{sink.address}"\n'
        f'secret_file = "{tmp}/shared-reply-token.key"\n'
        "per_address_per_hour = 1000\nper_domain_per_hour = 1000\n"
    )
    log = (home / "stderr.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--config", str(config)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, config
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise AssertionError((home / "stderr.log").read_text())


def _report(n: int, subject: str | None = None) -> bytes:
    return (
        f"From: reporter{n}@example.net\r\nTo: abuse@example.org\r\nSubject: {subject or f'report {n}'}\r\n"
        f"Message-ID: <{uuid.uuid4().hex}@example.net>\r\n\r\nspam from host {n}.bad.example\r\n"
    ).encode()


def _send(port: int, raw: bytes, sender: str) -> int:
    import smtplib

    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        return (client.sendmail(sender, ["abuse@example.org"], raw) and 0) or 250


def test_two_gateways_share_one_postgresql(tmp_path: Path, smtp_sink: Sink) -> None:
    reset_postgres(PG_URL)
    store = build_store(load_config(None, environ={"ABUSE_GATEWAY_STORE_URL": PG_URL}))
    schema.upgrade(store.engine)
    ports = [free_port(), free_port()]
    procs = [_start(tmp_path, f"gw{i}", port, smtp_sink)[0] for i, port in enumerate(ports)]
    # Each gateway's intake runs in a spawned process; sharing the inbox needs both of them running.
    logs = [tmp_path / f"gw{i}" / "stderr.log" for i in range(2)]
    _wait(lambda: all(b"intake worker ready" in log.read_bytes() for log in logs), timeout=30)
    try:
        with ThreadPoolExecutor(max_workers=8) as pool:
            jobs = [
                pool.submit(_send, ports[n % 2], _report(n), f"reporter{n}@example.net") for n in range(120)
            ]
            assert [j.result() for j in jobs] == [250] * 120
        _wait(lambda: store.inbox_depth() == 0)
        first = next(c for c in store.list_cases(limit=500) if c["reporter"] == "reporter0@example.net")
        reply = _report(0, subject=f"Re: [{first['case_id']}] one more thing")
        assert _send(ports[1], reply, "reporter0@example.net") == 250  # the case was opened via gateway 0
        _wait(lambda: store.inbox_depth() == 0)
        _wait(lambda: len(smtp_sink.handler.received) >= 121)
        time.sleep(1.5)  # anything sent twice would arrive by now
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            assert proc.wait(timeout=60) == 0

    cases = store.list_cases(limit=500)
    assert len(cases) == 120
    assert len({c["case_id"] for c in cases}) == 120
    assert store.show_case(first["case_id"])["messages"][1]["thread_signal"] == "subject"
    outbox = store.list_outbox()
    assert len(outbox) == 121 and all(r["state"] == "sent" for r in outbox)
    sent_ids = [
        raw.split(b"Message-ID: ", 1)[1].split(b"\r\n", 1)[0] for _, _, raw in smtp_sink.handler.received
    ]
    assert len(sent_ids) == 121 == len(set(sent_ids))  # every confirmation exactly once
    with Session(store.engine) as session:
        assert session.exec(select(func.count()).select_from(InboxEntry)).one()[0] == 121
        workers = {w for (w,) in session.exec(select(InboxEntry.claimed_by)).all()}
    assert len(workers) == 2, "both gateways took part in processing"
    store.engine.dispose()


def _wait(predicate, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError("condition not reached")
