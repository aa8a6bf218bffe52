"""The reporters' status page (issue 21): `/s/<token>` shows one case's ID, when it was received, how many
messages it holds and the state the desk set, with its date. Nothing else: no subject, text, address or
indicator ever reaches the template (the store's `status_view` does not return them to show).

It faces the Internet, so it is its own process on its own listener (`[status] listen`), neither the desk
nor the MX, and it is no oracle: an unknown, malformed or revoked token gets one generic page, the same
bytes and the same status code (404), so a guess learns nothing, not even whether a case ID exists. Each
client (an IPv4 address, an IPv6 /64) has an in-process token bucket (`[status] rate_per_minute`,
`rate_burst`); past it, 429. Several processes behind one address would each keep their own buckets.
No JavaScript, one same-origin stylesheet, autoescaped templates, and `SecurityHeaders` around all of it.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from gateway.config import Config
from gateway.http_security import SecurityHeaders, forwarded_client
from gateway.reporter_mail import when
from gateway.reporter_texts import LANGUAGES, texts
from parsers.address import client_key as client_key_of
from parsers.status_token import split_status_token, status_token_valid

_HERE = Path(__file__).resolve().parent
_MAX_BUCKETS = 50_000  # clients remembered; the least recently seen are forgotten first


class RateLimiter:
    """A token bucket per client network, in this process's memory."""

    def __init__(self, per_minute: int, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = per_minute / 60.0
        self.burst = float(burst)
        self.clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def allow(self, client: str) -> bool:
        now = self.clock()
        tokens, last = self._buckets.pop(client, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        allowed = tokens >= 1.0
        self._buckets[client] = (tokens - 1.0 if allowed else tokens, now)
        while len(self._buckets) > _MAX_BUCKETS:
            self._buckets.popitem(last=False)
        return allowed


def client_key(request: Request, trusted_proxies: Sequence[str]) -> str:
    """The client a rate limit counts (parsers.address.client_key: an IPv4 address, an IPv6 /64), read
    through a trusted proxy as the desk reads it (gateway/http_security.forwarded_client)."""
    peer = request.client.host if request.client else ""
    forwarded = request.headers.get("x-forwarded-for", "")
    return client_key_of(forwarded_client(peer, forwarded, tuple(trusted_proxies)))


def build_app(
    config: Config, status_view: Callable[[str], dict[str, Any] | None], keys: Sequence[bytes]
) -> Any:
    """The ASGI app; `status_view` is the store's, `keys` the reply-token keys (current first)."""
    env = Environment(
        loader=FileSystemLoader(str(_HERE / "templates")),
        autoescape=select_autoescape(default=True, default_for_string=True),
    )
    default = config.confirm.default_language if config.confirm.default_language in LANGUAGES else "en"
    templates_dir = config.reply.templates_dir
    # Rendered once: every refused token gets these very bytes.
    unknown = (
        env.get_template("unknown.html").render(lang=default, words=texts(default, templates_dir)).encode()
    )
    css = (_HERE / "static" / "status.css").read_bytes()
    limiter = RateLimiter(config.status.rate_per_minute, config.status.rate_burst)
    proxies = tuple(config.status.trusted_proxies)

    def generic() -> Response:
        return Response(unknown, status_code=404, media_type="text/html; charset=utf-8")

    def case_page(token: str) -> Response:
        parts = split_status_token(token)
        if parts is None:
            return generic()
        view = status_view(parts[0])
        if view is None or not status_token_valid(parts, view["generation"], view["recipients"], keys):
            return generic()
        lang = view.get("language") if view.get("language") in LANGUAGES else default
        words = texts(lang, templates_dir)
        html = env.get_template("case.html").render(
            lang=lang,
            words=words,
            case_id=view["case_id"],
            received=when(view["received_at"]),
            messages=int(view["messages"]),
            state=words.get(f"state_{view['state']}", view["state"]),
            state_at=when(view["state_at"]),
        )
        return Response(html, media_type="text/html; charset=utf-8")

    async def status(request: Request) -> Response:
        if not limiter.allow(client_key(request, proxies)):
            return PlainTextResponse("too many requests\n", status_code=429, headers={"Retry-After": "60"})
        path = request.url.path
        if path.startswith("/s/") and path.count("/") == 2:
            return case_page(path[3:])
        return generic()

    async def healthz(_request: Request) -> Response:
        return PlainTextResponse("ok\n")

    async def stylesheet(_request: Request) -> Response:
        return Response(css, media_type="text/css")

    app = Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/static/status.css", stylesheet),
            Route("/{rest:path}", status),
        ]
    )
    return SecurityHeaders(app)
