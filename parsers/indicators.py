"""Observables the desk searches for, refanged and normalised.

Extraction uses the same scanner as escaping (`parsers.urlscan`), so the escaped text a person sees yields the
same indicators as the original. Values are normalised so one host has one spelling in the store: lower-case
scheme and host, IDN hosts as punycode (plus the Unicode spelling as a second indicator so either can be
typed), IPs in canonical form, default ports dropped, paths left as written (they are case-sensitive).
Hosts seen only inside another URL's path or query are not offered on their own: `/files/report.zip` is noise.
"""

from __future__ import annotations

import ipaddress
import re
from functools import lru_cache

import idna

from parsers import urlscan
from parsers.types import Indicator, IndicatorKind

_ASCII_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")
_DEFAULT_PORTS = {"http": "80", "https": "443", "ftp": "21", "ws": "80", "wss": "443"}
_SCRIPT_SCHEMES = ("data:", "javascript:", "vbscript:")
_QUERY_STRIP = "<>()[]\"'`,;"


def extract_indicators(text: str) -> list[Indicator]:
    """Every URL, host, IP and address in `text`, defanged or not; deduplicated, first appearance first."""
    seen: dict[Indicator, None] = {}
    for m in urlscan.candidate_chunks(text):
        for ind in chunk_indicators(m.group()):
            seen.setdefault(ind, None)
    return list(seen)


def chunk_indicators(chunk: str) -> tuple[Indicator, ...]:
    """The indicators of one chunk from `urlscan.candidate_chunks`, in order (duplicates possible)."""
    return tuple(
        ind
        for found in urlscan.scan_chunk(chunk).found
        if not found.in_path
        for ind in _expand(found.kind, found.text)
    )


def normalize_indicator(kind: IndicatorKind, value: str) -> Indicator | None:
    """The canonical (punycode) form of one observable, or None when it is not a valid one of that kind."""
    value = urlscan.refang(value.strip())
    if kind == "url":
        if value[:11].lower().startswith(_SCRIPT_SCHEMES) and "://" not in value[:12]:
            return Indicator("url", value)  # `javascript:`/`data:` have no host to normalise; kept as written
        return _norm_url(value)
    if kind == "domain":
        host = _norm_domain(value)
        return Indicator("domain", host) if host else None
    if kind == "ipv4":
        v4 = _norm_ipv4(value)
        return Indicator("ipv4", v4) if v4 else None
    if kind == "ipv6":
        v6 = _norm_ipv6(value)
        return Indicator("ipv6", v6) if v6 else None
    if kind == "email":
        return _norm_email(value)
    return None


def parse_indicator_query(value: str) -> Indicator | None:
    """What a desk user typed after `--indicator`: a URL, address, IP or domain, live or defanged.

    Unlike free text, a typed domain needs no public suffix (`intranet.corp` is a fine thing to search for);
    the user told us it is a host. Anything ambiguous (`bad.example/login` without a scheme) is rejected
    rather than guessed, so a search never silently matches something else.
    """
    v = urlscan.refang(value.strip()).strip(_QUERY_STRIP)
    if not v or any(c.isspace() for c in v):
        return None
    if "://" in v:
        return _norm_url(v)
    if v.lower().startswith("mailto:"):
        v = v[7:]
    if "@" in v:
        return _norm_email(v)
    if v4 := _norm_ipv4(v):
        return Indicator("ipv4", v4)
    if v6 := _norm_ipv6(v):
        return Indicator("ipv6", v6)
    if "/" in v or ":" in v:
        return None
    host = _norm_domain(v)
    return Indicator("domain", host) if host else None


def indicator_host(ind: Indicator) -> str | None:
    """The host a domain search should match (storage does `host = d OR host LIKE '%.' || d`)."""
    if ind.kind in ("ipv4", "ipv6", "domain"):
        return ind.value.lower()
    if ind.kind == "email":
        return ind.value.rpartition("@")[2].lower() or None
    parts = urlscan.split_url(ind.value)
    if parts is None:
        return None
    host = parts[2].lower()
    return host[1:-1] if host.startswith("[") else host


def _expand(kind: urlscan.FoundKind, text: str) -> tuple[Indicator, ...]:
    """The indicator, its host, and the Unicode spellings of IDN values. Cached for ordinary lengths: a report
    names the same hosts again and again, and normalising (IDNA, ipaddress) is the costly step."""
    if len(text) <= _CACHED_VALUE:
        return _expand_cached(kind, text)
    return _expand_value(kind, text)


