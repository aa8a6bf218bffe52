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


def _gate(request: Request) -> tuple[str, Sight, str | None] | Response:
    """(case ID, sight, reason) when this download may go ahead, else the response to give instead."""
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
    return case_id, seen, reason


@needs(*READERS)
def raw(request: Request) -> Response:
    gated = _gate(request)
    if isinstance(gated, Response):
        return gated
    case_id, seen, reason = gated
    index = int(request.path_params["index"])
    store = parts(request).store
    data = store.raw_message(case_id, index)
    if data is None:
        return not_found()
    who = person(request).name
    if seen is Sight.REASON:
        from storage.csam_views import record_view

        record_view(store.engine, who, case_id, "raw", reason, message_index=index)
    else:
        store.audit(who, "raw", f"{case_id} {index}")
    return download(data, safe_name(case_id, str(index)) + ".eml")


@needs(*READERS)
def attachment(request: Request) -> Response:
    gated = _gate(request)
    if isinstance(gated, Response):
        return gated
    case_id, seen, reason = gated
    index, number = int(request.path_params["index"]), int(request.path_params["number"])
    store = parts(request).store
    data = store.raw_message(case_id, index)
    view = store.show_case(case_id)
    if data is None or view is None or number < 1:
        return not_found()
    from parsers.payloads import attachment_payloads

    listed = next((m["attachments"] for m in view["messages"] if m["index"] == index), [])
    payloads = attachment_payloads(data)
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
    who = person(request).name
    if seen is Sight.REASON:
        from storage.csam_views import record_view

        record_view(store.engine, who, case_id, "attachment", reason, index, number)
    else:
        store.audit(who, "attachment", f"{case_id} {index} {number}")
    name = listed[number - 1].get("filename") or "attachment"
    return download(body, safe_name(case_id, str(index), str(number), name))


ROUTES = [
    Route("/cases/{case_id}/messages/{index:int}/raw", raw, methods=["GET", "POST"]),
    Route(
        "/cases/{case_id}/messages/{index:int}/attachments/{number:int}", attachment, methods=["GET", "POST"]
    ),
]
