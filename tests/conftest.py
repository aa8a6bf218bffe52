"""Fixtures: a real gateway on port 0, a real SMTP sink as smarthost, a real store (SQLite file or the
PostgreSQL named by ABUSE_GATEWAY_TEST_PG).

The gateway runs in a thread with its own event loop (the harness's choice, not the product's: `serve`
runs one loop in the main thread) so tests can speak SMTP with plain, blocking `smtplib`.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import shutil
import smtplib
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP as AioSMTP
from sqlalchemy import Engine, event, text
from sqlalchemy.engine import make_url

from gateway.config import Config, load_config
from gateway.prepare import ParseFn
from gateway.service import Service
from storage import schema
from storage.engine import make_engine
from tests.dns_server import LocalDns, start_test_dns

DATA = Path(__file__).with_name("data")
CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus"
PG_URL = os.environ.get("ABUSE_GATEWAY_TEST_PG")

# Issue 22: intake checks SPF, DKIM and DMARC of every message. No test may ask the host's resolver, so
# one DNS server on 127.0.0.1 (tests/dns_server.py: the test zones, NXDOMAIN for every other name) runs
# for the whole session, and every gateway the suite starts names it: make_config below sets it, and the
# environment reaches CLI runs and `serve` subprocesses (helpers that strip ABUSE_GATEWAY_* from a child's
# environment put `suite_env()` back). The suite's senders are made-up domains without SPF or DKIM, so
# confirmations are not held back for them unless a test asks (tests/test_mail_auth.py does).
TEST_DNS: LocalDns = start_test_dns()


def suite_env() -> dict[str, str]:
    return {
        "ABUSE_GATEWAY_DNS_NAMESERVERS": TEST_DNS.address,
        "ABUSE_GATEWAY_CONFIRM_REQUIRE_AUTHENTICATED": "false",
    }


os.environ.update(suite_env())


def load_eml(name: str) -> bytes:
    return (DATA / name).read_bytes()


def free_port() -> int:
    """A port for a `serve` subprocess's config (free now; nothing holds it for the test)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    pytest.fail("serve did not start listening")


@pytest.fixture
def cli_config(tmp_path: Path, store_url: str) -> Path:
    """A config file for CLI tests (confirmations off, everything under tmp_path), store upgraded."""
    path = tmp_path / "gateway.toml"
    path.write_text(
        f'[store]\nurl = "{store_url}"\nspool_dir = "{tmp_path}/spool"\n'
        f'[confirm]\nenabled = false\noutbox_dir = "{tmp_path}/outbox"\nsecret_file = "{tmp_path}/key"\n'
    )
    upgrade_store(store_url)
    return path


def run_cli(config: Path, *args: str, input: bytes | None = None) -> str:
    """The real CLI in-process (click's runner); fails the test on a non-zero exit."""
    from click.testing import CliRunner

    from gateway.cli import main

    result = CliRunner().invoke(main, ["--config", str(config), *args], input=input)
    assert result.exit_code == 0, result.output
    return result.output


def self_signed_pair(directory: Path, name: str) -> tuple[Path, Path]:
    """A throwaway certificate and key (CN=name) for STARTTLS tests, made with the openssl CLI."""
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            f"/CN={name}",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


_TEMPLATE: list[Path] = []


def _sqlite_template() -> Path:
    """One SQLite store migrated to head, once per test session, checkpointed so the file alone is it."""
    if not _TEMPLATE:
        directory = Path(tempfile.mkdtemp(prefix="abuse-gateway-template-"))
        atexit.register(shutil.rmtree, directory, True)
        engine = make_engine(f"sqlite:///{directory}/head.db")
        schema.upgrade(engine)
        with engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        engine.dispose()
        _TEMPLATE.append(directory / "head.db")
    return _TEMPLATE[0]


# The SQL (statement, parameters, executemany) alembic ran to bring an empty PostgreSQL schema to head.
_PG_SCRIPT: list[tuple[str, Any, bool]] = []


