"""Headers every HTTP response of ours carries, desk and status page alike (issues 20, 21).

A page of ours shows text a hostile sender wrote; escaping (gateway/escape) keeps it text, and these headers
are the second wall: even a template bug cannot make the browser run a script, load a remote resource, be
framed, or tell another origin where staff were. Pure ASGI, so it also covers error pages and static files.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# No script at all: the pages work without JavaScript. Styles and images only from our own static files.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)

SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"referrer-policy", b"no-referrer"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=(), interest-cohort=()"),
    # Case pages hold report content: no shared or disk cache keeps a copy.
    (b"cache-control", b"no-store"),
)


class SecurityHeaders:
    """Adds SECURITY_HEADERS to every response, replacing any the app set for the same names."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._names = {name for name, _ in SECURITY_HEADERS}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                kept = [(k, v) for k, v in message.get("headers", []) if k.lower() not in self._names]
                message["headers"] = kept + list(SECURITY_HEADERS)
            await send(message)

        await self.app(scope, receive, send_with_headers)


@functools.lru_cache(maxsize=16)
def proxy_networks(proxies: tuple[str, ...]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """`trusted_proxies` as networks (an address is its own /32 or /128), parsed once per setting; the
    config has validated each (gateway/config.py `_ip_networks`)."""
    return tuple(ipaddress.ip_network(item, strict=False) for item in proxies)


def is_trusted_proxy(peer: str | None, proxies: tuple[str, ...]) -> bool:
    """The TCP peer is one of the reverse proxies whose forwarded headers we believe."""
    if not peer or not proxies:
        return False
    try:
        address = ipaddress.ip_address(peer)
    except ValueError:
        return False
    return any(address in net for net in proxy_networks(proxies))


def forwarded_client(peer: str, forwarded_for: str, proxies: tuple[str, ...]) -> str:
    """Who is really asking, for throttles, rate limits and logs: the peer, or, when the peer is a trusted
    proxy, the nearest X-Forwarded-For hop that is not itself a trusted proxy (what a client wrote into the
    header stands to the left of what its proxy appended, so it is never reached). A proxy that writes junk
    gets the peer: what we know."""
    if not is_trusted_proxy(peer, proxies):
        return peer
    nets = proxy_networks(proxies)
    for hop in reversed([h.strip() for h in forwarded_for.split(",") if h.strip()]):
        try:
            address = ipaddress.ip_address(hop)
        except ValueError:
            return peer
        if not any(address in net for net in nets):
            return str(address)
    return peer
