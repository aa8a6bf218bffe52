"""Attacks on the intake's mail authentication (issue 22), each over the suite's real DNS server on 127.0.0.1
(tests/dns_server.py): a sender controls its own zone, so every record below is one an attacker can
publish. What must hold: a hostile record costs bounded work, and nothing but the envelope sender's own
domain (or its organization, by the whole Public Suffix List) can vouch for a confirmation.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.mailauth import Checker
from gateway.signing import Signer, SigningKey, generate_key
from tests.conftest import TEST_DNS, RunningGateway, Sink, make_config

ZONE = TEST_DNS.resolver


def _report(sender_domain: str) -> bytes:
    return (
        f"From: Reporter <reporter@{sender_domain}>\r\nTo: abuse@example.org\r\n"
        f"Subject: Phishing\r\nMessage-ID: <{uuid.uuid4().hex}@{sender_domain}>\r\n"
        "Date: Wed, 02 Dec 2026 05:00:00 +0000\r\n\r\nSee hxxp://phish.example/login\r\n"
    ).encode()


def _key(domain: str) -> SigningKey:
    selector = f"s{uuid.uuid4().hex[:10]}"
    private, record = generate_key("rsa")
    ZONE.publish_txt(f"{selector}._domainkey.{domain}", record)
    return SigningKey("rsa-sha256", selector, domain, private)


def _der_length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def _der_integer(value: int) -> bytes:
    body = value.to_bytes(value.bit_length() // 8 + 1, "big")
    return b"\x02" + _der_length(len(body)) + body


def _rsa_public_key(modulus: int, exponent: int) -> bytes:
    """A bare RSAPublicKey (RFC 8017 A.1.1), which dkimpy accepts in `p=` as well as SubjectPublicKeyInfo."""
    body = _der_integer(modulus) + _der_integer(exponent)
    return b"\x30" + _der_length(len(body)) + body


def _publish_rsa(name: str, modulus: int, exponent: int) -> None:
    ZONE.unpublish(name)
    der = _rsa_public_key(modulus, exponent)
    ZONE.publish_txt(name, "v=DKIM1; k=rsa; p=" + base64.b64encode(der).decode())


def test_a_dkim_key_with_a_huge_public_exponent_is_refused_unverified(tmp_path: Path) -> None:
    """RSA verification is pow(signature, e, n): with e and n of 12288 bits one signature costs seconds of
    pure-Python CPU that holds the GIL, past any DNS deadline, and a message may carry several. A sender
    publishes such a key for its own selector; the check must refuse it (permerror), not compute it."""
    key = _key("huge-key.net")
    signed = Signer([key]).sign(_report("huge-key.net"))
    bits = 12288
    modulus = (1 << (bits - 1)) | 0xF1  # odd, full length; nobody can sign for it, nobody needs to
    exponent = (1 << (bits - 2)) | 1
    name = f"{key.selector}._domainkey.huge-key.net"
    _publish_rsa(name, modulus, exponent)
    result = Checker(make_config(tmp_path, "sqlite://")).check(
        signed, "reporter@huge-key.net", "127.0.0.1", "mail.huge-key.net", "huge-key.net"
    )
    assert result.dkim == "permerror"
    assert f"dkim=permerror header.d=huge-key.net header.s={key.selector}" in result.summary


def test_a_dkim_key_with_an_oversized_modulus_is_refused(tmp_path: Path) -> None:
    key = _key("huge-key.net")
    signed = Signer([key]).sign(_report("huge-key.net"))
    modulus = (1 << 16383) | 0xF1
    name = f"{key.selector}._domainkey.huge-key.net"
    _publish_rsa(name, modulus, 65537)
    result = Checker(make_config(tmp_path, "sqlite://")).check(
        signed, "reporter@huge-key.net", "127.0.0.1", "mail.huge-key.net", "huge-key.net"
    )
    assert result.dkim == "permerror"


def test_a_signature_of_a_sibling_under_a_private_public_suffix_does_not_vouch(
    gateway_factory: Callable[..., RunningGateway], smtp_sink: Sink
) -> None:
    """eu.org hands out delegated subdomains (their owners run their own DNS): it is on the Public Suffix
    List's private section. attacker.eu.org signing a report that claims victim.eu.org as envelope sender
    is a stranger vouching, not relaxed alignment, so the victim gets no confirmation (backscatter)."""
    key = _key("attacker.eu.org")
    signed = Signer([key]).sign(_report("victim.eu.org"))
    gateway = gateway_factory(confirm={"smarthost": smtp_sink.address, "require_authenticated": True})
    assert gateway.send(signed, mail_from="reporter@victim.eu.org")[0] == 250
    rows = gateway.wait_outbox(lambda rows: len(rows) == 1 and rows[0]["state"] not in ("queued", "sending"))
    assert (rows[0]["state"], rows[0]["suppressed_reason"]) == ("suppressed", "unauthenticated")
    assert smtp_sink.handler.received == []
    summary = gateway.store.show_case(rows[0]["case_id"])["messages"][0]["authentication"]
    assert "dkim=pass header.d=attacker.eu.org" in summary
    assert "dmarc=pass" not in summary


@pytest.mark.parametrize(
    ("domain", "record"),
    [
        ("plus-all.net", "v=spf1 +all"),
        ("slash-zero.net", "v=spf1 ip4:0.0.0.0/1 ip4:128.0.0.0/1 -all"),
        ("a-slash-zero.net", "v=spf1 a/0 -all"),
        ("mx-slash-zero.net", "v=spf1 mx/0//0 -all"),
    ],
)
def test_spf_pass_by_a_record_that_passes_anyone_does_not_vouch(
    gateway_factory: Callable[..., RunningGateway], smtp_sink: Sink, domain: str, record: str
) -> None:
    """`v=spf1 +all` passes every client on the Internet, so it says nothing about who sent the message:
    anyone can claim such a domain's addresses and make us mail them."""
    ZONE.publish_txt(domain, record)
    ZONE.load("a-slash-zero.net. 60 IN A 192.0.2.1\nmx-slash-zero.net. 60 IN MX 10 a-slash-zero.net.")
    gateway = gateway_factory(confirm={"smarthost": smtp_sink.address, "require_authenticated": True})
    gateway.send(_report(domain), mail_from=f"victim@{domain}")
    rows = gateway.wait_outbox(lambda rows: len(rows) == 1 and rows[0]["state"] not in ("queued", "sending"))
    assert (rows[0]["state"], rows[0]["suppressed_reason"]) == ("suppressed", "unauthenticated")
    assert smtp_sink.handler.received == []
    summary = gateway.store.show_case(rows[0]["case_id"])["messages"][0]["authentication"]
    assert f"spf=pass smtp.mailfrom={domain}" in summary  # SPF's own answer is recorded as it is


