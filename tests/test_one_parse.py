"""The intake MIME-parses each message once, and the parser modules stay small (issue 18).

The count comes from an instrument, not a stand-in: every stdlib parse (BytesParser, Parser,
email.message_from_bytes, and mail-parser's own parse, which uses them) ends in FeedParser.close(), which
is wrapped here to count and then call the real method.
"""

from __future__ import annotations

from datetime import UTC, datetime
from email.feedparser import FeedParser
from pathlib import Path

import pytest

from gateway.prepare import prepare
from parsers.message import parse_message
from parsers.mime import ParseLimits, parse_tree
from parsers.reports import parse_machine_report
from storage.store import ClaimedEntry
from tests.conftest import load_eml

PARSERS = Path(__file__).resolve().parent.parent / "parsers"


def _entry(raw: bytes, mail_from: str) -> ClaimedEntry:
    return ClaimedEntry(1, raw, mail_from, ("abuse@example.org",), datetime.now(UTC), "", 1)


def _count_parses(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls = [0]
    close = FeedParser.close

    def counting_close(self: FeedParser):  # type: ignore[no-untyped-def]
        calls[0] += 1
        return close(self)

    monkeypatch.setattr(FeedParser, "close", counting_close)
    return calls


def test_forwarded_arf_report_is_mime_parsed_once_for_parse_report_and_forwards(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    raw = load_eml("person_forwarded_arf.eml")
    calls = _count_parses(monkeypatch)
    prepared = prepare(_entry(raw, "reporter@example.net"))
    assert calls[0] == 1
    assert prepared.evidence, "the forward parser ran on the tree"
    assert prepared.evidence[0]["received"], "mail-parser read the forwarded message's Received hops"


def test_bounce_is_mime_parsed_once_for_parse_report_and_returned_ids(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    raw = load_eml("dsn_postfix.eml")
    calls = _count_parses(monkeypatch)
    prepared = prepare(_entry(raw, ""))
    assert calls[0] == 1
    assert prepared.kind == "automatic"
    assert prepared.returned_message_ids and prepared.embedded_texts


def test_the_tree_limits_bound_the_report_parser_too() -> None:
    raw = load_eml("parse_arf_report.eml")
    assert parse_machine_report(parse_tree(raw)) is not None
    assert parse_machine_report(parse_tree(raw, ParseLimits(max_parts=1))) is None


def test_parse_message_reads_the_same_from_bytes_and_from_their_tree() -> None:
    raw = load_eml("person_forwarded_arf.eml")
    assert parse_message(parse_tree(raw)) == parse_message(raw)


# Modules that were over the line before issue 18 and are not split yet; pinned so they cannot grow.
_NOT_YET_SPLIT = {"case_ref.py": 499, "reports.py": 551, "urlscan.py": 617}


@pytest.mark.parametrize("module", sorted(p.name for p in PARSERS.glob("*.py")))
def test_parser_module_stays_under_450_lines(module: str) -> None:
    lines = len((PARSERS / module).read_text(encoding="utf-8").splitlines())
    assert lines <= _NOT_YET_SPLIT.get(module, 449), f"{module}: {lines} lines, split it (one job per module)"
