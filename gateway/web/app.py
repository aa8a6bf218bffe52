"""The desk's ASGI app: routes, static files, the error pages, all inside SecurityHeaders.

Built by gateway/assembly.py (`build_web_app`), which hands it the store; nothing here opens an engine.
Errors never show a traceback or echo the path: 404 is the one not-found page, 405 and 500 plain pages.
"""

from __future__ import annotations

import logging
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from gateway.http_security import SecurityHeaders
from gateway.web import actions, admin, auth, case_pages, evidence, queue_pages
from gateway.web.gate import EVERYONE, DeskParts, needs
from gateway.web.render import STATIC, not_found, plain

log = logging.getLogger("abuse_gateway.web")


async def healthz(_request: Request) -> Response:
    return PlainTextResponse("ok")


async def _http_error(_request: Request, exc: Exception) -> Response:
    status = getattr(exc, "status_code", 500)
    if status == 404:
        return not_found()
    if status == 405:
        return plain(405, "Not allowed", "This address does not take that kind of request.")
    return plain(status, "Refused", "The desk cannot answer this request.")


async def _crash(_request: Request, exc: Exception) -> Response:
    log.error("web: %s in a request", type(exc).__name__, exc_info=exc)
    return plain(500, "Error", "The desk failed to answer; the error is in its log.")


ROUTES = [
    Route("/healthz", healthz, methods=["GET"]),
    Route("/login", auth.login_form, methods=["GET"]),
    Route("/login", auth.login, methods=["POST"]),
    Route("/logout", needs(*EVERYONE)(auth.logout), methods=["POST"]),
    *queue_pages.ROUTES,
    *case_pages.ROUTES,
    *evidence.ROUTES,
    *actions.ROUTES,
    *admin.ROUTES,
    Mount("/static", StaticFiles(directory=str(STATIC)), name="static"),
]


def create_app(parts: DeskParts) -> Any:
    app = Starlette(
        routes=ROUTES,
        exception_handlers={HTTPException: _http_error, Exception: _crash},
    )
    app.state.desk = parts
    return SecurityHeaders(app)