def _pg_upgrade(engine: Engine) -> None:
    """An empty PostgreSQL schema to head: alembic the first time in a session, recording every statement
    it sends; afterwards the same statements replayed in one transaction (what alembic would send again
    to the same empty schema, without loading and running the thirteen migration modules)."""
    with engine.connect() as conn:
        empty = not conn.exec_driver_sql(
            "SELECT count(*) FROM pg_tables WHERE schemaname = current_schema()"
        ).scalar()
    if not empty:
        schema.upgrade(engine)
        return
    if _PG_SCRIPT:
        raw = engine.raw_connection()
        try:
            cursor = raw.cursor()
            for statement, parameters, many in _PG_SCRIPT:
                if many:
                    cursor.executemany(statement, parameters)
                elif parameters is None:
                    cursor.execute(statement)
                else:
                    cursor.execute(statement, parameters)
            raw.commit()
        finally:
            raw.close()
        return
    recorded: list[tuple[str, Any, bool]] = []

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
        plain = context is not None and getattr(context, "no_parameters", False)
        recorded.append((statement, None if plain else parameters, many))

    event.listen(engine, "before_cursor_execute", record)
    try:
        schema.upgrade(engine)
    finally:
        event.remove(engine, "before_cursor_execute", record)
    _PG_SCRIPT.extend(recorded)


def upgrade_store(url: str) -> None:
    """The store at this release's schema, as `db upgrade` leaves it, without paying for the migrations in
    every test: running the thirteen of them (SQLite batch table rebuilds) cost ~0.15 s of CPU in each of
    hundreds of tests. A SQLite store not created yet is a copy of one migrated once per session, made as
    `storage.engine` makes a store file (directory 0700, file 0600); an empty PostgreSQL schema gets the
    SQL alembic ran once (`_pg_upgrade`). Anything else goes through alembic. The migrations themselves,
    and `db upgrade`, keep tests of their own (test_machine_reports_e2e, test_cli, test_csam_desk, ...)."""
    parsed = make_url(url)
    database = parsed.database
    if parsed.get_backend_name() == "sqlite" and database and database != ":memory:":
        target = Path(database)
        if not target.exists():
            target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as out, _sqlite_template().open("rb") as template:
                shutil.copyfileobj(template, out)
            return
    engine = make_engine(url)
    try:
        if parsed.get_backend_name() == "postgresql":
            _pg_upgrade(engine)
        else:
            schema.upgrade(engine)
    finally:
        engine.dispose()


def reset_postgres(url: str) -> None:
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Every store-facing test runs on both backends; the PostgreSQL half skips without a URL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/cases.db"
    if not PG_URL:
        pytest.skip("ABUSE_GATEWAY_TEST_PG is not set")
    reset_postgres(PG_URL)
    return PG_URL


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/cases.db"


def make_config(tmp_path: Path, store_url: str, **sections: dict[str, Any]) -> Config:
    base: dict[str, dict[str, Any]] = {
        "smtp": {"listen": ["127.0.0.1:0"], "hostname": "mx.test.example"},
        # In-process gateways keep intake in a thread (parser hooks cannot cross into a spawned process);
        # the tests that run `serve` as a subprocess exercise the default process mode.
        "intake": {"addresses": ["abuse@example.org"], "mode": "thread"},
        "store": {"url": store_url, "spool_dir": str(tmp_path / "spool"), "group_commit_ms": 1},
        "confirm": {
            "from": "abuse@example.org",
            "outbox_dir": str(tmp_path / "outbox"),
            "secret_file": str(tmp_path / "reply-token.key"),
            # The suite's senders are made-up domains with no DNS: tests that are not about authentication
            # expect their confirmations (tests/test_mail_auth.py turns this on).
            "require_authenticated": False,
        },
        "dns": {"nameservers": [TEST_DNS.address], "timeout": 1.0},
    }
    for section, values in sections.items():
        base.setdefault(section, {}).update(values)
    return Config.model_validate(base)


