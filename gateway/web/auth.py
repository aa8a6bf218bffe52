"""Who is asking: the session cookie, or the SSO proxy's header; login, logout, the login throttle.

- A session is a random token in an HttpOnly, SameSite=Strict, Path=/ cookie; the store keeps its SHA-256
  (storage/users.py). `Secure` follows [web] secure_cookies: "auto" sets it when the request came over
  https, directly or from a trusted proxy that says `X-Forwarded-Proto: https`.
- Behind an SSO proxy, [web] trusted_user_header names the user, believed only when the peer address is
  in trusted_proxies; the user must exist and be enabled. The same header from any other peer is refused
  (403, logged): someone is trying to name themselves. An SSO user also gets a session (for its CSRF
  token), bound to the name the header gives on every request.
- Failed logins count per typed name and per client address (storage rows, so every desk process shares
  them); past [web] login_max_failures within login_window the login is refused without checking the
  password. The log line names the client and the typed name escaped and cut, never the password.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from gateway.config import WebConfig
from gateway.http_security import forwarded_client, is_trusted_proxy
from gateway.passwords import hash_password, needs_rehash, verify_password
from gateway.web import csrf
from gateway.web.render import forbidden, page
from parsers.display import terminal_safe

log = logging.getLogger("abuse_gateway.web")
SESSION_COOKIE = "desk_session"


@dataclass(frozen=True, slots=True)
class Person:
    name: str
    role: str
    csrf: str
    via: str  # "password" or "sso"


class SsoRefused(Exception):
    """The user header came from a peer that is not a trusted proxy, or names no enabled user."""


def peer_trusted(request: Request, web: WebConfig) -> bool:
    return is_trusted_proxy(request.client.host if request.client else None, web.trusted_proxies)


def client_address(request: Request, web: WebConfig) -> str:
    """The client as the throttle and the log see it (gateway/http_security.forwarded_client)."""
    peer = request.client.host if request.client else "-"
    return forwarded_client(peer, request.headers.get("x-forwarded-for", ""), web.trusted_proxies)


def is_https(request: Request, web: WebConfig) -> bool:
    if request.url.scheme == "https":
        return True
    proto = request.headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
    return proto == "https" and peer_trusted(request, web)


def secure_cookie(request: Request, web: WebConfig) -> bool:
    return is_https(request, web) if web.secure_cookies == "auto" else bool(web.secure_cookies)


def set_cookie(response: Response, request: Request, web: WebConfig, name: str, value: str, age: int) -> None:
    response.set_cookie(
        name,
        value,
        max_age=age,
        path="/",
        httponly=True,
        samesite="strict",
        secure=secure_cookie(request, web),
    )


def _shown_name(name: str) -> str:
    """A typed user name for a log line: visible escapes for anything a terminal acts on, 64 characters."""
    return terminal_safe(name[:64]) + ("…" if len(name) > 64 else "")


def current_person(request: Request) -> Person | None:
    """The signed-in person, or None. Raises SsoRefused for a user header from an untrusted peer."""
    desk = request.app.state.desk
    web: WebConfig = desk.config.web
    header = web.trusted_user_header
    token = request.cookies.get(SESSION_COOKIE, "")
    if header and header.lower() in request.headers:
        if not peer_trusted(request, web):
            peer = request.client.host if request.client else "-"
            log.warning("web: %s header from untrusted peer %s refused", header, peer)
            raise SsoRefused
        return _sso_person(request, request.headers[header.lower()], token)
    found = desk.store.users.session(token) if token else None
    if found is None:
        return None
    return Person(found.name, found.role, found.csrf_token, "password")


def _sso_person(request: Request, name: str, token: str) -> Person:
    desk = request.app.state.desk
    user = desk.store.users.get(name.strip())
    if user is None or user.disabled:
        log.warning("web: SSO names unknown or disabled user '%s'", _shown_name(name))
        raise SsoRefused
    found = desk.store.users.session(token) if token else None
    if found is not None and found.name == user.name:
        return Person(found.name, found.role, found.csrf_token, "sso")
    new_token, csrf_token = desk.store.users.create_session(user.name, int(desk.config.web.session_ttl))
    request.state.new_session = new_token  # set as a cookie on the way out (app.py)
    return Person(user.name, user.role, csrf_token, "sso")


# ---- the routes ------------------------------------------------------------------------------------------


async def login_form(request: Request) -> Response:
    token = request.cookies.get(SESSION_COOKIE, "")
    users = request.app.state.desk.store.users
    if token and await run_in_threadpool(users.session, token) is not None:
        return RedirectResponse("/", status_code=303)  # already signed in
    return _login_page(request)


def _login_page(request: Request, problem: str | None = None, status: int = 200) -> Response:
    token = csrf.new_token()
    response = page(request, "login.html", status, csrf=token, problem=problem)
    set_cookie(response, request, request.app.state.desk.config.web, csrf.LOGIN_COOKIE, token, 3600)
    return response


async def login(request: Request) -> Response:
    form = await request.form()
    if not csrf.matches(request.cookies.get(csrf.LOGIN_COOKIE), form):
        return forbidden()
    name = str(form.get("username") or "")[:200]
    password = str(form.get("password") or "")
    return await run_in_threadpool(_login, request, name, password)  # argon2 and the store: off the loop


def _login(request: Request, name: str, password: str) -> Response:
    desk = request.app.state.desk
    web: WebConfig = desk.config.web
    client = client_address(request, web)
    since = datetime.now(UTC) - timedelta(seconds=web.login_window)
    users = desk.store.users
    if users.login_failures_since(name, client, since) >= web.login_max_failures:
        log.warning("web: login throttled for user '%s' from %s", _shown_name(name), client)
        return _login_page(request, "Too many failed logins: wait a few minutes and try again.", 429)
    user = users.get(name) if name else None
    ok = verify_password(user.password_hash if user else None, password[:1024])
    if not ok or user is None or user.disabled:
        users.record_login_failure(name, client)
        log.warning("web: failed login for user '%s' from %s", _shown_name(name), client)
        return _login_page(request, "Wrong user name or password.", 401)
    users.clear_login_failures(user.name)
    if user.password_hash and needs_rehash(user.password_hash):  # older parameters than today's policy
        users.rehash(user.name, hash_password(password[:1024]))
    token, _csrf = users.create_session(user.name, int(web.session_ttl))
    log.info("web: %s logged in from %s", user.name, client)
    response = RedirectResponse("/", status_code=303)
    set_cookie(response, request, web, SESSION_COOKIE, token, int(web.session_ttl))
    response.delete_cookie(csrf.LOGIN_COOKIE, path="/")
    return response


def logout(request: Request) -> Response:
    """Behind the gate (app.py wraps it): signed in, CSRF checked."""
    token = request.cookies.get(SESSION_COOKIE, "")
    if token:
        request.app.state.desk.store.users.end_session(token)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response
