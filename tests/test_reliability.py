"""Issue 7: a 250 is a promise (RFC 5321 §4.5.4.1), under store outages, SIGKILL, poisoned mail and
resource exhaustion. Real gateways, real sockets, real stores."""

from __future__ import annotations

import hashlib
import json
import signal
import smtplib
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import text

from gateway.cli import main
from parsers.message import parse_message
from storage.engine import make_engine
from tests.conftest import PG_URL, RunningGateway, reset_postgres

ROOT = Path(__file__).resolve().parents[1]


# ---- helpers -----------------------------------------------------------------------------------------------


def distinct_message(tag: str, n: int) -> bytes:
    mid = f"{tag}-{n}-{uuid.uuid4().hex}@reporter.example.net"
    return (
        f"From: reporter{n}@example.net\r\nTo: abuse@example.org\r\nSubject: {tag} report {n}\r\n"
        f"Message-ID: <{mid}>\r\n\r\nBody of {tag} message {n} {uuid.uuid4().hex}\r\n"
    ).encode()


def sha(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


def inbox_digests(engine: Any) -> Counter[str]:
    with engine.connect() as conn:
        return Counter(row[0] for row in conn.execute(text("SELECT sha256 FROM inbox")))


def message_digests(engine: Any) -> Counter[str]:
    with engine.connect() as conn:
        return Counter(row[0] for row in conn.execute(text("SELECT sha256 FROM messages")))


def send_many(gateway: RunningGateway, raws: list[bytes], workers: int = 4) -> list[tuple[int, bytes]]:
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(gateway.send, raws))


def wait_until(predicate, timeout: float, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


def spool_files(gateway: RunningGateway) -> list[Path]:
    return gateway.service.spool.entries()


def recv_reply(sock: socket.socket, timeout: float = 10.0) -> bytes:
    """Read one (possibly multi-line) SMTP reply; b'' on EOF."""
    sock.settimeout(timeout)
    buf = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return buf
        buf += chunk
        lines = buf.split(b"\r\n")
        complete = [line for line in lines[:-1]]
        if complete and len(complete[-1]) >= 4 and complete[-1][3:4] == b" ":
            return buf


def connect(port: int, source: str | None = None) -> tuple[socket.socket, bytes]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if source:
        sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    return sock, recv_reply(sock)


# ---- 1. store outage → spool → replay ---------------------------------------------------------------------


def _db_path(url: str) -> str:
    return url.removeprefix("sqlite:///")


def test_sqlite_locked_store_spools_with_250_and_replays_each_message_once(
    gateway_factory, sqlite_url: str
) -> None:
    gateway = gateway_factory(sqlite_url, store={"commit_budget": 0.75})
    raws = [distinct_message("outage", n) for n in range(8)]
    locker = sqlite3.connect(_db_path(sqlite_url), isolation_level=None, timeout=10)
    locker.execute("BEGIN IMMEDIATE")  # the write lock, held: every inbox commit now times out
    try:
        replies = send_many(gateway, raws)
        assert [code for code, _ in replies] == [250] * len(raws), replies
        # Answered 250 while the store could not commit: so each one must be in the spool, durably.
        spooled = spool_files(gateway)
        assert len(spooled) == len(raws)
        assert {sha(gateway.service.spool.read(p)[1]) for p in spooled} == {sha(r) for r in raws}
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    gateway.wait_idle(timeout=40)  # the replayer moves them in, intake processes them
    engine = gateway.store.engine
    assert inbox_digests(engine) == Counter({sha(r): 1 for r in raws})
    assert message_digests(engine) == Counter({sha(r): 1 for r in raws})
    assert not spool_files(gateway)


def test_store_locked_and_spool_unwritable_answers_451(
    gateway_factory, sqlite_url: str, tmp_path: Path
) -> None:
    in_the_way = tmp_path / "not-a-directory"
    in_the_way.write_text("a regular file where the spool's parent should be")
    gateway = gateway_factory(
        sqlite_url, store={"commit_budget": 1.0, "spool_dir": str(in_the_way / "spool")}
    )
    raw = distinct_message("nowhere", 1)
    locker = sqlite3.connect(_db_path(sqlite_url), isolation_level=None, timeout=10)
    locker.execute("BEGIN IMMEDIATE")
    try:
        code, reply = gateway.send(raw)
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    assert (code, reply[:5]) == (451, b"4.3.0")
    # The sender retries the same bytes, as an MTA does after a 4xx, and this time they are taken.
    assert gateway.send(raw)[0] == 250
    gateway.wait_idle()
    # Exactly one message in the cases. The inbox may hold the bytes twice: the commit attempt that timed
    # out is not cancelled (a database thread cannot be), so it can land after the 451 was sent.
    assert message_digests(gateway.store.engine) == Counter({sha(raw): 1})
    rows = inbox_digests(gateway.store.engine)[sha(raw)]
    assert rows in (1, 2)
    print(f"451 path: inbox rows for the refused-then-retried message = {rows}")


def test_postgres_locked_inbox_spools_with_250_and_replays_each_message_once(gateway_factory) -> None:
    if not PG_URL:
        pytest.skip("ABUSE_GATEWAY_TEST_PG is not set")
    reset_postgres(PG_URL)
    import psycopg

    gateway = gateway_factory(PG_URL, store={"commit_budget": 1.5})
    raws = [distinct_message("pg-outage", n) for n in range(12)]
    dsn = PG_URL.replace("postgresql+psycopg://", "postgresql://")
    locker = psycopg.connect(dsn, autocommit=False)
    locker.execute("LOCK TABLE inbox IN ACCESS EXCLUSIVE MODE")
    try:
        with ThreadPoolExecutor(max_workers=4) as pool:
            futures = []
            for raw in raws:  # staggered, so they arrive as many separate commit groups
                futures.append(pool.submit(gateway.send, raw))
                time.sleep(0.3)
            # Every client must have its answer while the lock is still held: a commit stuck in the
            # database must not starve the spool writes (it did: the 12th client hung until release).
            replies = [f.result(timeout=30) for f in futures]
        assert [code for code, _ in replies] == [250] * len(raws), replies
        assert len(spool_files(gateway)) == len(raws)
    finally:
        locker.rollback()
        locker.close()
    gateway.wait_idle(timeout=40)
    engine = gateway.store.engine
    assert inbox_digests(engine) == Counter({sha(r): 1 for r in raws})
    assert message_digests(engine) == Counter({sha(r): 1 for r in raws})


# ---- 2. SIGKILL mid-run ------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _write_config(tmp_path: Path, store_url: str, port: int, extra: str = "") -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(
        f"""
[smtp]
listen = ["127.0.0.1:{port}"]
hostname = "mx.test.example"

[intake]
addresses = ["abuse@example.org"]

[store]
url = "{store_url}"
spool_dir = "{tmp_path / "spool"}"
group_commit_ms = 2

[confirm]
from = "abuse@example.org"
outbox_dir = "{tmp_path / "outbox"}"
secret_file = "{tmp_path / "reply-token.key"}"
{extra}
"""
    )
    return path


