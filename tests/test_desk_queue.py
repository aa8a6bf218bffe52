"""The desk's queue (issue 20): newest first, every filter, keyset pages that neither skip nor repeat a case
even when many were opened in the same instant. On a real store, SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import insert

from storage import schema
from storage.engine import make_engine
from storage.models import Case, InboxEntry, Message
from storage.queue import QueueError, decode_cursor, encode_cursor
from storage.store import CaseStore

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def store(store_url: str) -> Iterator[CaseStore]:
    engine = make_engine(store_url)
    schema.upgrade(engine)
    yield CaseStore(engine, new_case_id=lambda: "unused")
    engine.dispose()


def _fill(store: CaseStore, cases: list[dict[str, Any]]) -> list[str]:
    """Cases with their messages, written as the intake would leave them (one inbox row per message)."""
    ids = []
    with store.engine.begin() as conn:
        inbox_pk = message_pk = 0
        for n, spec in enumerate(cases, start=1):
            case_id = f"ABU-{n:04d}-TEST"
            ids.append(case_id)
            at = spec.get("at", T0)
            conn.execute(
                insert(Case.__table__).values(
                    id=n,
                    case_id=case_id,
                    status=spec.get("status", "open"),
                    reporter=f"r{n}@example.net",
                    subject=f"raw {n}",
                    escaped_subject=f"escaped {n}",
                    kind=spec.get("kind", "report"),
                    hold=False,
                    csam=spec.get("csam", False),
                    possible_csam=spec.get("possible_csam", False),
                    created_at=at,
                    updated_at=at,
                    assignee=spec.get("assignee"),
                )
            )
            for index, flags in enumerate(spec.get("messages", [[]]), start=1):
                inbox_pk += 1
                message_pk += 1
                conn.execute(
                    insert(InboxEntry.__table__).values(
                        id=inbox_pk,
                        intake_uid=f"u{inbox_pk}",
                        received_at=at,
                        rcpt_tos=[],
                        size=1,
                        sha256=f"{inbox_pk:064x}",
                        raw=b"x",
                        state="done",
                        confirm=True,
                        attempts=1,
                    )
                )
                conn.execute(
                    insert(Message.__table__).values(
                        id=message_pk,
                        case_pk=n,
                        index=index,
                        inbox_id=inbox_pk,
                        kind="report" if index == 1 else "amendment",
                        received_at=at,
                        in_reply_to=[],
                        references=[],
                        sha256=f"{inbox_pk:064x}",
                        defects=[],
                        flags=flags,
                    )
                )
    return ids


def _walk(store: CaseStore, limit: int, **filters: Any) -> list[str]:
    seen: list[str] = []
    before = None
    for _ in range(1000):
        page = store.desk.queue(before=before, limit=limit, **filters)
        assert len(page.rows) <= limit
        seen += [row.case_id for row in page.rows]
        if not page.has_more:
            assert page.next_cursor is None
            return seen
        assert page.next_cursor == page.rows[-1].cursor
        before = page.next_cursor
    raise AssertionError("the queue never ended")


def test_pages_never_skip_or_repeat_a_case_opened_in_the_same_instant(store: CaseStore) -> None:
    # 30 cases: 12 share one instant (the tie is broken by key), the rest spread around it.
    specs = [{"at": T0 + timedelta(minutes=(n % 3) - 1)} if n % 5 else {"at": T0} for n in range(18)]
    specs += [{"at": T0} for _ in range(12)]
    ids = _fill(store, specs)
    expected = [
        case_id
        for _, _, case_id in sorted(
            ((spec["at"], n, case_id) for n, (spec, case_id) in enumerate(zip(specs, ids, strict=True))),
            reverse=True,
        )
    ]
    for limit in (1, 4, 7, 30, 50):
        walked = _walk(store, limit)
        assert walked == expected, limit
        assert len(set(walked)) == len(ids)


def test_first_page_is_the_newest_and_says_whether_there_is_more(store: CaseStore) -> None:
    _fill(store, [{"at": T0 + timedelta(hours=n)} for n in range(5)])
    page = store.desk.queue(limit=3)
    assert [r.case_id for r in page.rows] == ["ABU-0005-TEST", "ABU-0004-TEST", "ABU-0003-TEST"]
    assert page.has_more and page.next_cursor
    last = store.desk.queue(limit=3, before=page.next_cursor)
    assert [r.case_id for r in last.rows] == ["ABU-0002-TEST", "ABU-0001-TEST"]
    assert not last.has_more and last.next_cursor is None
    exact = store.desk.queue(limit=5)
    assert len(exact.rows) == 5 and not exact.has_more


def test_rows_carry_what_the_queue_shows(store: CaseStore) -> None:
    _fill(
        store,
        [
            {
                "kind": "machine_report",
                "assignee": "ana",
                "messages": [[], ["unverified_sender"], ["processing_failed", "csam:machine_report"]],
                "possible_csam": True,
            },
            {"at": T0 - timedelta(days=1)},
        ],
    )
    first, second = store.desk.queue().rows
    assert first.case_id == "ABU-0001-TEST"
    assert (first.status, first.kind, first.messages, first.assignee) == ("open", "machine_report", 3, "ana")
    assert first.flags == ("csam", "possible_csam", "unverified_sender", "processing_failed")
    assert (first.reporter, first.subject) == ("r1@example.net", "escaped 1")  # the escaped subject
    assert first.created_at == T0 and first.updated_at == T0
    assert (second.flags, second.messages, second.assignee) == ((), 1, None)


@pytest.mark.parametrize("common_flag", [2000, 0], ids=["rare-flags", "common-flags"])
def test_every_filter_and_their_combination(
    store: CaseStore, common_flag: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # PostgreSQL reads a rare flag and a common one by different plans; both must give the same cases.
    import storage.search

    monkeypatch.setattr(storage.search, "COMMON_FLAG", common_flag)
    _fill(
        store,
        [
            {"status": "open", "assignee": "ana", "at": T0},
            {"status": "closed", "assignee": "ana", "at": T0 + timedelta(hours=1)},
            {"status": "open", "kind": "machine_report", "at": T0 + timedelta(hours=2)},
            {"status": "open", "csam": True, "at": T0 + timedelta(hours=3)},
            {"status": "closed", "possible_csam": True, "at": T0 + timedelta(hours=4)},
            {"status": "open", "messages": [[], ["unverified_sender"]], "at": T0 + timedelta(hours=5)},
            {"status": "merged", "messages": [["processing_failed"]], "at": T0 + timedelta(hours=6)},
        ],
    )

    def ids(**filters: Any) -> list[int]:
        return [int(r.case_id[4:8]) for r in store.desk.queue(**filters).rows]

    assert ids() == [7, 6, 5, 4, 3, 2, 1]
    assert ids(status="open") == [6, 4, 3, 1]
    assert ids(status="closed") == [5, 2]
    assert ids(kind="machine_report") == [3]
    assert ids(flag="csam") == [4]
    assert ids(flag="possible_csam") == [5]
    assert ids(flag="unverified_sender") == [6]
    assert ids(flag="processing_failed") == [7]
    assert ids(assignee="ana") == [2, 1]
    assert ids(assignee="ana", status="open") == [1]
    assert ids(unassigned=True) == [7, 6, 5, 4, 3]
    assert ids(since=T0 + timedelta(hours=4)) == [7, 6, 5]
    assert ids(until=T0 + timedelta(hours=1)) == [2, 1]
    # An offset is folded into UTC first (SQLite compares the stored text).
    assert ids(since=datetime(2026, 11, 1, 18, 0, tzinfo=UTC).astimezone(_plus_two())) == [7]
    assert _walk(store, 1, status="open") == [f"ABU-{n:04d}-TEST" for n in (6, 4, 3, 1)]
    assert _walk(store, 2, assignee="ana") == ["ABU-0002-TEST", "ABU-0001-TEST"]


def _plus_two() -> Any:
    from datetime import timezone

    return timezone(timedelta(hours=2))


def test_bad_filters_and_forged_cursors_are_refused(store: CaseStore) -> None:
    _fill(store, [{}])
    for filters in ({"status": "deleted"}, {"kind": "spam"}, {"flag": "hold"}):
        with pytest.raises(QueueError):
            store.desk.queue(**filters)
    for cursor in ("", "not-base64!", "Zm9v", encode_cursor(T0, 1)[:-3] + "###"):
        with pytest.raises(QueueError):
            store.desk.queue(before=cursor)
    assert decode_cursor(encode_cursor(T0, 42)) == (T0, 42)
    # A page limit is bounded whatever a URL asks for.
    assert len(store.desk.queue(limit=10**9).rows) == 1
