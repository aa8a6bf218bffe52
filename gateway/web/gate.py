"""The door of every desk route: who is asking, may their role be here, and is a POST's CSRF token theirs.

A route declares the roles it serves with `@needs(...)`. Not signed in: GET goes to /login, POST is 403.
A role the route does not serve gets the one 404 (render.not_found), the same bytes an unknown case gets,
so a URL tells nothing about what exists. Every POST is refused (403) unless its `csrf` field is the
session's token.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from gateway.config import Config
from gateway.web import csrf
from gateway.web.auth import SESSION_COOKIE, Person, SsoRefused, current_person, set_cookie
from gateway.web.render import forbidden, not_found

# Routes are plain functions: they read the store and may hash a password, so the gate runs them on
# Starlette's thread pool and the event loop keeps serving other staff meanwhile.
Handler = Callable[[Request], Response]
EVERYONE = ("support", "analyst", "csam", "admin")
READERS = ("analyst", "csam")


@dataclass(frozen=True, slots=True)
class DeskParts:
    """What the routes use, built by the composition root: the config, the store, merge/split."""

    config: Config
    store: Any  # storage.store.CaseStore
    casework: Any  # storage.casework.CaseWork


def parts(request: Request) -> DeskParts:
    return request.app.state.desk


def person(request: Request) -> Person:
    return request.state.user


def needs(*roles: str) -> Callable[[Handler], Handler]:
    def wrap(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        @functools.wraps(handler)
        async def guarded(request: Request) -> Response:
            try:
                who = await run_in_threadpool(current_person, request)
            except SsoRefused:
                return forbidden("This request named a user the desk does not accept.")
            if who is None:
                if request.method == "GET":
                    return RedirectResponse("/login", status_code=303)
                return forbidden()
            request.state.user = who
            if request.method == "POST":
                form = await request.form()
                if not csrf.matches(who.csrf, form):
                    return forbidden()
                request.state.form = form
            response = not_found() if who.role not in roles else await run_in_threadpool(handler, request)
            new_session = getattr(request.state, "new_session", None)
            if new_session:
                web = parts(request).config.web
                set_cookie(response, request, web, SESSION_COOKIE, new_session, int(web.session_ttl))
            return response

        return guarded

    return wrap


def form_value(request: Request, name: str, limit: int = 10_000) -> str:
    value = request.state.form.get(name)
    return value[:limit] if isinstance(value, str) else ""


def case_id_of(request: Request, value: str) -> str | None:
    """A case ID as a reporter quotes it (`abu 18hj on15`, `18HJ-0N15`), canonical, or None; tolerant
    exactly as the CLI is (parsers.case_ref.read_case_id)."""
    from parsers.case_ref import read_case_id

    return read_case_id(value, parts(request).config.intake.case_prefix)[0]
