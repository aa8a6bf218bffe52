"""Mail in, authenticated (issue 22): SPF (RFC 7208), DKIM (RFC 6376, RFC 8463) and DMARC alignment
(RFC 7489) of each inbound message, in intake, never on the SMTP path.

Why here: the listener answers 250 once the raw bytes are committed (ARCHITECTURE.md), so no DNS wait
may sit before that answer. The intake starts a message's SPF and DKIM checks on a small thread pool as
soon as it claims the entry (they need only the raw bytes and the envelope), while the preparation child
parses; DMARC needs the parsed From: and finishes when the prepared message comes back. Every query goes
through gateway/resolver.py: our nameservers, one deadline per message (`[auth] time_budget`), a cap on
queries, SPF's own 10-lookup limit, at most `[auth] max_dkim_signatures` signatures.

Nothing here can stop a message from being stored: any failure (DNS down, a crash in a library on hostile
bytes) is a `temperror` result, and the store keeps the message as always.

An `Authentication-Results` header in the message is the sender's text unless its authserv-id is one of
`[auth] trusted_authserv_ids` (the MTA in front of us, which removes forged ones: RFC 8601 §5); only then
is it used as the result, recorded as taken from that MTA.
"""

from __future__ import annotations

import base64
import dataclasses
import logging
import math
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass

import dns.resolver

from gateway.config import Config
from gateway.resolver import DnsTemporary, Lookups, make_resolver, with_spf_lookups
from parsers.mailauth import (
    DmarcPolicy,
    ResultEntry,
    address_domain,
    aligned,
    format_results,
    organizational_domain,
    parse_authentication_results,
    parse_dmarc,
)
from storage.records import Authentication, ClaimedEntry, PreparedMessage

log = logging.getLogger("abuse_gateway.mailauth")


class KeyTooCostly(Exception):
    """A DKIM key whose verification would cost far more than any real key's: refused, not computed."""


@dataclass(frozen=True, slots=True)
class _Found:
    """SPF and DKIM of one message, before DMARC (which needs the parsed From:)."""

    spf: ResultEntry
    dkim: tuple[ResultEntry, ...]
    source: str = "checked"
    dmarc: ResultEntry | None = None  # from a trusted upstream header only


