"""The one DNS resolver of the authentication checks (issue 22): `[dns] nameservers`, bounded, counted.

Every query SPF (pyspf), DKIM (dkimpy) and DMARC make goes through a `Lookups` made here, so the checks of
one message share one deadline and one query count, ask only the configured servers (the tests' server on
127.0.0.1, never the host's), and tell a temporary failure (timeout, SERVFAIL, no server answering) from
an answer that there is nothing: the first is `temperror`, the second `none`. Each library's lookup
function is adapted here, so they cannot fall back to a resolver of their own.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import dns.exception
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.resolver

from gateway.config import DnsConfig, split_nameserver

# RFC 7208 §4.6.4 allows 10 lookups for the SPF terms plus the record itself and void lookups; DKIM asks
# one key per signature (capped by [auth] max_dkim_signatures), DMARC two at most. Past this the
# message's checks are temperror rather than a flood of queries from one hostile message.
MAX_QUERIES_PER_MESSAGE = 40


class DnsTemporary(Exception):
    """No usable answer now (timeout, SERVFAIL, every server down, budget spent): try again later."""


def make_resolver(config: DnsConfig) -> dns.resolver.Resolver:
    """Our servers when configured, else the system's (/etc/resolv.conf); no search list either way."""
    if config.nameservers:
        resolver = dns.resolver.Resolver(configure=False)
        pairs = [split_nameserver(item) for item in config.nameservers]
        resolver.nameservers = [host for host, _ in pairs]
        resolver.nameserver_ports = {host: port for host, port in pairs}
    else:
        try:
            resolver = dns.resolver.Resolver(configure=True)
        except dns.resolver.NoResolverConfiguration:  # no /etc/resolv.conf: every check is temperror
            resolver = dns.resolver.Resolver(configure=False)
        resolver.search = []
    resolver.timeout = config.timeout
    resolver.lifetime = config.timeout * 2
    resolver.use_search_by_default = False
    resolver.cache = None  # every check asks afresh; a hostile TTL cannot pin an answer
    return resolver


@dataclass(slots=True)
class Lookups:
    """The DNS view of one message's checks: a deadline, a count, and the adapters each library calls."""

    resolver: dns.resolver.Resolver
    deadline: float
    max_queries: int = MAX_QUERIES_PER_MESSAGE
    queries: int = 0
    temporary: list[str] = field(default_factory=list)  # the names that failed for now, for the log

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def query(self, name: str, rdtype: str) -> list[Any]:
        """The answer's records ([] for NXDOMAIN or no such type); DnsTemporary when there is none now."""
        left = self.remaining()
        if left <= 0.05 or self.queries >= self.max_queries:
            self.temporary.append(name)
            raise DnsTemporary("budget spent")
        self.queries += 1
        try:
            answer = self.resolver.resolve(
                dns.name.from_text(name.rstrip(".") + "."),
                rdtype,
                raise_on_no_answer=False,
                lifetime=min(left, self.resolver.lifetime),
                search=False,
            )
        except dns.resolver.NXDOMAIN:
            return []
        except (dns.resolver.NoNameservers, dns.exception.Timeout, dns.resolver.LifetimeTimeout) as exc:
            self.temporary.append(name)
            raise DnsTemporary(type(exc).__name__) from exc
        except (dns.exception.DNSException, ValueError, UnicodeError):
            return []  # a name that cannot be a DNS name (too long, bad label): nothing is there
        return list(answer.rrset) if answer.rrset is not None else []

    def txt(self, name: str) -> list[bytes]:
        return [b"".join(record.strings) for record in self.query(name, "TXT")]

    # ---- adapters ---------------------------------------------------------------------------------------

    def dkim_txt(self, name: bytes | str, timeout: float = 5) -> bytes | None:
        """dkimpy's `dnsfunc`: the key record's text, None when there is none. A temporary failure raises
        dkim.DnsTimeoutError, which dkimpy turns into a failed verification; `temporary` keeps the truth."""
        import dkim

        text = name.decode("ascii", "replace") if isinstance(name, bytes) else name
        try:
            records = self.txt(text)
        except DnsTemporary as exc:
            raise dkim.DnsTimeoutError(str(exc)) from exc
        return records[0] if records else None

    def spf_lookup(self, name: str, qtype: str, strict: bool = True, timeout: float = 20) -> list[Any]:
        """pyspf's `DNSLookup`: ((name, type), value) pairs as its own dnspython adapter returns them."""
        import spf

        try:
            records = self.query(name, qtype)
        except DnsTemporary as exc:
            raise spf.TempError(f"DNS {exc}") from exc
        out: list[Any] = []
        for record in records:
            if qtype in ("A", "AAAA"):
                out.append(((name, qtype), record.address))
            elif qtype == "MX":
                out.append(((name, qtype), (record.preference, record.exchange)))
            elif qtype == "PTR":
                out.append(((name, qtype), record.target.to_text(True)))
            elif qtype in ("TXT", "SPF"):
                out.append(((name, qtype), record.strings))
        return out


# pyspf calls a module-level `spf.DNSLookup`; it is pointed once at this dispatcher, which answers with the
# `Lookups` of the check running on the calling thread, and refuses (temperror) when there is none, so no
# pyspf query ever reaches a resolver we did not configure.
_current = threading.local()


def _spf_dispatch(name: str, qtype: str, strict: bool = True, timeout: float = 20) -> list[Any]:
    import spf

    lookups: Lookups | None = getattr(_current, "lookups", None)
    if lookups is None:
        raise spf.TempError("DNS no resolver for this thread")
    return lookups.spf_lookup(name, qtype, strict, timeout)


def with_spf_lookups(lookups: Lookups, run: Callable[[], Any]) -> Any:
    import spf

    spf.DNSLookup = _spf_dispatch
    _current.lookups = lookups
    try:
        return run()
    finally:
        _current.lookups = None
