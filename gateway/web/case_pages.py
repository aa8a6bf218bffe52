"""`/cases/<id>`: the case's whole story for those who may read it, its bare facts for everyone else.

What a role sees is gateway/viewing.py's `sight`: support and admin (and analysts, on a CSAM or
possible-CSAM case) get existence, status, dates, message count and whether the confirmation went out;
analysts and the csam role get everything; the csam role reads a compartment case's content only after
stating a reason (POST /cases/<id>/view), recorded with its name before the content is sent. Every read
is audited like the CLI's (`show`, `metadata`, or a `viewed` row with the reason).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from gateway.viewing import Sight, may_mark, may_work, reason_text, sight
from gateway.web.gate import EVERYONE, case_id_of, form_value, needs, parts, person
from gateway.web.render import Block, Live, Ours, not_found, page

# A page a browser still scrolls: a 10 MB paste is shown by its start, the whole of it is in the .eml.
TEXT_SHOWN_CHARS = 200_000
# What support tells a reporter about a confirmation, by its outbox state (storage/outbox.py).
OUTBOX_WORDS = {
    "pending": "queued, not sent yet",
    "sending": "being sent",
    "sent": "sent (accepted by our mail server)",
    "failed": "could not be sent",
    "bounced": "sent, then bounced back (not delivered)",
    "suppressed": "not sent (the policy held it back)",
}
# What an action's redirect may announce (`?done=`): fixed words, never text from the request.
DONE = {
    "closed": "Case closed.",
    "open": "Case reopened.",
    "hold": "Case put on legal hold.",
    "released": "Case released from hold.",
    "assigned": "Assignment saved.",
    "note": "Note added.",
    "csam": "Marked CSAM.",
    "possible_csam": "Marked possible CSAM.",
    "cleared": "CSAM marks cleared.",
    "merged": "Case merged.",
    "split": "Message split into a new case.",
}


def lookup(request: Request) -> tuple[str, dict[str, Any], Sight] | None:
    """The case in the URL, its view and what this person may see of it; None is the one 404."""
    case_id = case_id_of(request, request.path_params.get("case_id", ""))
    if case_id is None:
        return None
    view = parts(request).store.show_case(case_id)
    if view is None:
        return None
    seen = sight(person(request).role, bool(view.get("csam") or view.get("possible_csam")))
    if seen is Sight.NONE:
        return None
    return case_id, view, seen


def facts(view: dict[str, Any]) -> dict[str, Any]:
    """What anyone signed in may know of a case: nothing a sender wrote, no address (not even the
    reporter's, in the confirmation rows)."""
    return {
        "case_id": view["case_id"],
        "status": view["status"],
        "created_at": view["created_at"],
        "updated_at": view["updated_at"],
        "message_count": len(view.get("messages", [])),
        "merged_into": view.get("merged_into"),
        "hold": view.get("hold"),
        "assignee": view.get("assignee"),  # a staff name, not a sender's
        "confirmations": [
            {
                "kind": o["kind"],
                "state": OUTBOX_WORDS.get(o["state"], o["state"]),
                "created_at": o["created_at"],
                "sent_at": o["sent_at"],
            }
            for o in view.get("outbox", [])
        ],
    }


@needs(*EVERYONE)
def show(request: Request) -> Response:
    found = lookup(request)
    if found is None:
        return not_found()
    case_id, view, seen = found
    who = person(request)
    store = parts(request).store
    if seen is Sight.CONTENT:
        store.audit(who.name, "show", case_id)
        return _full(request, case_id, view, reason=None)
    store.audit(who.name, "metadata", case_id)
    return page(
        request,
        "case_facts.html",
        case=facts(view),
        reason_form=seen is Sight.REASON,
        compartment=bool(view.get("csam") or view.get("possible_csam")),
        actions=_actions(who.role, seen, view),
        done=DONE.get(request.query_params.get("done", "")),
    )


@needs("csam")
def view_with_reason(request: Request) -> Response:
    """The csam role states why, and sees the content in the answer to that POST (nothing is kept in the
    session: the next view asks again)."""
    found = lookup(request)
    if found is None:
        return not_found()
    case_id, view, seen = found
    if seen is not Sight.REASON:
        return RedirectResponse(f"/cases/{case_id}", status_code=303)
    reason = reason_text(form_value(request, "reason"))
    if reason is None:
        return page(
            request,
            "case_facts.html",
            400,
            case=facts(view),
            reason_form=True,
            compartment=True,
            actions=_actions(person(request).role, seen, view),
            done=None,
            problem="State a reason: who asked, what for. It is recorded with your name.",
        )
    from storage.csam_views import record_view

    record_view(parts(request).store.engine, person(request).name, case_id, "show", reason)
    return _full(request, case_id, view, reason=reason)


def _actions(role: str, seen: Sight, view: dict[str, Any]) -> dict[str, bool]:
    compartment = bool(view.get("csam") or view.get("possible_csam"))
    return {
        "work": may_work(role),
        "confirm": may_mark(role, True) and not view.get("csam"),
        "possible": may_mark(role, False) and seen in (Sight.CONTENT, Sight.REASON) and not compartment,
        "unmark": may_mark(role, True) and compartment,  # not "clear": a dict method Jinja would find
    }


def _full(request: Request, case_id: str, view: dict[str, Any], reason: str | None) -> Response:
    from gateway.wording import csam_words, rule_words, thread_words
    from storage.csam_views import audit_for_case

    messages = []
    for m in view["messages"]:
        base = f"/cases/{case_id}/messages/{m['index']}"
        messages.append(
            {
                **m,
                "kind_words": rule_words(m["kind"], m["kind_rule"]),
                "thread_words": thread_words(m["thread_signal"], m["index"], m["flags"]),
                "text": Block((m["text"] or "")[:TEXT_SHOWN_CHARS]),
                "text_cut": len(m["text"] or "") > TEXT_SHOWN_CHARS,
                "text_chars": len(m["text"] or ""),
                "raw_url": Ours(f"{base}/raw"),
                "attachments": [
                    {**a, "url": Ours(f"{base}/attachments/{a.get('index', n)}")}
                    for n, a in enumerate(m["attachments"], start=1)
                ],
                "report_fields": list((m.get("report") or {}).get("fields", {}).items()),
            }
        )
    who = person(request)
    return page(
        request,
        "case.html",
        case=view,
        case_id=case_id,
        messages=messages,
        indicators=[
            {"kind": i["kind"], "value": i["value"], "live": Live(i["value"])} for i in view["indicators"]
        ],
        csam_lines=csam_words(view),
        audit=audit_for_case(parts(request).store.engine, case_id, limit=200),
        reason=reason,
        actions=_actions(who.role, Sight.REASON if reason else Sight.CONTENT, view),
        users=[u.name for u in parts(request).store.users.list() if not u.disabled],
        done=DONE.get(request.query_params.get("done", "")),
    )


ROUTES = [
    Route("/cases/{case_id}", show, methods=["GET"]),
    Route("/cases/{case_id}/view", view_with_reason, methods=["POST"]),
]
