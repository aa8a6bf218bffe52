"""The sender's IP from the Received chain (RFC 5321 §4.4), with the stdlib only.

mail-parser is not called on this path: it costs ~0.1 ms per Received header for its sender-IP scan, and
this walk does the same job with a few regular expressions.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable

_MAX_RECEIVED_SCAN = 4096  # a genuine Received header is a few hundred characters
# Received (RFC 5321 §4.4): scan tokens that change nesting or end the from-clause.
# Received (RFC 5321 §4.4): scan tokens that change nesting or end the from-clause.
_RECEIVED_FROM_RE = re.compile(r"\s*from\s+", re.IGNORECASE)
_RECEIVED_TOKEN_RE = re.compile(r"\\.|[()\[\]]|(?<![\w.-])by(?=\s)|;", re.IGNORECASE)
_HELO_ARG_RE = re.compile(r"\be?helo[=\s][^)\]]*", re.IGNORECASE)
_GROUPED_IP_RE = re.compile(r"[(\[]\s*(?:IPv6:)?([0-9A-Fa-f:.]{2,45})\s*[\])]", re.IGNORECASE)
_BRACKET_IP_RE = re.compile(r"^\[\s*(?:IPv6:)?([0-9A-Fa-f:.]{2,45})\s*\]$", re.IGNORECASE)


def sender_ip(received: Iterable[str]) -> str | None:
    """The client IP of the newest hop that came from a public address, walking newest first.

    Hops from private addresses are our own relays; every header below the first public hop was written
    by machines the sender controls, so the walk stops there.
    """
    for header in received:
        candidate = _received_client_ip(header)
        if candidate is not None and _is_public(candidate):
            return candidate
    return None


def _received_client_ip(header: str) -> str | None:
    """The IP the receiving MTA recorded in the from-clause's TCP-info (RFC 5321 §4.4), if any.

    The first token is the client's HELO argument and a `helo=` comment repeats it: both are chosen by
    the sender, so neither is trusted, except for Exim's `from [ip] (helo=name)` where the MTA moved the
    HELO into the comment and wrote the address itself.
    """
    text = header[:_MAX_RECEIVED_SCAN]
    start = _RECEIVED_FROM_RE.match(text)
    if start is None:
        return None
    clause = text[start.end() : _from_clause_end(text, start.end())].strip()
    helo, _, rest = clause.partition(" ")
    candidates = _GROUPED_IP_RE.findall(_HELO_ARG_RE.sub("", rest))
    if candidates:
        return candidates[-1]
    literal = _BRACKET_IP_RE.match(helo)
    return literal.group(1) if literal and _HELO_ARG_RE.search(rest) else None


def _from_clause_end(text: str, pos: int) -> int:
    """Where the from-clause ends: the first `by` or `;` outside comments and brackets."""
    depth = 0
    for token in _RECEIVED_TOKEN_RE.finditer(text, pos):
        char = token.group()
        if char in "([":
            depth += 1
        elif char in ")]":
            depth = max(0, depth - 1)
        elif depth == 0 and not char.startswith("\\"):
            return token.start()
    return len(text)


def _is_public(candidate: str) -> bool:
    try:
        ip = ipaddress.ip_address(candidate)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global
