"""The admin's pages: the desk's users (add, role, disable, enable), retention, the audit trail.

The same storage calls as `abuse-gateway users …` (storage/users.py, passwords through
gateway/passwords.py), with the signed-in admin as the audit row's actor. Retention is shown, not run:
what `purge --older-than DAYS` would remove and what it keeps and why; removing evidence stays a command a
person types at a terminal (`abuse-gateway purge`).
"""

from __future__ import annotations

from datetime import timedelta

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from gateway.passwords import hash_password, password_problem
from gateway.viewing import ROLES
from gateway.web.gate import form_value, needs, parts, person
from gateway.web.render import page, plain

DONE = {
    "added": "User added.",
    "role": "Role changed.",
    "disabled": "User disabled.",
    "enabled": "User enabled.",
}


def _refused(text: str) -> Response:
    return plain(400, "Not done", text)


@needs("admin")
def users_page(request: Request) -> Response:
    return page(
        request,
        "admin.html",
        users=parts(request).store.users.list(),
        roles=ROLES,
        done=DONE.get(request.query_params.get("done", "")),
    )


@needs("admin")
def add_user(request: Request) -> Response:
    from storage.users import UserError

    name = form_value(request, "name", 64).strip()
    role = form_value(request, "role", 16)
    password = form_value(request, "password", 1024)
    sso_only = form_value(request, "sso_only", 3) == "yes"  # only the SSO proxy can log this user in
    problem = None if sso_only else password_problem(password)
    if problem:
        return _refused(problem.capitalize() + ".")
    password_hash = None if sso_only else hash_password(password)
    try:
        parts(request).store.users.add(name, role, password_hash, actor=person(request).name)
    except UserError as exc:
        return _refused(str(exc))
    return RedirectResponse("/admin?done=added", status_code=303)


@needs("admin")
def change_user(request: Request) -> Response:
    from storage.users import UserError

    name, change = request.path_params["name"], request.path_params["change"]
    users = parts(request).store.users
    actor = person(request).name
    try:
        if change == "role":
            users.set_role(name, form_value(request, "role", 16), actor=actor)
        elif change == "disable":
            if name == actor:
                return _refused("You cannot disable yourself; ask another admin.")
            users.disable(name, actor=actor)
        elif change == "enable":
            users.enable(name, actor=actor)
        else:
            return plain(404, "Not found", "There is nothing at this address.")
    except UserError as exc:
        return _refused(str(exc))
    done = {"role": "role", "disable": "disabled", "enable": "enabled"}[change]
    return RedirectResponse(f"/admin?done={done}", status_code=303)


@needs("admin")
def audit_page(request: Request) -> Response:
    return page(request, "audit.html", rows=parts(request).store.list_audit(limit=500))


@needs("admin")
def retention_page(request: Request) -> Response:
    from storage.csam import purge_survivors

    desk = parts(request)
    raw_days = request.query_params.get("days", "")
    days = int(raw_days) if raw_days.isdigit() and 0 < int(raw_days) < 100_000 else None
    would: list[str] = []
    kept: list[tuple[str, str]] = []
    if days is not None:
        older = timedelta(days=days)
        would = desk.store.purge(older, person(request).name, dry_run=True)
        kept = purge_survivors(desk.store.engine, older)
    return page(
        request,
        "retention.html",
        days=days,
        would=would,
        kept=kept,
        preserve_days=desk.config.csam.preserve_days,
    )


ROUTES = [
    Route("/admin", users_page, methods=["GET"]),
    Route("/admin/users", add_user, methods=["POST"]),
    Route("/admin/users/{name}/{change}", change_user, methods=["POST"]),
    Route("/admin/audit", audit_page, methods=["GET"]),
    Route("/admin/retention", retention_page, methods=["GET"]),
]