@pytest.mark.parametrize(
    "authors",
    [
        b"From: Reporter <reporter@spf-pass.net>, Bank <security@forged.net>\r\n",
        b"From: Reporter <reporter@spf-pass.net>\r\nFrom: Bank <security@forged.net>\r\n",
    ],
    ids=["two-addresses", "two-headers"],
)
def test_a_message_from_several_authors_never_passes_dmarc(
    gateway_factory: Callable[..., RunningGateway], smtp_sink: Sink, authors: bytes
) -> None:
    """RFC 7489 §6.6.1: DMARC judges one author domain. Judging only the first would show the desk
    `dmarc=pass` on mail that also claims to be from forged.net (whose policy is reject)."""
    raw = _report("spf-pass.net").replace(b"From: Reporter <reporter@spf-pass.net>\r\n", authors)
    gateway = gateway_factory(confirm={"smarthost": smtp_sink.address, "require_authenticated": True})
    assert gateway.send(raw, mail_from="reporter@spf-pass.net")[0] == 250
    rows = gateway.wait_outbox(lambda rows: len(rows) == 1 and rows[0]["state"] not in ("queued", "sending"))
    summary = gateway.store.show_case(rows[0]["case_id"])["messages"][0]["authentication"]
    assert "spf=pass smtp.mailfrom=spf-pass.net" in summary  # stored, checked, the envelope is fine
    assert "dmarc=pass" not in summary
    assert "dmarc=permerror" in summary


