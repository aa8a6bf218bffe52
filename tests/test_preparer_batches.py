"""A claimed batch crosses to the preparation child in one message (issue 18, point 5), yet every message
keeps its own deadline: the one that overruns is killed and reported, the messages around it are prepared,
and a batch its caller stopped reading cannot hand its results to the next batch."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

from gateway.preparer import ProcessingTimeout, ProcessPreparer
from storage.store import ClaimedEntry, PreparedMessage


def _entry(inbox_id: int, subject: str, body: str = "See https://phish.example/login") -> ClaimedEntry:
    raw = (
        f"From: reporter@example.net\r\nTo: abuse@example.org\r\nSubject: {subject}\r\n"
        f"Message-ID: <{inbox_id}@example.net>\r\n\r\n{body}\r\n"
    ).encode()
    sha = hashlib.sha256(raw).hexdigest()
    envelope = ("reporter@example.net", ("abuse@example.org",))
    return ClaimedEntry(inbox_id, raw, *envelope, datetime.now(UTC), sha, 1)


def _subjects(outcomes: list[PreparedMessage | Exception]) -> list[str]:
    return [o.parsed.subject if isinstance(o, PreparedMessage) else type(o).__name__ for o in outcomes]


def test_an_overrunning_message_is_killed_and_the_rest_of_its_batch_is_prepared() -> None:
    # Text under max_text_chars, so it is prepared in full, and slower than the 2 s limit (as in
    # test_hostile_intake's bomb).
    bomb = _entry(2, "bomb", "http://a." * (2 * 1024 * 1024 // 9))
    entries = [_entry(1, "before"), bomb, _entry(3, "after")]
    preparer = ProcessPreparer(512 * 1024 * 1024, 4_000_000, "WARNING")
    try:
        first_child = preparer.pid
        outcomes = list(preparer.run_batch(entries, timeout=2))
        assert preparer.pid != first_child  # the overrun cost its child its life
    finally:
        preparer.close()
    assert _subjects(outcomes) == ["before", ProcessingTimeout.__name__, "after"]
    prepared = [o for o in outcomes if isinstance(o, PreparedMessage)]
    assert [p.entry for p in prepared] == [entries[0], entries[2]]  # each result is its own entry's
    assert prepared[0].indicators and prepared[0].escaped_text


def test_a_batch_left_half_read_does_not_hand_its_results_to_the_next_batch() -> None:
    preparer = ProcessPreparer(512 * 1024 * 1024, 1_000_000, "WARNING")
    try:
        abandoned = preparer.run_batch([_entry(1, "one"), _entry(2, "two"), _entry(3, "three")], timeout=30)
        assert _subjects([next(abandoned)]) == ["one"]
        assert _subjects(list(preparer.run_batch([_entry(4, "four")], timeout=30))) == ["four"]
    finally:
        preparer.close()