class Checker:
    """The checks for one configuration; safe to call from several threads at once."""

    def __init__(self, config: Config) -> None:
        self.authserv_id = config.auth.authserv_id or config.smtp.hostname
        self.trusted = {name.lower() for name in config.auth.trusted_authserv_ids}
        self.budget = config.auth.time_budget
        self.max_signatures = config.auth.max_dkim_signatures
        self.resolver: dns.resolver.Resolver = make_resolver(config.dns)

    def lookups(self, deadline: float | None = None) -> Lookups:
        return Lookups(self.resolver, deadline if deadline is not None else time.monotonic() + self.budget)

    # ---- the whole check, in one call (the outbox's re-check, the benchmark) -------------------------------

    def check(
        self,
        raw: bytes,
        mail_from: str | None,
        client_addr: str | None,
        helo: str | None,
        from_domain: str | None,
        authentication_results: Sequence[str] = (),
    ) -> Authentication:
        lookups = self.lookups()
        found = self.spf_and_dkim(raw, mail_from, client_addr, helo, authentication_results, lookups)
        return self.finish(found, mail_from, from_domain, lookups, len(author_domains(raw)) > 1)

    # ---- stage one: envelope and signatures ----------------------------------------------------------------

    def spf_and_dkim(
        self,
        raw: bytes,
        mail_from: str | None,
        client_addr: str | None,
        helo: str | None,
        authentication_results: Sequence[str],
        lookups: Lookups,
    ) -> _Found:
        trusted = self._trusted(authentication_results)
        if trusted is not None:
            return trusted
        spf_entry = self._spf(mail_from, client_addr, helo, lookups)
        return _Found(spf_entry, self._dkim(raw, lookups))

    def _trusted(self, headers: Sequence[str]) -> _Found | None:
        """The first Authentication-Results of an authserv-id we trust; never one naming us (a sender
        can write our name as easily as any other)."""
        if not self.trusted:
            return None
        for value in headers:
            authserv, entries = parse_authentication_results(value)
            if authserv not in self.trusted or authserv == self.authserv_id.lower():
                continue
            spf = next((e for e in entries if e.method == "spf"), ResultEntry("spf", "none"))
            dkim = tuple(e for e in entries if e.method == "dkim")
            dmarc = next((e for e in entries if e.method == "dmarc"), None)
            return _Found(spf, dkim, source=f"trusted:{authserv}", dmarc=dmarc)
        return None

    def _spf(
        self, mail_from: str | None, client_addr: str | None, helo: str | None, lookups: Lookups
    ) -> ResultEntry:
        import spf

        ip = (client_addr or "").strip("[]")
        sender = (mail_from or "").strip().strip("<>")
        identity = ("smtp.mailfrom", sender) if sender else ("smtp.helo", helo or "")
        if not ip or not (sender or helo):
            return ResultEntry("spf", "none", (identity,))  # imported without SMTP: no client to check
        query = None
        try:
            query = spf.query(i=ip, s=sender, h=helo or "unknown", querytime=max(lookups.remaining(), 0.1))
            result = with_spf_lookups(lookups, query.check)[0]
        except Exception as exc:  # pyspf on hostile input: a bad address, an IP it cannot read
            log.info("spf check error: error=%s", type(exc).__name__)
            result = "permerror" if isinstance(exc, ValueError) else "temperror"
        if result not in ("pass", "fail", "softfail", "neutral", "none", "temperror", "permerror"):
            result = "permerror"
        domain = address_domain(sender) if sender else helo
        props = ((identity[0], domain or ""),)
        if result == "pass" and _passes_anyone(getattr(query, "mechanism", None)):
            props += (("policy.spf", "all"),)  # SPF's answer as it is; it vouches for nobody (below)
        return ResultEntry("spf", result, props)

    def _dkim(self, raw: bytes, lookups: Lookups) -> tuple[ResultEntry, ...]:
        import dkim

        try:
            verifier = dkim.DKIM(raw, minkey=1024, timeout=max(1, int(lookups.remaining())))
            count = sum(1 for name, _ in verifier.headers if name.lower() == b"dkim-signature")
        except Exception as exc:
            log.info("dkim parse error: error=%s", type(exc).__name__)
            signed = b"dkim-signature" in raw[:65536].lower()
            return (ResultEntry("dkim", "permerror"),) if signed else ()
        results = []
        for index in range(min(count, self.max_signatures)):
            before = len(lookups.temporary)
            domain = selector = ""
            verifier.domain = verifier.selector = None
            try:
                ok = verifier.verify(
                    idx=index, dnsfunc=lambda name, timeout=5: _bounded_key(lookups.dkim_txt(name))
                )
                result = "pass" if ok else "temperror" if len(lookups.temporary) > before else "fail"
            except KeyTooCostly:
                result = "permerror"
            except dkim.ValidationError:  # the body hash or the signature does not match
                result = "fail"
            except dkim.DKIMException:  # a signature or key we cannot read
                result = "permerror"
            except Exception as exc:
                log.info("dkim verify error: error=%s", type(exc).__name__)
                result = "temperror" if isinstance(exc, DnsTemporary) else "permerror"
            if isinstance(verifier.domain, bytes):
                domain = verifier.domain.decode("ascii", "replace")
            if isinstance(verifier.selector, bytes):
                selector = verifier.selector.decode("ascii", "replace")
            props = (("header.d", domain.lower()), ("header.s", selector))
            results.append(ResultEntry("dkim", result, props))
        return tuple(results)

    # ---- stage two: DMARC and the sender verdict ----------------------------------------------------------

    def finish(
        self,
        found: _Found,
        mail_from: str | None,
        from_domain: str | None,
        lookups: Lookups,
        several_authors: bool = False,
    ) -> Authentication:
        if several_authors:  # RFC 7489 §6.6.1: one author domain or no verdict (never the first one's)
            dmarc = ResultEntry("dmarc", "permerror", (("header.from", "several"),))
        else:
            dmarc = found.dmarc or self._dmarc(found, from_domain, lookups)
        entries = (found.spf, *(found.dkim or (ResultEntry("dkim", "none"),)), dmarc)
        note = f"from {found.source.partition(':')[2]}" if found.source != "checked" else None
        return Authentication(
            summary=format_results(self.authserv_id, entries, note),
            spf=found.spf.result,
            dkim=_overall_dkim(found.dkim),
            dmarc=dmarc.result,
            sender=_sender_verdict(found, mail_from),
            source=found.source,
            queries=lookups.queries,
        )

    def _dmarc(self, found: _Found, from_domain: str | None, lookups: Lookups) -> ResultEntry:
        if not from_domain:
            return ResultEntry("dmarc", "none")
        author = from_domain.lower().rstrip(".")
        try:
            policy = self._dmarc_record(author, lookups)
        except DnsTemporary:
            return ResultEntry("dmarc", "temperror", (("header.from", author),))
        if policy is None:
            return ResultEntry("dmarc", "none", (("header.from", author),))
        spf_domain = found.spf.prop("smtp.mailfrom") or found.spf.prop("smtp.helo")
        spf_ok = found.spf.result == "pass" and aligned(spf_domain, author, policy.aspf)
        dkim_ok = any(
            e.result == "pass" and aligned(e.prop("header.d"), author, policy.adkim) for e in found.dkim
        )
        result = "pass" if spf_ok or dkim_ok else "fail"
        if result == "fail" and (found.spf.result == "temperror" or _overall_dkim(found.dkim) == "temperror"):
            result = "temperror"
        return ResultEntry("dmarc", result, (("policy.p", policy.p), ("header.from", author)))

    @staticmethod
    def _dmarc_record(author: str, lookups: Lookups) -> DmarcPolicy | None:
        """`_dmarc.<From domain>`, else `_dmarc.<organizational domain>` (RFC 7489 §6.6.3)."""
        names = [author]
        org = organizational_domain(author)
        if org != author:
            names.append(org)
        for name in names:
            records = [r.decode("utf-8", "replace") for r in lookups.txt(f"_dmarc.{name}")]
            policies = [p for p in map(parse_dmarc, records) if p is not None]
            if len(policies) == 1:  # more than one record is no record (§6.6.3 step 5)
                policy = policies[0]
                if name != author and policy.sp:  # a subdomain's policy is the organization's sp=
                    policy = dataclasses.replace(policy, p=policy.sp)
                return policy
        return None

    # ---- failure is a result ------------------------------------------------------------------------------

    def unavailable(self, why: str) -> Authentication:
        entries = (
            ResultEntry("spf", "temperror"),
            ResultEntry("dkim", "temperror"),
            ResultEntry("dmarc", "temperror"),
        )
        return Authentication(
            summary=format_results(self.authserv_id, entries, why),
            spf="temperror",
            dkim="temperror",
            dmarc="temperror",
            sender="temperror",
        )