def _expand_value(kind: urlscan.FoundKind, text: str) -> tuple[Indicator, ...]:
    primary = normalize_indicator(kind, text)
    if primary is None:
        return ()
    out = [primary, *_unicode_twin(primary)]
    if kind in ("url", "email"):
        host = indicator_host(primary)
        if host:
            host_kind: IndicatorKind = (
                "ipv4" if _norm_ipv4(host) else "ipv6" if _norm_ipv6(host) else "domain"
            )
            host_ind = Indicator(host_kind, host)
            out += [host_ind, *_unicode_twin(host_ind)]
    return tuple(out)


_CACHED_VALUE = 512
_expand_cached = lru_cache(maxsize=8192)(_expand_value)


def _unicode_twin(ind: Indicator) -> list[Indicator]:
    if "xn--" not in ind.value:
        return []
    host = indicator_host(ind)
    if not host or "xn--" not in host:
        return []
    uni = _to_unicode(host)
    if uni == host:
        return []
    if ind.kind == "domain":
        return [Indicator("domain", uni)]
    if ind.kind == "email":
        local = ind.value.rpartition("@")[0]
        return [Indicator("email", f"{local}@{uni}")]
    # url: swap the host only; it appears once, right after the scheme (and any userinfo)
    i = ind.value.find(host, ind.value.find("://") + 3)
    return [Indicator("url", ind.value[:i] + uni + ind.value[i + len(host) :])]


def _to_unicode(host: str) -> str:
    try:
        return idna.decode(host)
    except (idna.IDNAError, UnicodeError, ValueError):
        return host


def _label_to_ascii(label: str) -> str | None:
    if label.isascii():
        return label
    try:
        return idna.alabel(idna.uts46_remap(label, std3_rules=False, transitional=False)).decode("ascii")
    except (idna.IDNAError, UnicodeError, ValueError):
        try:
            # IDNA 2003 is laxer (e.g. some symbols); better a searchable value than none
            return label.encode("idna").decode("ascii")
        except UnicodeError:
            return None


def _norm_domain(value: str) -> str | None:
    """Lower-case punycode hostname, or None. Underscores are allowed: `_dmarc` names are real."""
    host = value.strip().rstrip(".").lower()
    if not host or len(host) > 253 or ".." in host:
        return None
    labels = []
    for label in host.split("."):
        a = _label_to_ascii(label)
        if a is None or not _ASCII_LABEL.fullmatch(a.lower()):
            return None
        labels.append(a.lower())
    if len(labels) < 2 or labels[-1].isdigit():
        return None
    out = ".".join(labels)
    return out if len(out) <= 253 else None


def _norm_ipv4(value: str) -> str | None:
    # ipaddress rejects leading zeros (ambiguous octal), which is what we want in a stored value
    try:
        return str(ipaddress.IPv4Address(value))
    except ValueError:
        return None


def _norm_ipv6(value: str) -> str | None:
    if value.startswith("[") and value.endswith("]"):
        value = value[1:-1]
    if ":" not in value:
        return None
    try:
        return ipaddress.IPv6Address(value).compressed
    except ValueError:
        return None


def _norm_email(value: str) -> Indicator | None:
    local, at, domain = value.rpartition("@")
    if not at or not local or any(c.isspace() or c in "@<>()[]," for c in local):
        return None
    host = _norm_domain(domain)
    return Indicator("email", f"{local.lower()}@{host}") if host else None


def _norm_url(value: str) -> Indicator | None:
    parts = urlscan.split_url(value)
    if parts is None:
        return None
    scheme, userinfo, host, port, rest = parts
    scheme = scheme.lower()
    if not scheme.isascii() or not scheme[:1].isalpha():
        return None
    if host.startswith("["):
        v6 = _norm_ipv6(host)
        if v6 is None:
            return None
        norm_host = f"[{v6}]"
    elif v4 := _norm_ipv4(host):
        norm_host = v4
    else:
        # a URL host may be one label (`http://intranet/`); only the label rules apply
        if "." in host:
            norm_host = _norm_domain(host) or ""
        else:
            label = _label_to_ascii(host.lower())
            norm_host = label.lower() if label and _ASCII_LABEL.fullmatch(label.lower()) else ""
        if not norm_host:
            return None
    if port and _DEFAULT_PORTS.get(scheme) == port.lstrip("0"):
        port = ""
    auth = f"{userinfo}@" if userinfo else ""
    return Indicator("url", f"{scheme}://{auth}{norm_host}{':' + port if port else ''}{rest}")
