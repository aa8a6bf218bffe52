"""Evidence leaving the desk: a message's raw .eml and one attachment, always as a download, never shown.

Every answer is `application/octet-stream` with `Content-Disposition: attachment` and an ASCII file name
we make (nosniff and no-store come from SecurityHeaders), so no browser renders, sniffs or runs what a
sender wrote. Each download is audited like `cases raw`/`cases attachment`; on a CSAM or possible-CSAM case
it is for the csam role only, behind a stated reason (GET asks for it, POST with `reason` downloads), and
recorded as a view before the bytes go out. Everyone else gets the one 404.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.viewing import Sight, reason_text
from gateway.web.case_pages import lookup
from gateway.web.gate import READERS, form_value, needs, parts, person
from gateway.web.render import Ours, not_found, page

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(*pieces: str) -> str:
    """An ASCII file name of letters, digits, `.`, `_`, `-` only: nothing a header or a shell can misread,
    no path, no leading dot."""
    name = "-".join(_UNSAFE.sub("_", p).strip("._-") for p in pieces if p)
    return (name or "download")[:120].lstrip(".") or "download"


def download(data: bytes, filename: str) -> Response:
    return Response(
        data,
        media_type="application/octet-stream",
        headers={"content-disposition": f'attachment; filename="{filename}"'},
    )


@dataclass(frozen=True, slots=True)
class _Cleared:
    """A download that may go ahead: whose case, seen how and why, and the message's stored bytes."""

    case_id: str
    seen: Sight
    reason: str | None
    index: int
    data: bytes


def _gate(request: Request) -> _Cleared | Response:
    """The message's bytes when this download may go ahead, else the response to give instead."""
    found = lookup(request)
    if found is None:
        return not_found()
    case_id, _view, seen = found
    if seen not in (Sight.CONTENT, Sight.REASON):
        return not_found()
    reason = None
    if seen is Sight.REASON:
        reason = reason_text(form_value(request, "reason")) if request.method == "POST" else None
        if reason is None:
            return page(
                request,
                "reason.html",
                400 if request.method == "POST" else 200,
                case_id=case_id,
                action=Ours(request.url.path),
                what="this download",
            )
    index = int(request.path_params["index"])
    data = parts(request).store.raw_message(case_id, index)
    if data is None:
        return not_found()
    return _Cleared(case_id, seen, reason, index, data)


def _account(request: Request, cleared: _Cleared, via: str, number: int | None = None) -> None:
    """Before the bytes go out: a CSAM case's download is recorded as a view with its reason, any other
    is audited like the CLI's."""
    store = parts(request).store
    who = person(request).name
    if cleared.seen is Sight.REASON:
        from storage.csam_views import record_view

        record_view(store.engine, who, cleared.case_id, via, cleared.reason, cleared.index, number)
    else:
        where = f"{cleared.case_id} {cleared.index}" + ("" if number is None else f" {number}")
        store.audit(who, via, where)


@needs(*READERS)
def raw(request: Request) -> Response:
    cleared = _gate(request)
    if isinstance(cleared, Response):
        return cleared
    _account(request, cleared, "raw")
    return download(cleared.data, safe_name(cleared.case_id, str(cleared.index)) + ".eml")


@needs(*READERS)
def attachment(request: Request) -> Response:
    cleared = _gate(request)
    if isinstance(cleared, Response):
        return cleared
    case_id, index, number = cleared.case_id, cleared.index, int(request.path_params["number"])
    view = parts(request).store.show_case(case_id)
    if view is None or number < 1:
        return not_found()
    from parsers.payloads import attachment_payloads

    listed = next((m["attachments"] for m in view["messages"] if m["index"] == index), [])
    payloads = attachment_payloads(cleared.data)
    if number > len(listed) or number > len(payloads):
        return not_found()
    body = payloads[number - 1]
    if hashlib.sha256(body).hexdigest() != listed[number - 1]["sha256"]:
        return page(
            request,
            "plain.html",
            409,
            title="Changed",
            text="This attachment no longer matches its stored sha256: reprocess the case first.",
        )
    _account(request, cleared, "attachment", number)
    name = listed[number - 1].get("filename") or "attachment"
    return download(body, safe_name(case_id, str(index), str(number), name))


ROUTES = [
    Route("/cases/{case_id}/messages/{index:int}/raw", raw, methods=["GET", "POST"]),
    Route(
        "/cases/{case_id}/messages/{index:int}/attachments/{number:int}", attachment, methods=["GET", "POST"]
    ),
]
