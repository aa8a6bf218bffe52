"""The queue (`/`) and the search box (`/search?q=`), and support's lookup by case ID.

The queue is storage's keyset-paginated read model (`store.desk.queue`); the search runs
storage/search.py's `find_cases` for each reading gateway/case_query.py gives the text, the query behind
`cases list`. Both list reporters and subjects, which are content: support and admin get the lookup form
instead, which finds a case by the ID a reporter quotes and nothing else.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from gateway.viewing import WITHHELD_SUBJECT, may_see_lists, withhold_listed
from gateway.web.gate import EVERYONE, case_id_of, needs, parts, person
from gateway.web.render import Ours, page

PAGE_SIZE = 50
SEARCH_LIMIT = 100
FILTERS = ("status", "kind", "flag", "assignee", "from", "to")


def _instant(value: str) -> datetime | None:
    from parsers.when import InstantError, parse_instant

    try:
        return parse_instant(value, datetime.now(UTC)) if value else None
    except InstantError:
        raise ValueError(f"{value!r} is not a time: use 2026-12-01, 2026-12-01T20:45 or 7d") from None


@needs(*EVERYONE)
def home(request: Request) -> Response:
    if not may_see_lists(person(request).role):
        return page(request, "lookup.html", q="", problem=None)
    from storage.queue import QUEUE_FLAGS, QueueError
    from storage.search import CASE_STATUSES, MESSAGE_KINDS

    given = {k: request.query_params.get(k, "").strip()[:200] for k in FILTERS}
    before = request.query_params.get("before") or None
    problem, rows, more, cursor = None, [], False, None
    try:
        assignee = given["assignee"] or None
        found = parts(request).store.desk.queue(
            status=given["status"] or None,
            kind=given["kind"] or None,
            flag=given["flag"] or None,
            assignee=None if assignee == "nobody" else assignee,
            unassigned=assignee == "nobody",
            since=_instant(given["from"]),
            until=_instant(given["to"]),
            before=before,
            limit=PAGE_SIZE,
        )
        rows = [_queue_row(r) for r in found.rows]
        more, cursor = found.has_more, found.next_cursor
    except (QueueError, ValueError) as exc:
        problem = str(exc)
    next_url = None
    if more and cursor:
        query = {k: v for k, v in given.items() if v}
        next_url = Ours("/?" + urlencode({**query, "before": cursor}))
    return page(
        request,
        "queue.html",
        rows=rows,
        given=given,
        statuses=CASE_STATUSES,
        kinds=MESSAGE_KINDS,
        flags=QUEUE_FLAGS,
        problem=problem,
        next_url=next_url,
        first_page=before is None,
    )


def _queue_row(row: Any) -> dict[str, Any]:
    withheld = "csam" in row.flags or "possible_csam" in row.flags
    return {
        "case_id": row.case_id,
        "url": Ours(f"/cases/{row.case_id}"),
        "status": row.status,
        "kind": row.kind,
        "flags": row.flags,
        "messages": row.messages,
        "reporter": row.reporter,
        "subject": WITHHELD_SUBJECT if withheld else row.subject,
        "withheld": withheld,
        "created_at": row.created_at.isoformat(timespec="seconds"),
        "assignee": row.assignee,
        "hold": row.hold,
    }


@needs(*EVERYONE)
def search(request: Request) -> Response:
    q = request.query_params.get("q", "").strip()[:500]
    desk = parts(request)
    case_id = case_id_of(request, q) if q else None
    if case_id is not None and desk.store.case_exists(case_id):
        return RedirectResponse(f"/cases/{case_id}", status_code=303)
    if not may_see_lists(person(request).role):
        problem = "No case has that ID." if q else None
        return page(request, "lookup.html", q=q, problem=problem, status=404 if q else 200)
    from gateway.case_query import readings
    from storage.search import find_cases

    seen: dict[str, dict[str, Any]] = {}
    notes: list[str] = []
    for reading in readings(q):
        found = find_cases(desk.store.engine, reading.wanted, limit=SEARCH_LIMIT)
        for row in withhold_listed(found.rows):
            entry = seen.setdefault(row["case_id"], {**row, "matched": []})
            entry["matched"].append(reading.label)
        if found.cut_note():
            notes.append(f"{reading.label}: showing {len(found.rows)} of {found.total}")
    rows = sorted(seen.values(), key=lambda r: r["created_at"] or "", reverse=True)
    for row in rows:
        row["url"] = Ours(f"/cases/{row['case_id']}")
        row["matched"] = ", ".join(row["matched"])
    return page(request, "search.html", q=q, rows=rows, notes=notes)


ROUTES = [
    Route("/", home, methods=["GET"]),
    Route("/search", search, methods=["GET"]),
]
