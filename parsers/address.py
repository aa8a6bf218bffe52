"""Envelope addresses judged before anything is sent to them: pure checks, no I/O.

A confirmation goes to the envelope sender, so that address ends up in a header of mail we send. Control
and line-break characters in it broke the worker (issue 15, point 1); a quoted local part put attacker
text (`"https://evil.example/login"@victim.example`) into a victim's `To:` (point 7).
"""

from __future__ import annotations

import re
import unicodedata

# C0, DEL, C1 and the Unicode line/paragraph separators: `str.splitlines()` (what email's header code uses)
# breaks on FS/GS/RS, NEL, U+2028 and U+2029 as well as CR and LF.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
# RFC 5322 §3.2.3 dot-atom-text, ASCII only: no quoted strings, no comments, no spaces.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
_DOT_ATOM = re.compile(rf"{_ATEXT}+(?:\.{_ATEXT}+)*")
_HOSTNAME = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z0-9-]{2,63}")
MAX_LOCAL = 64  # RFC 5321 §4.5.3.1.1
MAX_DOMAIN = 255  # RFC 5321 §4.5.3.1.2
MAX_MESSAGE_ID = 250  # fits a header line under RFC 5322's 998 with room; real IDs are far shorter


def has_control(address: str) -> bool:
    """Control, line-break or format (bidi, zero-width) characters: never part of a usable address."""
    return bool(_CONTROL.search(address)) or any(unicodedata.category(c) == "Cf" for c in address)


def is_plain_mailbox(address: str) -> bool:
    """`dot-atom@hostname`, ASCII, within RFC 5321's lengths: the only kind we send a confirmation to."""
    local, at, domain = address.rpartition("@")
    return (
        bool(at)
        and len(local) <= MAX_LOCAL
        and len(domain) <= MAX_DOMAIN
        and _DOT_ATOM.fullmatch(local) is not None
        and _HOSTNAME.fullmatch(domain) is not None
    )


def is_plain_message_id(message_id: str) -> bool:
    """`id-left@id-right`, both dot-atom-text (RFC 5322 §3.6.4 without its obsolete and quoted forms), of
    bounded length: only such a foreign Message-ID may be copied into In-Reply-To/References."""
    left, at, right = message_id.partition("@")
    return (
        bool(at)
        and len(message_id) <= MAX_MESSAGE_ID
        and _DOT_ATOM.fullmatch(left) is not None
        and _DOT_ATOM.fullmatch(right) is not None
    )


# Mail providers that deliver `first.last` and `firstlast` to one mailbox: dots are removed for the cap.
DOTLESS_DOMAINS = frozenset({"gmail.com", "googlemail.com"})


def mailbox_key(address: str) -> str:
    """The mailbox an address reaches, for the confirmation caps: lower case, the plus-tag dropped and, for
    providers that ignore them, the dots, so `v.ictim+1@gmail.com` and `victim+2@gmail.com` count once."""
    local, _, domain = address.lower().rpartition("@")
    local = local.partition("+")[0]
    if domain in DOTLESS_DOMAINS:
        local = local.replace(".", "")
        domain = "gmail.com"
    return f"{local}@{domain}"


def registrable_domain(domain: str) -> str:
    """The domain as registered (PSL, tldextract's bundled snapshot, never fetched): `a.example.co.uk` and
    `b.example.co.uk` share one per-domain cap."""
    from parsers.urlscan import _EXTRACT  # one extractor for the process (the snapshot loads once)

    domain = domain.lower().rstrip(".")
    return _EXTRACT(domain).top_domain_under_public_suffix or domain


def client_network(client_addr: str | None, v4_prefix: int = 24, v6_prefix: int = 64) -> str:
    """The sending network (an IPv4 /24, an IPv6 /64 by default); "local" for mail that came without SMTP
    (`ingest`) or from an address we cannot read."""
    import ipaddress

    try:
        ip = ipaddress.ip_address((client_addr or "").strip("[]"))
    except ValueError:
        return "local"
    prefix = v4_prefix if ip.version == 4 else v6_prefix
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))


def client_key(ip: str) -> str:
    """The unit per-client limits count: an IPv4 address, or an IPv6 /64 (one subscriber's or one
    server's network: a single host can take any of its 2**64 addresses, so counting addresses limits
    nothing; issue 15). An IPv4-mapped IPv6 address counts as its IPv4 address."""
    import ipaddress

    try:
        address = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return ip
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)
