"""What a desk user typed into a search, as the `CaseFilter`s storage/search.py answers (issue 20).

Why a module: `cases list --indicator/--hash/--reporter/--text` and the web desk's one search box must mean
the same thing by the same words. The CLI names the kind of search with its option; the search box tries
each reading the text allows (a digest, an indicator, a reporter's address, full text) and says which one
matched; a case ID is the CLI's `cases show`, so the box goes straight to that case.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from storage.search import CaseFilter

# MD5, SHA-1, SHA-256 or PDQ: 32, 40 or 64 hex digits.
DIGEST_RE = re.compile(r"[0-9a-fA-F]{32}(?:[0-9a-fA-F]{8}|[0-9a-fA-F]{32})?")


def is_digest(value: str) -> bool:
    return DIGEST_RE.fullmatch(value.strip()) is not None


def indicator_filter(value: str) -> tuple[str, str | None] | None:
    """`cases list --indicator`'s reading: (normalised value, host for domain/IP searches), or None when the
    text is not a URL, domain, IP or e-mail address."""
    from parsers.indicators import indicator_host, parse_indicator_query

    parsed = parse_indicator_query(value)
    if parsed is None:
        return None
    host = indicator_host(parsed) if parsed.kind in ("domain", "ipv4", "ipv6") else None
    return parsed.value, host


@dataclass(frozen=True, slots=True)
class Reading:
    label: str  # what the desk is told: "attachment hash", "indicator", "reporter", "full text"
    wanted: CaseFilter


def readings(q: str) -> list[Reading]:
    """Every way the search box reads `q`, most specific first."""
    q = q.strip()
    if not q:
        return []
    if is_digest(q):
        return [Reading("attachment hash", CaseFilter(digest=q))]
    found: list[Reading] = []
    indicator = indicator_filter(q)
    if indicator is not None:
        found.append(Reading("indicator", CaseFilter(indicator=indicator)))
    if "@" in q and " " not in q:
        found.append(Reading("reporter", CaseFilter(reporter=q)))
    found.append(Reading("full text", CaseFilter(text=q)))
    return found