@dataclass
class RunningGateway:
    service: Service
    thread: threading.Thread
    loop: asyncio.AbstractEventLoop

    @property
    def port(self) -> int:
        return self.service.ports[0]

    @property
    def store(self) -> Any:
        return self.service.store

    def send(
        self,
        raw: bytes,
        mail_from: str = "reporter@example.net",
        rcpt_tos: tuple[str, ...] | list[str] = ("abuse@example.org",),
    ) -> tuple[int, bytes]:
        """One SMTP transaction; returns the reply to the end of DATA."""
        with smtplib.SMTP("127.0.0.1", self.port, timeout=30) as client:
            client.ehlo("client.test")
            code, reply = client.mail(mail_from)
            assert code == 250, reply
            for rcpt in rcpt_tos:
                code, reply = client.rcpt(rcpt)
                assert code == 250, reply
            return client.data(raw)

    def wait_idle(self, timeout: float = 20.0) -> None:
        """Until every accepted message is processed (and the outbox has had a chance to run)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.store.inbox_depth() == 0 and self.service.spool.depth() == 0:
                return
            time.sleep(0.02)
        raise AssertionError("inbox did not drain")

    def wait_outbox(
        self, predicate: Callable[[list[dict[str, Any]]], bool], timeout: float = 20.0
    ) -> list[Any]:
        deadline = time.monotonic() + timeout
        rows: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            rows = self.store.list_outbox()
            if predicate(rows):
                return rows
            time.sleep(0.05)
        raise AssertionError(f"outbox never matched: {rows}")

    def stop(self) -> None:
        if self.thread.is_alive():
            self.loop.call_soon_threadsafe(self.service.stop)
            self.thread.join(timeout=60)


def start_gateway(config: Config, parse: ParseFn | None = None, upgrade: bool = True) -> RunningGateway:
    if upgrade:
        upgrade_store(config.store.url)
    started = threading.Event()
    holder: dict[str, Any] = {}

    def run() -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        holder["loop"] = loop

        async def main() -> None:
            # The spool is looked at every 0.2 s, not 2 s: the outage tests wait for its replay.
            service = Service(config, parse=parse, on_ready=lambda _s: started.set(), spool_replay_every=0.2)
            holder["service"] = service
            await service.run()

        try:
            loop.run_until_complete(main())
        except BaseException as exc:  # surfaced to the test below
            holder["error"] = exc
            started.set()
        finally:
            loop.close()

    thread = threading.Thread(target=run, name="gateway", daemon=True)
    thread.start()
    if not started.wait(30) or "error" in holder:
        raise RuntimeError(f"gateway did not start: {holder.get('error')!r}")
    return RunningGateway(holder["service"], thread, holder["loop"])


@pytest.fixture
def gateway_factory(tmp_path: Path) -> Iterator[Callable[..., RunningGateway]]:
    started: list[RunningGateway] = []

    def factory(
        store_url: str | None = None, parse: ParseFn | None = None, **sections: Any
    ) -> RunningGateway:
        config = make_config(tmp_path, store_url or f"sqlite:///{tmp_path}/cases.db", **sections)
        gateway = start_gateway(config, parse)
        started.append(gateway)
        return gateway

    yield factory
    for gateway in started:
        gateway.stop()


@pytest.fixture
def gateway(gateway_factory: Callable[..., RunningGateway], store_url: str) -> RunningGateway:
    return gateway_factory(store_url)


# ---- the smarthost stand-in ---------------------------------------------------------------------------


@dataclass
class SinkHandler:
    """Answers each DATA with the next scripted reply (then 250), recording what it accepted."""

    replies: list[str] = field(default_factory=list)
    received: list[tuple[str, list[str], bytes]] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        reply = self.replies.pop(0) if self.replies else "250 2.0.0 OK"
        if reply.startswith("250"):
            self.received.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content))
        return reply


@dataclass
class Sink:
    handler: SinkHandler
    port: int
    loop: asyncio.AbstractEventLoop
    thread: threading.Thread

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def wait_for(self, count: int, timeout: float = 20.0) -> list[tuple[str, list[str], bytes]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.handler.received) >= count:
                return self.handler.received
            time.sleep(0.05)
        raise AssertionError(f"sink got {len(self.handler.received)} of {count} messages")


@pytest.fixture
def smtp_sink() -> Iterator[Sink]:
    handler = SinkHandler()
    ready = threading.Event()
    holder: dict[str, Any] = {}

    def run() -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)

        async def serve() -> None:
            server = await loop.create_server(
                lambda: AioSMTP(handler, hostname="sink.test", enable_SMTPUTF8=True), "127.0.0.1", 0
            )
            holder["port"] = server.sockets[0].getsockname()[1]
            holder["server"] = server
            ready.set()

        loop.run_until_complete(serve())
        holder["loop"] = loop
        loop.run_forever()
        loop.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    ready.wait(10)
    sink = Sink(handler, holder["port"], holder.get("loop") or asyncio.new_event_loop(), thread)
    yield sink
    loop = holder.get("loop")
    if loop is not None:
        # Closed, not only stopped: a stopped loop leaves the listening socket open, so the kernel still
        # accepts a connection nobody answers, and a gateway outliving this fixture (gateway_factory stops
        # after it) waited on it instead of being refused.
        loop.call_soon_threadsafe(holder["server"].close)
        loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout=10)


def config_from_env(tmp_path: Path) -> Config:
    return load_config(None, environ={})