def test_a_dkim_key_whose_nameserver_hangs_defers_the_confirmation_and_the_message_is_stored(
    gateway_factory: Callable[..., RunningGateway], smtp_sink: Sink
) -> None:
    """The sender's nameserver never answers: the check ends at its budget as temperror (DNS could not
    say), the message is stored and threaded as always, and the confirmation waits for a re-check rather
    than being dropped or sent."""
    key = _key("hang-dkim.net")
    name = f"{key.selector}._domainkey.hang-dkim.net"
    ZONE.hang.add(name)
    ZONE.publish_txt("hang-dkim.net", "v=spf1 ip4:192.0.2.99 -all")  # SPF fails from 127.0.0.1
    try:
        gateway = gateway_factory(
            confirm={"smarthost": smtp_sink.address, "require_authenticated": True},
            auth={"time_budget": 2.0},
        )
        assert (
            gateway.send(Signer([key]).sign(_report("hang-dkim.net")), mail_from="r@hang-dkim.net")[0] == 250
        )
        rows = gateway.wait_outbox(lambda rows: len(rows) == 1 and rows[0]["state"] not in ("sending",))
        assert rows[0]["state"] in ("queued", "deferred") and rows[0]["suppressed_reason"] is None, rows[0]
        [case] = gateway.store.list_cases()
        summary = gateway.store.show_case(case["case_id"])["messages"][0]["authentication"]
        assert "dkim=temperror" in summary
        assert smtp_sink.handler.received == []
    finally:
        ZONE.hang.discard(name)
        ZONE.release.set()  # wakes the handler threads still waiting; later hangs wait again
        ZONE.release.clear()


def test_hundreds_of_dkim_signatures_cost_a_bounded_number_of_queries(tmp_path: Path) -> None:
    key = _key("many-sigs.net")
    signed = Signer([key]).sign(_report("many-sigs.net"))
    assert signed.lower().startswith(b"dkim-signature:")
    hostile = b"".join(
        f"DKIM-Signature: v=1; a=rsa-sha256; d=x{i}.many-sigs.net; s=s; h=from; bh=; b=; l=99999999999; "
        f"x=99999999999999999999; h={'from:' * 500}from\r\n".encode()
        for i in range(300)
    )
    result = Checker(make_config(tmp_path, "sqlite://")).check(
        hostile + signed, "r@many-sigs.net", "127.0.0.1", "mail.many-sigs.net", "many-sigs.net"
    )
    assert result.queries <= 40
    assert result.dkim in ("permerror", "fail", "pass")
    assert result.summary.count("dkim=") <= 20


def test_spf_include_loops_and_lookup_floods_are_permerror_not_a_pass(tmp_path: Path) -> None:
    ZONE.publish_txt("loop-a.net", "v=spf1 include:loop-b.net -all")
    ZONE.publish_txt("loop-b.net", "v=spf1 include:loop-a.net -all")
    ZONE.publish_txt("flood.net", "v=spf1 " + " ".join(f"a:h{i}.flood.net" for i in range(15)) + " +all")
    ZONE.publish_txt(
        "void.net", "v=spf1 " + " ".join(f"a:nx{i}.void.net" for i in range(5)) + " ip4:127.0.0.1 -all"
    )
    checker = Checker(make_config(tmp_path, "sqlite://"))
    for domain in ("loop-a.net", "flood.net", "void.net"):
        result = checker.check(_report(domain), f"r@{domain}", "127.0.0.1", f"mail.{domain}", domain)
        assert result.spf in ("permerror", "temperror"), (domain, result.summary)
        assert result.sender != "pass" and result.queries <= 40


