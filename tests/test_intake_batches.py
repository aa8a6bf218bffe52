"""How much work one claim and one case transaction take on (issue 10): bounded by messages, indicators and
bytes, so a run of large reports cannot hold SQLite's write lock, which the senders' 250s wait on, for
seconds, and is not all parsed before the first of it is stored."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

from gateway.intake import failed, transactions
from parsers.types import Indicator
from storage import schema
from storage.engine import make_engine
from storage.inbox import Envelope, Spool, store_now
from storage.records import ClaimedEntry, PreparedMessage
from storage.store import CaseStore


def _item(n: int, indicators: int = 0, size: int = 2_000) -> PreparedMessage:
    entry = ClaimedEntry(n, b"x" * size, "a@example.net", ("abuse@example.org",), datetime.now(UTC), "0", 1)
    found = tuple((Indicator("domain", f"h{n}-{i}.example"), f"h{n}-{i}.example") for i in range(indicators))
    return dataclasses.replace(failed(entry, "test"), indicators=found)


def test_a_run_of_indicator_heavy_reports_is_committed_in_several_transactions() -> None:
    parts = list(transactions([_item(n, indicators=300) for n in range(10)]))
    assert [len(p) for p in parts] == [3, 3, 3, 1]
    assert [i.entry.inbox_id for p in parts for i in p] == list(range(10))  # order kept


def test_one_huge_message_is_a_transaction_of_its_own_never_split() -> None:
    items = [_item(0), _item(1, indicators=5_000), _item(2, size=3 << 20), _item(3)]
    assert [[i.entry.inbox_id for i in p] for p in transactions(items)] == [[0], [1], [2], [3]]


def test_small_reports_share_a_transaction_up_to_the_message_limit() -> None:
    assert [len(p) for p in transactions([_item(n, indicators=5) for n in range(100)])] == [16] * 6 + [4]


def test_claim_stops_at_a_megabyte_of_raw_messages_but_always_takes_one(tmp_path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path}/cases.db")
    schema.upgrade(engine)
    raws = [
        b"Subject: big\r\n\r\n" + b"x" * 600_000,
        b"Subject: big\r\n\r\n" + b"y" * 600_000,
        b"Subject: s\r\n\r\n.",
    ]
    store_now(engine, Spool(tmp_path / "spool"), raws, Envelope("a@example.net", ("abuse@example.org",)), 5.0)
    store = CaseStore(engine, new_case_id=lambda: "unused")
    assert [len(store.claim_inbox(64)) for _ in range(3)] == [1, 2, 0]


def test_inbox_commits_wait_for_the_disk_and_case_transactions_do_not(tmp_path) -> None:
    # The 250 promise rests on synchronous=FULL (2); the intake process's derived writes use NORMAL (1),
    # made durable by the next inbox or claim commit in the same WAL (storage/engine.py).
    url = f"sqlite:///{tmp_path}/cases.db"
    for durable, expected in ((True, 2), (False, 1)):
        with make_engine(url, durable=durable).connect() as connection:
            assert connection.exec_driver_sql("PRAGMA synchronous").scalar() == expected