# RSA verification is pow(signature, e, n) in dkimpy's pure Python, holding the GIL for as long as it takes:
# the sender publishes e and n, so a 12288-bit exponent costs seconds per signature, past any deadline.
# RFC 8301 §3.2 asks verifiers for 1024 to 4096 bits; real exponents are 65537 (or 3).
_MAX_KEY_BITS = 8192
_MAX_EXPONENT_BITS = 64


def _bounded_key(record: bytes | None) -> bytes | None:
    """The key record as published; `KeyTooCostly` (permerror) when its RSA key costs more than a real one."""
    if record is None:
        return None
    try:
        import dkim.crypto
        import dkim.util

        tags = dkim.util.parse_tag_value(record)
        if tags.get(b"k", b"rsa").strip().lower() != b"rsa" or not tags.get(b"p"):
            return record  # ed25519 costs one fixed-size verification; an empty p= is revoked already
        key = dkim.crypto.parse_public_key(base64.b64decode(b"".join(tags[b"p"].split())))
    except Exception:
        return record  # a key dkimpy cannot read: it judges that itself, before any arithmetic
    if key["modulus"].bit_length() > _MAX_KEY_BITS or key["publicExponent"].bit_length() > _MAX_EXPONENT_BITS:
        raise KeyTooCostly(
            f"rsa key of {key['modulus'].bit_length()} bits, exponent {key['publicExponent'].bit_length()}"
        )
    return record


def _passes_anyone(mechanism: object) -> bool:
    """The SPF mechanism that matched lets every client on the Internet pass (`+all`, `ip4:0.0.0.0/0`,
    `a/0`, `mx//0`): anyone may claim the domain's addresses, so its pass is no evidence of the sender."""
    if not isinstance(mechanism, str):
        return False
    text = mechanism.lstrip("+").lower()
    if text == "all":
        return True
    # RFC 7208 §5.6: `ip4:<net>/<v4 cidr>`, `ip6:<net>/<v6 cidr>`, `a|mx[:<domain>][/<v4 cidr>][//<v6 cidr>]`
    kind = text.split(":", 1)[0].split("/", 1)[0]
    cidrs = text.split("/", 1)[1] if "/" in text else ""
    v4, _, v6 = cidrs.partition("/")
    if kind == "ip6":
        v4, v6 = "", v4
    elif kind not in ("ip4", "a", "mx"):
        return False
    return (v4.isdigit() and int(v4) < 8) or (v6.isdigit() and int(v6) < 16)


def _overall_dkim(entries: Sequence[ResultEntry]) -> str:
    results = {e.result for e in entries}
    for result in ("pass", "temperror", "fail", "permerror", "neutral", "policy"):
        if result in results:
            return result
    return "none"