@pytest.mark.parametrize(
    "forged",
    [
        # Our own id in other cases and spacing, or with a comment in front: still ours, never trusted.
        b"Authentication-Results: MX.Test.Example; spf=pass smtp.mailfrom=forged.net\r\n",
        b"Authentication-Results:   (ok) mx.test.example ; spf=pass smtp.mailfrom=forged.net\r\n",
        # The trusted upstream's real header comes first (it prepends); a second one claiming its id is
        # the sender's text below it.
        b"Authentication-Results: mx.upstream.example; spf=fail smtp.mailfrom=forged.net\r\n"
        b"Authentication-Results: mx.upstream.example; spf=pass smtp.mailfrom=forged.net; dmarc=pass\r\n",
    ],
    ids=["case", "comment", "second-header"],
)
def test_forged_authentication_results_never_vouch(
    gateway_factory: Callable[..., RunningGateway], smtp_sink: Sink, forged: bytes
) -> None:
    gateway = gateway_factory(
        confirm={"smarthost": smtp_sink.address, "require_authenticated": True},
        auth={"trusted_authserv_ids": ["MX.UPSTREAM.EXAMPLE", "mx.test.example"]},
    )
    raw = forged + _report("forged.net")
    gateway.send(raw, mail_from="reporter@forged.net")
    rows = gateway.wait_outbox(lambda rows: len(rows) == 1 and rows[0]["state"] not in ("queued", "sending"))
    assert rows[0]["suppressed_reason"] == "unauthenticated"
    assert smtp_sink.handler.received == []


def test_a_valid_signature_of_another_domain_does_not_vouch_for_the_envelope_sender(
    gateway_factory: Callable[..., RunningGateway], smtp_sink: Sink
) -> None:
    key = _key("dkim-signer.net")
    signed = Signer([key]).sign(_report("forged.net"))
    gateway = gateway_factory(confirm={"smarthost": smtp_sink.address, "require_authenticated": True})
    gateway.send(signed, mail_from="reporter@forged.net")
    rows = gateway.wait_outbox(lambda rows: len(rows) == 1 and rows[0]["state"] not in ("queued", "sending"))
    assert rows[0]["suppressed_reason"] == "unauthenticated"
    summary = gateway.store.show_case(rows[0]["case_id"])["messages"][0]["authentication"]
    assert "dkim=pass header.d=dkim-signer.net" in summary and "dmarc=fail" in summary


@pytest.mark.parametrize(
    "from_header",
    [
        "From: =?utf-8?q?B=C3=BCcher?= <r@b\u00fccher.example>",
        "From: r@SPF-PASS.NET.",
        "From: undisclosed-recipients:;",
        "From: \x00\x01 <@@@>",
        None,
    ],
    ids=["idn", "upper-trailing-dot", "group", "garbage", "none"],
)
def test_odd_from_headers_are_stored_with_a_result_never_a_crash(
    gateway_factory: Callable[..., RunningGateway], smtp_sink: Sink, from_header: str | None
) -> None:
    lines = _report("spf-pass.net").decode().split("\r\n")
    lines = [line for line in lines if not line.startswith("From:")]
    if from_header is not None:
        lines.insert(0, from_header)
    gateway = gateway_factory(confirm={"smarthost": smtp_sink.address, "require_authenticated": True})
    assert gateway.send("\r\n".join(lines).encode(), mail_from="reporter@spf-pass.net")[0] == 250
    rows = gateway.wait_outbox(lambda rows: len(rows) == 1 and rows[0]["state"] not in ("queued", "sending"))
    summary = gateway.store.show_case(rows[0]["case_id"])["messages"][0]["authentication"]
    assert summary.startswith("mx.test.example; spf=pass smtp.mailfrom=spf-pass.net")
    assert "check failed" not in summary


def test_the_outbox_recheck_also_never_passes_dmarc_for_several_authors(tmp_path: Path) -> None:
    """The outbox's re-check of a deferred sender (gateway/auth_defer.py) calls `Checker.check` with the
    first From domain and records its summary on the case: it must judge the authors as intake does."""
    raw = _report("spf-pass.net").replace(
        b"From: Reporter <reporter@spf-pass.net>\r\n",
        b"From: Reporter <reporter@spf-pass.net>, Bank <security@forged.net>\r\n",
    )
    result = Checker(make_config(tmp_path, "sqlite://")).check(
        raw, "reporter@spf-pass.net", "127.0.0.1", "mail.spf-pass.net", "spf-pass.net"
    )
    assert result.spf == "pass" and result.dmarc == "permerror"
