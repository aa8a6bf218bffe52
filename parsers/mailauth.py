"""Mail authentication, the pure half (issue 22): DMARC records and alignment (RFC 7489), the
Authentication-Results header (RFC 8601) read and written. No DNS here: gateway/mailauth.py asks and
passes the text in.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# RFC 8601 §2.7: the results each method may report.
SPF_RESULTS = ("pass", "fail", "softfail", "neutral", "none", "temperror", "permerror")
DKIM_RESULTS = ("pass", "fail", "neutral", "policy", "none", "temperror", "permerror")
DMARC_RESULTS = ("pass", "fail", "none", "temperror", "permerror")


@dataclass(frozen=True, slots=True)
class DmarcPolicy:
    p: str = "none"  # none | quarantine | reject
    sp: str | None = None  # for subdomains of the organizational domain
    adkim: str = "r"  # r relaxed | s strict
    aspf: str = "r"
    pct: int = 100


def parse_dmarc(text: str) -> DmarcPolicy | None:
    """A `_dmarc` TXT record, or None when it is not one (RFC 7489 §6.3: v=DMARC1 first, p= required;
    an unknown p= with a valid rua is treated as none, anything else malformed is no record)."""
    tags: dict[str, str] = {}
    for part in text.split(";"):
        key, eq, value = part.strip().partition("=")
        if eq:
            tags.setdefault(key.strip().lower(), value.strip())
    if not text.strip().lower().startswith("v=dmarc1") or tags.get("v", "").upper() != "DMARC1":
        return None
    p = tags.get("p", "").lower()
    if p not in ("none", "quarantine", "reject"):
        if "rua" not in tags:
            return None
        p = "none"
    sp = tags.get("sp", "").lower()
    pct = tags.get("pct", "100")
    return DmarcPolicy(
        p=p,
        sp=sp if sp in ("none", "quarantine", "reject") else None,
        adkim="s" if tags.get("adkim", "r").lower() == "s" else "r",
        aspf="s" if tags.get("aspf", "r").lower() == "s" else "r",
        pct=int(pct) if pct.isdigit() and int(pct) <= 100 else 100,
    )


def organizational_domain(domain: str) -> str:
    """RFC 7489 §3.2 by the Public Suffix List snapshot bundled with tldextract (never fetched), its private
    section included: `eu.org` or `github.io` hand out names to strangers, so `a.eu.org` and `b.eu.org` are
    two organizations, and one's signature must not align with the other's address (a forged sender
    confirmed). The rate caps (`registrable_domain`) keep the ICANN-only view: there, coarser is safer."""
    from parsers.urlscan import _EXTRACT

    domain = domain.lower().rstrip(".")
    return _EXTRACT(domain, include_psl_private_domains=True).top_domain_under_public_suffix or domain


def aligned(domain: str | None, author_domain: str, mode: str = "r") -> bool:
    """Identifier alignment (RFC 7489 §3.1): the same name (strict) or the same organizational domain."""
    if not domain:
        return False
    a, b = domain.lower().rstrip("."), author_domain.lower().rstrip(".")
    if mode == "s":
        return a == b
    return a == b or organizational_domain(a) == organizational_domain(b)


def address_domain(address: str | None) -> str | None:
    """The domain of `local@domain`, lower case; None for the null sender or no address."""
    if not address or "@" not in address:
        return None
    domain = address.rpartition("@")[2].strip().strip(">").lower().rstrip(".")
    return domain or None


# ---- Authentication-Results (RFC 8601) -------------------------------------------------------------------

_COMMENT = re.compile(r"\([^()]*\)")
_RESULT = re.compile(r"^\s*([A-Za-z0-9_.-]+)\s*=\s*([A-Za-z0-9_-]+)(.*)$", re.S)
_PROPERTY = re.compile(r"([A-Za-z0-9_-]+\.[A-Za-z0-9_.-]+)\s*=\s*(\"[^\"]*\"|[^\s;]+)")


@dataclass(frozen=True, slots=True)
class ResultEntry:
    method: str  # spf | dkim | dmarc | …
    result: str
    properties: tuple[tuple[str, str], ...] = ()  # (ptype.property, value), e.g. ("header.d", "x.org")

    def prop(self, name: str) -> str | None:
        return next((v for k, v in self.properties if k == name), None)


def parse_authentication_results(value: str) -> tuple[str, tuple[ResultEntry, ...]]:
    """(authserv-id, results) of one header value; the id is "" when there is none. Comments are dropped;
    a part that is not `method=result` is skipped, never raised on."""
    text = value
    for _ in range(5):  # nested comments, a few levels deep
        text = _COMMENT.sub(" ", text)
    parts = text.split(";")
    authserv = parts[0].strip().split()[0].lower() if parts and parts[0].strip() else ""
    entries = []
    for part in parts[1:]:
        match = _RESULT.match(part)
        if match is None:
            continue
        method, result, rest = match.group(1).lower(), match.group(2).lower(), match.group(3)
        props = tuple((k.lower(), v.strip('"')) for k, v in _PROPERTY.findall(rest))
        entries.append(ResultEntry(method, result, props))
    return authserv, tuple(entries)


_UNSAFE = re.compile(r"[^A-Za-z0-9@._+-]")


def _value(text: str) -> str:
    """A property value as we write it: nothing of a sender's that could end the field or the header."""
    return _UNSAFE.sub("_", text)[:255]


def format_results(authserv_id: str, entries: tuple[ResultEntry, ...], note: str | None = None) -> str:
    """`mx.example.org; spf=pass smtp.mailfrom=example.com; dkim=pass header.d=…` (RFC 8601 §2.2)."""
    parts = [_value(authserv_id)]
    for entry in entries:
        props = "".join(f" {name}={_value(value)}" for name, value in entry.properties if value)
        parts.append(f"{entry.method}={entry.result}{props}")
    line = "; ".join(parts) if entries else f"{parts[0]}; none"
    return f"{line} ({re.sub(r'[^A-Za-z0-9@._+: -]', '_', note)[:200]})" if note else line