def _start_serve(config: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--config", str(config)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=log.open("ab"),
    )
    ok = wait_until(lambda: _port_open(port) or proc.poll() is not None, timeout=30, step=0.05)
    assert ok and proc.poll() is None, log.read_text()
    return proc


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.settimeout(2)
            return s.recv(4).startswith(b"220")
    except OSError:
        return False


def _wait_for_quiet_inbox(engine: Any) -> int:
    """Wait until only entries leased to someone remain pending and that stays so; return how many."""
    query = text("SELECT count(*), count(claimed_by) FROM inbox WHERE state = 'pending'")
    stable_since, last = time.monotonic(), None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with engine.connect() as conn:
            pending, claimed = conn.execute(query).one()
        if pending == 0:
            return 0
        if (pending, claimed) != last or claimed != pending:
            stable_since, last = time.monotonic(), (pending, claimed)
        elif time.monotonic() - stable_since > 3:
            return int(pending)
        time.sleep(0.2)
    raise AssertionError(f"inbox never settled: {last}")


def test_sigkill_mid_run_loses_no_acknowledged_message_and_stores_each_once(
    tmp_path: Path, store_url: str
) -> None:
    port = _free_port()
    config = _write_config(tmp_path, store_url, port)
    assert CliRunner().invoke(main, ["--config", str(config), "db", "upgrade"]).exit_code == 0
    log = tmp_path / "serve.log"
    proc = _start_serve(config, port, log)

    total, clients = 300, 6
    raws = [distinct_message("kill", n) for n in range(total)]
    acked: set[int] = set()
    attempts = Counter[int]()
    lock = threading.Lock()
    stop = threading.Event()

    def client(indexes: list[int]) -> None:
        for i in indexes:
            while not stop.is_set():
                attempts[i] += 1
                try:
                    with smtplib.SMTP("127.0.0.1", port, timeout=15) as smtp:
                        smtp.ehlo("client.test")
                        smtp.mail("reporter@example.net")
                        smtp.rcpt("abuse@example.org")
                        code, _ = smtp.data(raws[i])
                except (OSError, smtplib.SMTPException):
                    code = 0
                if code == 250:
                    with lock:
                        acked.add(i)
                    break
                time.sleep(0.1)  # an MTA's retry, compressed

    threads = [
        threading.Thread(target=client, args=(list(range(c, total, clients)),), daemon=True)
        for c in range(clients)
    ]
    for t in threads:
        t.start()
    try:
        assert wait_until(lambda: len(acked) >= total // 3, timeout=60)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        killed_at = len(acked)
        time.sleep(0.3)  # clients see refused connections and keep retrying
        proc = _start_serve(config, port, log)
        for t in threads:
            t.join(timeout=90)
        assert not any(t.is_alive() for t in threads)
        assert acked == set(range(total))

        engine = make_engine(store_url)
        try:
            # The restarted gateway hands back what the killed process had claimed (its pid is gone), so
            # nothing waits for a lease to run out.
            stranded = _wait_for_quiet_inbox(engine)
            assert stranded == 0
            inbox = inbox_digests(engine)
        finally:
            engine.dispose()
    finally:
        stop.set()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
    # The evidence as the desk sees it: `cases export`.
    result = CliRunner().invoke(main, ["--config", str(config), "cases", "export"])
    assert result.exit_code == 0, result.output
    exported = [json.loads(line) for line in result.output.splitlines() if line.strip()]
    in_cases = Counter(m["sha256"] for case in exported for m in case["messages"])
    expected = Counter({sha(r): 1 for r in raws})
    # Every acknowledged message is kept, and is one message in one case, however often it was sent.
    assert in_cases == expected
    assert set(inbox) == set(expected)
    twice = {d: n for d, n in inbox.items() if n > 1}
    retried = sum(1 for n in attempts.values() if n > 1)
    print(
        f"sigkill: acked before kill={killed_at}, messages retried={retried}, "
        f"inbox rows={sum(inbox.values())}, stored twice as inbox entries={len(twice)}, "
        f"stranded in the killed worker's lease={stranded}"
    )


# ---- 3. poisoned mail --------------------------------------------------------------------------------------

POISON = b"X-Poison: yes"


def test_poisoned_message_fails_after_three_attempts_and_does_not_block_the_rest(
    gateway_factory, store_url: str, tmp_path: Path
) -> None:
    calls = Counter[str]()

    def parser(raw: bytes):
        if POISON in raw:
            calls["poison"] += 1
            raise ValueError("poisoned")
        return parse_message(raw)

    gateway = gateway_factory(store_url, parse=parser)
    poisoned = distinct_message("poison", 0).replace(b"Subject:", POISON + b"\r\nSubject:", 1)
    normal = [distinct_message("after-poison", n) for n in range(5)]
    assert gateway.send(poisoned)[0] == 250
    assert [gateway.send(r)[0] for r in normal] == [250] * 5
    gateway.wait_idle(timeout=30)
    assert gateway.service.ready.is_set() and gateway.thread.is_alive()
    views = {m["sha256"]: (case, m) for case in gateway.store.export_cases() for m in case["messages"]}
    case, failed = views[sha(poisoned)]
    assert "processing_failed" in failed["flags"]
    assert failed["defects"] == ["processing_failed: ValueError"]
    assert calls["poison"] == 3
    with gateway.store.engine.connect() as conn:
        state, attempts = conn.execute(
            text("SELECT state, attempts FROM inbox WHERE sha256 = :d"), {"d": sha(poisoned)}
        ).one()
    assert (state, attempts) == ("failed", 3)
    assert gateway.store.raw_message(case["case_id"], failed["index"]) == poisoned
    for raw in normal:
        _, message = views[sha(raw)]
        assert "processing_failed" not in message["flags"] and message["kind"] == "report"

    # After the parser is fixed: `reprocess --failed` runs it through the real parsers again.
    config = _write_config(tmp_path, store_url, 0)
    result = CliRunner().invoke(main, ["--config", str(config), "reprocess", "--failed"])
    assert result.exit_code == 0, result.output
    assert "reprocessed 1 message(s), 0 still failing" in result.output
    view = gateway.store.show_case(case["case_id"])
    [message] = [m for m in view["messages"] if m["sha256"] == sha(poisoned)]
    assert "processing_failed" not in message["flags"]
    assert message["defects"] == []
    assert message["message_id"].startswith("poison-0-")
    with gateway.store.engine.connect() as conn:
        state = conn.execute(text("SELECT state FROM inbox WHERE sha256 = :d"), {"d": sha(poisoned)}).scalar()
    assert state == "done"


def test_hanging_parser_does_not_stall_the_messages_behind_it(gateway_factory, sqlite_url: str) -> None:
    entered, release = threading.Event(), threading.Event()

    def parser(raw: bytes):
        if b"X-Hang: yes" in raw:
            entered.set()
            release.wait(20)  # a parser stuck on one message (bounded here so the test ends)
        return parse_message(raw)

    gateway = gateway_factory(sqlite_url, parse=parser, intake={"processing_timeout": 1})
    hanging = distinct_message("hang", 0).replace(b"Subject:", b"X-Hang: yes\r\nSubject:", 1)
    others = [distinct_message("behind-hang", n) for n in range(3)]
    try:
        assert gateway.send(hanging)[0] == 250
        assert entered.wait(10)
        assert [gateway.send(r)[0] for r in others] == [250] * 3  # SMTP itself is not blocked
        # Well inside the 20 s hang, so this still shows the others pass it; 3 s failed on a loaded box.
        processed = wait_until(lambda: gateway.store.inbox_depth() <= 1, timeout=12)
        assert processed, "messages behind a hanging parse were not processed while it hung"
    finally:
        release.set()
        gateway.wait_idle()


# ---- 4. bounded resources ----------------------------------------------------------------------------------


def test_max_sessions_refuses_the_next_connection_with_421(gateway_factory, sqlite_url: str) -> None:
    gateway = gateway_factory(sqlite_url, smtp={"max_sessions": 2, "max_sessions_per_ip": 10})
    held = [connect(gateway.port) for _ in range(2)]
    try:
        assert all(greeting.startswith(b"220") for _, greeting in held)
        sock, greeting = connect(gateway.port)
        assert greeting.startswith(b"421 4.7.0")
        assert recv_reply(sock) == b""  # and closed
        sock.close()
    finally:
        for sock, _ in held:
            sock.close()
    # Slots are given back when sessions end.
    assert wait_until(lambda: connect(gateway.port)[1].startswith(b"220"), timeout=5)


def test_max_sessions_per_ip_refuses_only_that_ip(gateway_factory, sqlite_url: str) -> None:
    gateway = gateway_factory(sqlite_url, smtp={"max_sessions": 10, "max_sessions_per_ip": 1})
    first, greeting = connect(gateway.port, source="127.0.0.1")
    try:
        assert greeting.startswith(b"220")
        second, greeting = connect(gateway.port, source="127.0.0.1")
        assert greeting.startswith(b"421 4.7.0")
        second.close()
        other, greeting = connect(gateway.port, source="127.0.0.2")  # another client IP is still served
        assert greeting.startswith(b"220")
        other.close()
    finally:
        first.close()


def test_idle_client_is_disconnected(gateway_factory, sqlite_url: str) -> None:
    gateway = gateway_factory(sqlite_url, smtp={"idle_timeout": 1.0})
    sock, greeting = connect(gateway.port)
    assert greeting.startswith(b"220")
    sock.settimeout(15)
    received = b""
    while chunk := sock.recv(4096):  # says nothing; the server must end the session
        received += chunk
    sock.close()
    assert not received or received.startswith(b"421")
    assert wait_until(lambda: gateway.service.limits.total == 0, timeout=5)


def test_session_deadline_cuts_a_chatty_client_with_421(gateway_factory, sqlite_url: str) -> None:
    gateway = gateway_factory(sqlite_url, smtp={"idle_timeout": 30.0, "session_deadline": 1.5})
    sock, greeting = connect(gateway.port)
    assert greeting.startswith(b"220")
    sock.sendall(b"EHLO client.test\r\n")
    assert recv_reply(sock).startswith(b"250")
    last = b""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            sock.sendall(b"NOOP\r\n")
            last = recv_reply(sock, timeout=5)
        except OSError:
            break
        if not last or not last.startswith(b"250"):
            break
        time.sleep(0.2)
    sock.close()
    assert b"421 4.4.2" in last, last


@pytest.mark.parametrize(
    ("verb", "length"),
    # MAIL may be 512 + 26 (SIZE, RFC 1870) + 10 (SMTPUTF8, RFC 6531) = 548 after EHLO; EHLO gets 512.
    [("EHLO", 513), ("MAIL", 549), ("MAIL", 100_000)],
)
def test_command_line_over_its_limit_gets_500_and_the_session_goes_on(
    gateway_factory, sqlite_url: str, verb: str, length: int
) -> None:
    gateway = gateway_factory(sqlite_url)
    sock, _ = connect(gateway.port)
    try:
        if verb == "EHLO":
            line = b"EHLO " + b"h" * (length - 5)
        else:
            sock.sendall(b"EHLO client.test\r\n")
            recv_reply(sock)
            address = "a" * (length - len("MAIL FROM:<@example.net>")) + "@example.net"
            line = f"MAIL FROM:<{address}>".encode()
        assert len(line) == length
        sock.sendall(line + b"\r\n")
        assert recv_reply(sock).startswith(b"500")
        sock.sendall(b"EHLO client.test\r\n")
        assert recv_reply(sock).startswith(b"250")
        sock.sendall(b"MAIL FROM:<reporter@example.net>\r\n")
        assert recv_reply(sock).startswith(b"250")
    finally:
        sock.close()


def test_command_reader_buffers_no_more_than_a_command_line(gateway_factory, sqlite_url: str) -> None:
    """Between commands the stream limit must be about a command line, not the message size: otherwise
    each of max_sessions clients can park max_message_bytes of a never-ending 'command' in our memory."""
    from gateway import smtp as gsmtp

    gateway = gateway_factory(sqlite_url)
    seen: list[int] = []
    original = gsmtp.GatewaySMTP.smtp_NOOP

    async def spy(self, arg):  # type: ignore[no-untyped-def]
        seen.append(self._reader._limit)
        return await original(self, arg)

    gsmtp.GatewaySMTP.smtp_NOOP = spy  # type: ignore[method-assign]
    try:
        with smtplib.SMTP("127.0.0.1", gateway.port, timeout=10) as client:
            client.ehlo("client.test")
            client.noop()
            client.mail("reporter@example.net")
            client.rcpt("abuse@example.org")
            assert client.data(distinct_message("limit", 1))[0] == 250
            client.noop()
    finally:
        gsmtp.GatewaySMTP.smtp_NOOP = original  # type: ignore[method-assign]
    assert seen and max(seen) <= 64 * 1024, seen


def _nested(depth: int) -> bytes:
    head = "From: deep@example.net\r\nTo: abuse@example.org\r\nSubject: nested\r\nMIME-Version: 1.0\r\n"
    body = "Content-Type: text/plain\r\n\r\nthe innermost part\r\n"
    for level in range(depth):
        boundary = f"b{level}"
        body = (
            f'Content-Type: multipart/mixed; boundary="{boundary}"\r\n\r\n'
            f"--{boundary}\r\n{body}--{boundary}--\r\n"
        )
    return (head + body).encode()


def _many_parts(count: int) -> bytes:
    parts = "".join(f"--many\r\nContent-Type: text/plain\r\n\r\npart {n}\r\n" for n in range(count))
    return (
        "From: wide@example.net\r\nTo: abuse@example.org\r\nSubject: wide\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="many"\r\n\r\n' + parts + "--many--\r\n"
    ).encode()


@pytest.mark.parametrize(
    "raw", [pytest.param(_nested(40), id="depth-40"), pytest.param(_many_parts(800), id="parts-800")]
)
def test_too_complex_mime_is_stored_raw_and_parsed_partially(gateway: RunningGateway, raw: bytes) -> None:
    assert gateway.send(raw)[0] == 250
    gateway.wait_idle(timeout=30)
    [case] = list(gateway.store.export_cases())
    [message] = case["messages"]
    assert message["sha256"] == sha(raw)
    assert gateway.store.raw_message(case["case_id"], 1) == raw
    assert "processing_failed" not in message["flags"]
    assert any(d.startswith("too_complex") for d in message["defects"]), message["defects"]
    assert message["subject"] in ("nested", "wide")
