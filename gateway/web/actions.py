"""Working a case from the desk: each action a POST with the session's CSRF token, each calling the storage
function its CLI command calls (so scripts and the web agree), each audited with the signed-in person as
actor, each answered by a redirect back to the case (POST/redirect/GET).

| action | CLI | who |
| --- | --- | --- |
| close, reopen | `cases close`, `cases reopen` | analyst, csam |
| hold, release | `cases hold`, `cases release` | analyst, csam |
| assign, note | `cases assign`, `cases note` | analyst, csam |
| merge (`into`), split (`index`) | `cases merge`, `cases split` | analyst, csam |
| csam (`reason`, `kind`) | `cases csam [--possible] [--clear]` | csam; analyst: possible only |
| reply (`template` or `text`, `to_participants`) | `cases reply` | support, analyst, csam |
| state (`state`, `notify`) | `cases state` | analyst, csam |

A case the person may not see at all is the one 404, as everywhere.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from gateway.viewing import Sight, may_mark, may_reply, may_work, reason_text
from gateway.web.case_pages import lookup
from gateway.web.gate import EVERYONE, case_id_of, form_value, needs, parts, person
from gateway.web.render import not_found, plain

log = logging.getLogger("abuse_gateway.web")
ACTIONS = ("close", "reopen", "hold", "release", "assign", "note", "csam", "merge", "split", "reply", "state")


def _back(case_id: str, done: str) -> Response:
    return RedirectResponse(f"/cases/{case_id}?done={done}", status_code=303)


def _logged(request: Request, case_id: str, action: str, response: Response) -> Response:
    """One log line per action: who, what, which case, the answer (IDs and outcomes, never content)."""
    log.info("web: %s %s %s -> %d", person(request).name, action, case_id, response.status_code)
    return response


def _refused(text: str) -> Response:
    return plain(400, "Not done", text)


@needs(*EVERYONE)  # each action asks the viewing rule for itself: support may reply, nothing else
def act(request: Request) -> Response:
    response = _act(request)
    # Canonical ID and known action only: what the URL said is not logged.
    case_id = case_id_of(request, request.path_params.get("case_id", "")) or "-"
    action = request.path_params["action"] if request.path_params["action"] in ACTIONS else "?"
    return _logged(request, case_id, action, response)


def _act(request: Request) -> Response:
    action = request.path_params["action"]
    found = lookup(request)
    if found is None or action not in ACTIONS:
        return not_found()
    case_id, _view, seen = found
    who = person(request)
    desk = parts(request)
    store = desk.store
    if action == "csam":
        return _csam(request, case_id)
    if action == "reply":
        return _reply(request, case_id) if may_reply(who.role) else not_found()
    if not may_work(who.role):
        return not_found()
    from storage.casenotes import DeskWorkError
    from storage.casework import CaseWorkError

    try:
        if action in ("close", "reopen"):
            status = "closed" if action == "close" else "open"
            store.set_status(case_id, status, f"by {who.name}")
            return _back(case_id, status)
        if action in ("hold", "release"):
            store.set_hold(case_id, action == "hold", who.name)
            return _back(case_id, "hold" if action == "hold" else "released")
        if action == "assign":
            assignee = form_value(request, "assignee", 64).strip() or None
            store.desk.assign(case_id, assignee, who.name)
            return _back(case_id, "assigned")
        if action == "note":
            if seen is not Sight.CONTENT and seen is not Sight.REASON:
                return not_found()  # notes are content of the case: only for those who may read it
            store.desk.add_note(case_id, who.name, form_value(request, "body", 70_000))
            return _back(case_id, "note")
        if action == "merge":
            into = case_id_of(request, form_value(request, "into", 200))
            if into is None:
                return _refused("That is not a case ID.")
            result = desk.casework.merge(case_id, into, who.name)
            return _back(result.target, "merged")
        if action == "split":
            raw_index = form_value(request, "index", 10)
            if not raw_index.isdigit():
                return _refused("Name the message to split by its number.")
            result = desk.casework.split(case_id, int(raw_index), who.name)
            from gateway.reindex import reindex_case

            reindex_case(store, result.target)
            return _back(result.target, "split")
        if action == "state":
            return _state(request, case_id)
    except (CaseWorkError, DeskWorkError) as exc:
        return _refused(str(exc))
    return not_found()


def _reply(request: Request, case_id: str) -> Response:
    """The desk's answer to the reporter through the outbox (issue 21): a shipped or operator template, or
    the words typed here; never a quote of the report (reporter_desk refuses one on a CSAM case)."""
    from gateway.reporter_desk import DeskMailError, queue_reply
    from gateway.reporter_texts import TemplateError, available_templates

    desk = parts(request)
    template = form_value(request, "template", 60).strip() or None
    body = form_value(request, "text", 70_000)
    if template is not None and template not in available_templates(desk.config.reply.templates_dir):
        return _refused("There is no such reply template.")
    if template is None and not body.strip():
        return _refused("Write the reply, or choose a template.")
    try:
        queue_reply(
            desk.config,
            desk.store,
            case_id,
            actor=person(request).name,
            text=None if template else body.replace("\r\n", "\n"),
            template=template,
            to_participants=form_value(request, "to_participants", 5) == "yes",
        )
    except (DeskMailError, TemplateError) as exc:
        return _refused(str(exc))
    return _back(case_id, "reply")


def _state(request: Request, case_id: str) -> Response:
    """What the reporter's status page says (issue 21): only ever set by a person, audited."""
    from gateway.reporter_desk import DeskMailError, set_reporter_state

    desk = parts(request)
    try:
        set_reporter_state(
            desk.config,
            desk.store,
            case_id,
            form_value(request, "state", 20),
            actor=person(request).name,
            notify=form_value(request, "notify", 5) == "yes",
        )
    except DeskMailError as exc:
        return _refused(str(exc))
    return _back(case_id, "state")


def _csam(request: Request, case_id: str) -> Response:
    from storage.csam import CSAM, POSSIBLE, CsamError, clear_marks, mark

    who = person(request)
    kind = form_value(request, "kind", 20)
    if kind not in ("csam", "possible", "clear") or not may_mark(who.role, kind != "possible"):
        return not_found()
    reason = reason_text(form_value(request, "reason"))
    if reason is None:
        return _refused("State a reason: it is recorded with your name.")
    desk = parts(request)
    try:
        if kind == "clear":
            result = clear_marks(desk.store.engine, case_id, who.name, reason)
            return _back(result.case_id, "cleared")
        preserve = timedelta(days=desk.config.csam.preserve_days)
        result = mark(
            desk.store.engine, case_id, who.name, reason, preserve, CSAM if kind == "csam" else POSSIBLE
        )
        return _back(result.case_id, "csam" if kind == "csam" else "possible_csam")
    except CsamError as exc:
        return _refused(str(exc))


ROUTES = [Route("/cases/{case_id}/{action}", act, methods=["POST"])]