def _sender_verdict(found: _Found, mail_from: str | None) -> str:
    """pass when SPF passes for the envelope sender (not by a record that passes anyone), or a passing
    DKIM signature is aligned (relaxed) with its domain; temperror when DNS could not say; fail otherwise."""
    sender_domain = address_domain(mail_from)
    if sender_domain is None:
        return "fail"
    if (
        found.spf.result == "pass"
        and found.spf.prop("smtp.mailfrom") is not None
        and not found.spf.prop("policy.spf")
    ):
        if aligned(found.spf.prop("smtp.mailfrom"), sender_domain, "r"):
            return "pass"
    if any(e.result == "pass" and aligned(e.prop("header.d"), sender_domain, "r") for e in found.dkim):
        return "pass"
    if found.spf.result == "temperror" or any(e.result == "temperror" for e in found.dkim):
        return "temperror"
    return "fail"


class Authenticator:
    """The intake's side: checks started at claim time on a pool, finished per prepared message."""

    def __init__(self, config: Config, threads: int = 8) -> None:
        self.checker = Checker(config)
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="mailauth")
        self._pending: dict[int, tuple[Future[_Found], Lookups]] = {}

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def start(self, entries: Sequence[ClaimedEntry]) -> None:
        for entry in entries:
            lookups = self.checker.lookups(math.inf)  # its budget starts when the check does
            future = self._pool.submit(self._stage_one, entry, lookups)
            self._pending[entry.inbox_id] = (future, lookups)

    def _stage_one(self, entry: ClaimedEntry, lookups: Lookups) -> _Found:
        # The budget counts from when the check starts, not from when it was queued behind others.
        lookups.deadline = time.monotonic() + self.checker.budget
        headers = authentication_results(entry.raw) if self.checker.trusted else ()
        return self.checker.spf_and_dkim(
            entry.raw, entry.mail_from, entry.client_addr, entry.helo, headers, lookups
        )

    def apply(self, item: PreparedMessage) -> PreparedMessage:
        """`item` with its authentication; never raises (the message is stored whatever happens here)."""
        pending = self._pending.pop(item.entry.inbox_id, None)
        try:
            if pending is None:
                lookups = self.checker.lookups()
                found = self._stage_one(item.entry, lookups)
            else:
                future, lookups = pending
                found = self._wait(future, lookups)
            if "processing_failed" in item.flags:
                from_domain = None
            else:
                from_domain = address_domain(item.parsed.from_addr)
            several = len(author_domains(item.entry.raw)) > 1
            result = self.checker.finish(found, item.entry.mail_from, from_domain, lookups, several)
        except FutureTimeout:
            result = self.checker.unavailable("time budget spent")
        except Exception as exc:
            log.warning(
                "authentication check failed: inbox_id=%d error=%s", item.entry.inbox_id, type(exc).__name__
            )
            result = self.checker.unavailable("check failed")
        log.debug(
            "authenticated: inbox_id=%d spf=%s dkim=%s dmarc=%s sender=%s queries=%d",
            item.entry.inbox_id,
            result.spf,
            result.dkim,
            result.dmarc,
            result.sender,
            result.queries,
        )
        return dataclasses.replace(item, authentication=result)

    @staticmethod
    def _wait(future: Future[_Found], lookups: Lookups) -> _Found:
        """The check's result once it is done, or FutureTimeout a second past its own budget. A check
        still queued behind others is waited for (the pool frees a thread at least every budget), so
        a burst of messages is not marked temperror for having queued."""
        while not future.done():
            started = lookups.deadline != math.inf
            if started and time.monotonic() > lookups.deadline + 1.0:
                raise FutureTimeout
            wait([future], timeout=max(0.01, lookups.remaining() + 1.0) if started else 0.5)
        return future.result()

    def forget(self, inbox_ids: Sequence[int]) -> None:
        """Entries that were released without a prepared message: drop their pending checks."""
        for inbox_id in inbox_ids:
            pending = self._pending.pop(inbox_id, None)
            if pending is not None:
                pending[0].cancel()


def author_domains(raw: bytes) -> set[str]:
    """The domains of every address in every From: header (RFC 5322 allows one header; senders write
    more), read by dkimpy's header splitter as DKIM reads them."""
    import email.utils

    import dkim

    try:
        headers = dkim.rfc822_parse(raw)[0]
    except Exception:
        return set()
    values = [value.decode("utf-8", "replace") for name, value in headers if name.lower() == b"from"]
    found = {address_domain(address) for _name, address in email.utils.getaddresses(values)}
    return {domain for domain in found if domain}


def authentication_results(raw: bytes) -> tuple[str, ...]:
    """The message's own Authentication-Results values, top first, read by dkimpy's header splitter (the
    one DKIM reads anyway), only when an upstream MTA is trusted."""
    import dkim

    try:
        headers = dkim.rfc822_parse(raw)[0]
    except Exception:
        return ()
    return tuple(
        value.decode("utf-8", "replace").replace("\r\n", " ").strip()
        for name, value in headers
        if name.lower() == b"authentication-results"
    )
