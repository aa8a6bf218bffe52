"""Issue 22: confirmations that arrive (DKIM-signed mail out) and only to real senders (SPF, DKIM, DMARC in).

Everything over the real protocols: SMTP into a served gateway, its confirmations into the SMTP sink, and
every DNS question to the suite's DNS server on 127.0.0.1 (tests/dns_server.py) serving
tests/data/mailauth.zone plus the keys the tests publish. Our own signatures are checked twice: by
dkimpy reading the zone's records directly (not through the gateway's resolver), and by a verifier
written here from RFC 6376 §3.4 and §3.7 with `cryptography` (RSA) and PyNaCl (ed25519), which shares no
code with the signer.
"""

from __future__ import annotations

import base64
import hashlib
import re
import socket
import stat
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dkim
import nacl.signing
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from dnslib import RCODE, DNSRecord

from gateway.config import Config
from gateway.confirm import ConfirmWorker
from gateway.mailauth import Checker
from gateway.signing import Signer, SigningKey, UnsignedMail, generate_key, write_key
from storage.records import OutboxJob
from tests.conftest import TEST_DNS, RunningGateway, Sink, make_config, run_cli

ZONE = TEST_DNS.resolver


def _report(sender_domain: str, extra: bytes = b"") -> bytes:
    return (
        (
            f"From: Reporter <reporter@{sender_domain}>\r\nTo: abuse@example.org\r\n"
            f"Subject: Phishing\r\nMessage-ID: <{uuid.uuid4().hex}@{sender_domain}>\r\n"
            "Date: Wed, 02 Dec 2026 05:00:00 +0000\r\n"
        ).encode()
        + extra
        + b"\r\nSee hxxp://phish.example/login\r\n"
    )


def _auth_gateway(
    factory: Callable[..., RunningGateway], sink: Sink, store_url: str | None = None, **sections: Any
) -> RunningGateway:
    confirm = {"smarthost": sink.address, "require_authenticated": True} | sections.pop("confirm", {})
    return factory(store_url, confirm=confirm, **sections)


def _only_row(gateway: RunningGateway) -> dict[str, Any]:
    rows = gateway.wait_outbox(lambda rows: len(rows) == 1 and rows[0]["state"] not in ("queued", "sending"))
    return rows[0]


def _authentication(gateway: RunningGateway, case_id: str) -> str:
    return gateway.store.show_case(case_id)["messages"][0]["authentication"]


def _cli_config(tmp_path: Path, gateway: RunningGateway) -> Path:
    path = tmp_path / "desk.toml"
    path.write_text(
        f'[store]\nurl = "{gateway.service.config.store.url}"\n'
        f'[confirm]\nenabled = false\nsecret_file = "{tmp_path}/reply-token.key"\n'
    )
    return path


# ---- who gets a confirmation ------------------------------------------------------------------------------


def test_forged_sender_from_a_dash_all_domain_gets_no_confirmation(
    gateway_factory: Callable[..., RunningGateway], smtp_sink: Sink, tmp_path: Path, store_url: str
) -> None:
    gateway = _auth_gateway(gateway_factory, smtp_sink, store_url)
    code, _ = gateway.send(_report("forged.net"), mail_from="reporter@forged.net")
    assert code == 250
    row = _only_row(gateway)
    assert (row["state"], row["suppressed_reason"]) == ("suppressed", "unauthenticated")
    assert smtp_sink.handler.received == []
    summary = _authentication(gateway, row["case_id"])
    assert summary.startswith("mx.test.example; spf=fail smtp.mailfrom=forged.net")
    assert "dmarc=fail policy.p=reject header.from=forged.net" in summary
    config = _cli_config(tmp_path, gateway)
    assert "unauthenticated" in run_cli(config, "outbox", "list")
    shown = run_cli(config, "cases", "show", row["case_id"])
    [line] = [line for line in shown.splitlines() if line.startswith("Authentication: ")]
    assert "spf=fail" in line and "dmarc=fail" in line  # shown through the escaping layer, defanged
    assert "(unauthenticated)" in shown


def test_spf_pass_sender_gets_a_confirmation(
    gateway_factory: Callable[..., RunningGateway], smtp_sink: Sink, tmp_path: Path
) -> None:
    gateway = _auth_gateway(gateway_factory, smtp_sink)
    gateway.send(_report("spf-pass.net"), mail_from="reporter@spf-pass.net")
    [(_, rcpts, _raw)] = smtp_sink.wait_for(1)
    assert rcpts == ["reporter@spf-pass.net"]
    row = _only_row(gateway)
    assert row["state"] == "sent"
    summary = _authentication(gateway, row["case_id"])
    assert "spf=pass smtp.mailfrom=spf-pass.net" in summary and "dmarc=pass" in summary
    case = run_cli(_cli_config(tmp_path, gateway), "cases", "show", row["case_id"], "--json")
    assert '"authentication": "mx.test.example; spf=pass' in case


def _publish_key(domain: str, algorithm: str = "rsa") -> SigningKey:
    selector = f"s{uuid.uuid4().hex[:10]}"
    private, record = generate_key(algorithm)
    ZONE.publish_txt(f"{selector}._domainkey.{domain}", record)
    name = "ed25519-sha256" if algorithm == "ed25519" else "rsa-sha256"
    return SigningKey(name, selector, domain, private.strip() if algorithm == "ed25519" else private)


def test_dkim_aligned_sender_whose_spf_fails_gets_a_confirmation(
    gateway_factory: Callable[..., RunningGateway], smtp_sink: Sink
) -> None:
    """dkim-signer.net's SPF allows only 192.0.2.20, so SPF fails from 127.0.0.1; its signature vouches."""
    key = _publish_key("dkim-signer.net")
    signed = Signer([key]).sign(_report("dkim-signer.net"))
    gateway = _auth_gateway(gateway_factory, smtp_sink)
    gateway.send(signed, mail_from="reporter@dkim-signer.net")
    smtp_sink.wait_for(1)
    row = _only_row(gateway)
    summary = _authentication(gateway, row["case_id"])
    assert "spf=fail" in summary
    assert f"dkim=pass header.d=dkim-signer.net header.s={key.selector}" in summary
    assert "dmarc=pass" in summary


def test_a_signature_broken_on_the_way_does_not_vouch(
    gateway_factory: Callable[..., RunningGateway], smtp_sink: Sink
) -> None:
    key = _publish_key("dkim-signer.net")
    signed = Signer([key]).sign(_report("dkim-signer.net")).replace(b"phish.example", b"other.example")
    gateway = _auth_gateway(gateway_factory, smtp_sink)
    gateway.send(signed, mail_from="reporter@dkim-signer.net")
    row = _only_row(gateway)
    assert row["suppressed_reason"] == "unauthenticated"
    assert "dkim=fail" in _authentication(gateway, row["case_id"])


def test_authentication_results_claiming_our_authserv_id_are_not_trusted(
    gateway_factory: Callable[..., RunningGateway], smtp_sink: Sink
) -> None:
    forged = b"Authentication-Results: mx.test.example; spf=pass smtp.mailfrom=forged.net; dmarc=pass\r\n"
    gateway = _auth_gateway(
        gateway_factory, smtp_sink, auth={"trusted_authserv_ids": ["mx.upstream.example", "mx.test.example"]}
    )
    gateway.send(_report("forged.net", forged), mail_from="reporter@forged.net")
    row = _only_row(gateway)
    assert row["suppressed_reason"] == "unauthenticated"
    assert _authentication(gateway, row["case_id"]).startswith("mx.test.example; spf=fail")


def test_authentication_results_of_an_untrusted_upstream_are_ignored(
    gateway_factory: Callable[..., RunningGateway], smtp_sink: Sink
) -> None:
    claimed = b"Authentication-Results: mx.upstream.example; spf=pass smtp.mailfrom=forged.net\r\n"
    gateway = _auth_gateway(gateway_factory, smtp_sink)
    gateway.send(_report("forged.net", claimed), mail_from="reporter@forged.net")
    assert _only_row(gateway)["suppressed_reason"] == "unauthenticated"


def test_a_trusted_upstreams_results_are_used_and_recorded_as_theirs(
    gateway_factory: Callable[..., RunningGateway], smtp_sink: Sink
) -> None:
    """Behind an MTA every client is 127.0.0.1: its Authentication-Results are the only SPF there is."""
    upstream = (
        b"Authentication-Results: mx.upstream.example; spf=pass smtp.mailfrom=relayed.net;\r\n"
        b" dkim=none; dmarc=none header.from=relayed.net\r\n"
    )
    gateway = _auth_gateway(
        gateway_factory, smtp_sink, auth={"trusted_authserv_ids": ["mx.upstream.example"]}
    )
    gateway.send(_report("relayed.net", upstream), mail_from="reporter@relayed.net")
    smtp_sink.wait_for(1)
    summary = _authentication(gateway, _only_row(gateway)["case_id"])
    assert summary.startswith("mx.test.example; spf=pass smtp.mailfrom=relayed.net")
    assert summary.endswith("(from mx.upstream.example)")


# ---- DNS that does not answer ------------------------------------------------------------------------------


def _make_due(gateway: RunningGateway) -> None:
    from sqlalchemy import update

    from storage.models import OutboxRow

    with gateway.store.engine.begin() as conn:
        conn.execute(update(OutboxRow).values(next_attempt_at=datetime.now(UTC)))
    gateway.service.confirmer.wake()


def test_a_dns_temporary_failure_defers_the_confirmation_and_the_recheck_sends_it(
    gateway_factory: Callable[..., RunningGateway], smtp_sink: Sink, store_url: str
) -> None:
    domain = f"t{uuid.uuid4().hex[:8]}.net"
    ZONE.servfail.add(domain)
    try:
        gateway = _auth_gateway(gateway_factory, smtp_sink, store_url)
        gateway.send(_report(domain), mail_from=f"reporter@{domain}")
        row = gateway.wait_outbox(lambda rows: len(rows) == 1 and rows[0]["state"] == "deferred")[0]
        assert "DNS temporary failure" in row["last_error"]
        assert "spf=temperror" in _authentication(gateway, row["case_id"])
        _make_due(gateway)  # the first re-check (2 minutes later in production): still failing
        gateway.wait_outbox(lambda rows: rows[0]["state"] == "deferred" and rows[0]["attempts"] == 1)
    finally:
        ZONE.servfail.discard(domain)
    ZONE.load(f'{domain}. 60 IN TXT "v=spf1 ip4:127.0.0.1 -all"')
    _make_due(gateway)
    smtp_sink.wait_for(1)
    row = gateway.wait_outbox(lambda rows: rows[0]["state"] == "sent")[0]
    assert "spf=pass" in _authentication(gateway, row["case_id"])


def test_still_undecided_after_the_last_recheck_is_suppressed_never_sent(
    gateway_factory: Callable[..., RunningGateway], smtp_sink: Sink
) -> None:
    domain = f"t{uuid.uuid4().hex[:8]}.net"
    ZONE.servfail.add(domain)
    try:
        gateway = _auth_gateway(gateway_factory, smtp_sink)
        gateway.send(_report(domain), mail_from=f"reporter@{domain}")
        gateway.wait_outbox(lambda rows: len(rows) == 1 and rows[0]["state"] == "deferred")
        for attempts in (1, 2):
            _make_due(gateway)
            gateway.wait_outbox(lambda rows, n=attempts: rows[0]["attempts"] == n)
        _make_due(gateway)
        row = gateway.wait_outbox(lambda rows: rows[0]["state"] == "suppressed")[0]
    finally:
        ZONE.servfail.discard(domain)
    assert row["suppressed_reason"] == "unauthenticated"
    assert "DNS temporary failure on 4 checks" in row["last_error"]
    assert smtp_sink.handler.received == []


class _SilentDns:
    """A nameserver that takes queries and answers none until released (then SERVFAIL to each)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.asked = threading.Event()
        self.release = threading.Event()
        self.pending: list[tuple[bytes, Any]] = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            try:
                data, peer = self.sock.recvfrom(4096)
                self.pending.append((data, peer))
                self.asked.set()
            except TimeoutError:
                pass
            except OSError:
                return
            if self.release.is_set():
                for data, peer in self.pending:
                    reply = DNSRecord.parse(data).reply()
                    reply.header.rcode = RCODE.SERVFAIL
                    self.sock.sendto(reply.pack(), peer)
                self.pending.clear()


def test_the_smtp_reply_never_waits_for_dns_and_an_outage_still_stores(
    gateway_factory: Callable[..., RunningGateway], smtp_sink: Sink
) -> None:
    silent = _SilentDns()
    gateway = _auth_gateway(
        gateway_factory,
        smtp_sink,
        dns={"nameservers": [f"127.0.0.1:{silent.port}"], "timeout": 30.0},
        auth={"time_budget": 60.0},
    )
    code, _ = gateway.send(_report("spf-pass.net"), mail_from="reporter@spf-pass.net")
    assert code == 250
    assert silent.asked.wait(20), "intake never asked DNS"
    # The 250 is in hand while intake's first DNS question is still unanswered: the checks are not on the
    # SMTP path, and the message is not stored yet because its checks are still running.
    assert not gateway.store.list_outbox()
    silent.release.set()
    row = gateway.wait_outbox(lambda rows: len(rows) == 1)[0]
    assert row["state"] == "deferred"
    assert "temperror" in _authentication(gateway, row["case_id"])
    silent.sock.close()


def test_a_crash_in_the_checks_is_temperror_and_the_message_is_stored(
    gateway_factory: Callable[..., RunningGateway], smtp_sink: Sink, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a library fell over on hostile bytes")

    monkeypatch.setattr(Checker, "spf_and_dkim", broken)
    gateway = _auth_gateway(gateway_factory, smtp_sink)
    gateway.send(_report("spf-pass.net"), mail_from="reporter@spf-pass.net")
    row = gateway.wait_outbox(lambda rows: len(rows) == 1)[0]
    assert row["state"] == "deferred"
    assert "(check failed)" in _authentication(gateway, row["case_id"])


# ---- signed mail out ---------------------------------------------------------------------------------------


def _header_fields(head: bytes) -> list[tuple[bytes, bytes]]:
    fields: list[tuple[bytes, bytes]] = []
    for line in head.split(b"\r\n"):
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1] = (fields[-1][0], fields[-1][1] + b"\r\n" + line)
        elif line:
            name, _, value = line.partition(b":")
            fields.append((name, value))
    return fields


def _relaxed_header(name: bytes, value: bytes) -> bytes:
    value = re.sub(rb"[ \t]+", b" ", value.replace(b"\r\n", b"")).strip()
    return name.strip().lower() + b":" + value


def _relaxed_body(body: bytes) -> bytes:
    lines = [re.sub(rb"[ \t]+", b" ", line).rstrip(b" ") for line in body.split(b"\r\n")]
    while lines and lines[-1] == b"":
        lines.pop()
    return b"".join(line + b"\r\n" for line in lines)


def independent_verify(raw: bytes, txt: Callable[[str], bytes]) -> list[str]:
    """RFC 6376 relaxed/relaxed verification written from the RFC, sharing no code with dkimpy: the
    algorithms whose signature verified (an assertion fails on any that does not)."""
    head, _, body = raw.partition(b"\r\n\r\n")
    fields = _header_fields(head)
    verified = []
    for name, value in fields:
        if name.lower() != b"dkim-signature":
            continue
        tags = {
            k.strip().decode(): re.sub(rb"\s+", b"", v).decode()
            for k, _, v in (part.partition(b"=") for part in value.split(b";"))
            if k.strip()
        }
        assert tags["c"] == "relaxed/relaxed"
        assert base64.b64decode(tags["bh"]) == hashlib.sha256(_relaxed_body(body)).digest()
        used: dict[bytes, int] = {}
        data = b""
        for signed in tags["h"].encode().split(b":"):
            signed = signed.strip().lower()
            instances = [v for n, v in fields if n.strip().lower() == signed]
            taken = used.get(signed, 0)
            used[signed] = taken + 1
            if taken < len(instances):  # bottom-up; a name signed more often than present adds nothing
                data += _relaxed_header(signed, instances[-1 - taken]) + b"\r\n"
        emptied = re.sub(rb"(^|;)(\s*b\s*=)[^;]*", rb"\1\2", value)
        data += _relaxed_header(name, emptied)
        record = txt(f"{tags['s']}._domainkey.{tags['d']}").decode()
        key = base64.b64decode(re.search(r"p=([^;]+)", record).group(1).replace(" ", ""))
        signature = base64.b64decode(tags["b"])
        if tags["a"] == "rsa-sha256":
            public = serialization.load_der_public_key(key)
            public.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())  # type: ignore[union-attr]
        else:
            assert tags["a"] == "ed25519-sha256"
            nacl.signing.VerifyKey(key).verify(hashlib.sha256(data).digest(), signature)  # RFC 8463 §3
        verified.append(tags["a"])
    return verified


def _zone_txt(name: str) -> bytes:
    """The zone's record as published, read from the server's table (not through any resolver)."""
    [rr] = ZONE.records[(name.lower().rstrip("."), "TXT")]
    return b"".join(rr.rdata.data)


def _our_keys(tmp_path: Path) -> tuple[dict[str, Any], str, str]:
    rsa, ed = f"r{uuid.uuid4().hex[:8]}", f"e{uuid.uuid4().hex[:8]}"
    paths = {}
    for selector, algorithm in ((rsa, "rsa"), (ed, "ed25519")):
        private, record = generate_key(algorithm)
        write_key(tmp_path / f"{selector}.key", private)
        ZONE.publish_txt(f"{selector}._domainkey.example.org", record)
        paths[algorithm] = str(tmp_path / f"{selector}.key")
    dkim_section = {
        "selector": rsa,
        "key_file": paths["rsa"],
        "ed25519_selector": ed,
        "ed25519_key_file": paths["ed25519"],
    }
    return dkim_section, rsa, ed


def _signed_confirmation(
    gateway_factory: Callable[..., RunningGateway], smtp_sink: Sink, tmp_path: Path
) -> tuple[RunningGateway, bytes, str, str]:
    """A gateway signing with both our keys, and the confirmation it sent for one report: (gateway, the
    bytes that reached the smarthost, the RSA selector, the Ed25519 selector)."""
    dkim_section, rsa, ed = _our_keys(tmp_path)
    gateway = _auth_gateway(gateway_factory, smtp_sink, dkim=dkim_section)
    gateway.send(_report("spf-pass.net"), mail_from="reporter@spf-pass.net")
    [(_, _, raw)] = smtp_sink.wait_for(1)
    return gateway, raw, rsa, ed


def test_our_confirmation_verifies_with_an_independent_verifier_rsa_and_ed25519_side_by_side(
    gateway_factory: Callable[..., RunningGateway], smtp_sink: Sink, tmp_path: Path
) -> None:
    gateway, raw, rsa, ed = _signed_confirmation(gateway_factory, smtp_sink, tmp_path)
    assert independent_verify(raw, _zone_txt) == ["rsa-sha256", "ed25519-sha256"]

    def dnsfunc(name: bytes, timeout: float = 5) -> bytes:
        return _zone_txt(name.decode())

    verifier = dkim.DKIM(raw)
    assert verifier.verify(0, dnsfunc=dnsfunc) and verifier.verify(1, dnsfunc=dnsfunc)
    first = _header_fields(raw.partition(b"\r\n\r\n")[0])[0][1]
    signed = [h.strip() for h in re.sub(rb"\s+", b"", first.split(b"h=")[1].split(b";")[0]).split(b":")]
    assert signed.count(b"from") == 2  # oversigned
    for name in (b"to", b"subject", b"date", b"message-id", b"in-reply-to", b"references", b"reply-to"):
        assert name in signed
    assert b"auto-submitted" in signed
    assert f"s={rsa}".encode() in raw and f"s={ed}".encode() in raw and b"d=example.org" in raw
    # The outbox keeps exactly the signed bytes that went out.
    row = _only_row(gateway)
    assert gateway.store.outbox_message(row["id"])[1] == raw


def test_a_message_added_to_after_signing_no_longer_verifies(
    gateway_factory: Callable[..., RunningGateway], smtp_sink: Sink, tmp_path: Path
) -> None:
    """A second From prepended on the way breaks the signature (From is oversigned)."""
    _, raw, _, _ = _signed_confirmation(gateway_factory, smtp_sink, tmp_path)
    head, _, body = raw.partition(b"\r\n\r\n")
    tampered = head + b"\r\nFrom: ceo@example.org\r\n\r\n" + body
    with pytest.raises(Exception):  # noqa: B017 (cryptography's InvalidSignature or nacl's BadSignatureError)
        independent_verify(tampered, _zone_txt)


async def test_unsigned_bytes_are_refused_at_the_hand_off_when_dkim_is_configured(tmp_path: Path) -> None:
    dkim_section, _, _ = _our_keys(tmp_path)
    config: Config = make_config(tmp_path, f"sqlite:///{tmp_path}/c.db", dkim=dkim_section)
    worker = ConfirmWorker(config, store=None)  # type: ignore[arg-type]
    with pytest.raises(UnsignedMail):
        await worker._deliver(b"From: abuse@example.org\r\n\r\nx\r\n", "<x@example.org>", "a@b.example")
    job = OutboxJob(
        1, "ABU-5WYT-GPHW", "confirmation", "a@spf-pass.net", "m@example.org", None, 0, datetime.now(UTC)
    )
    from gateway.confirm import build_message

    assert worker.outbound_bytes(build_message(config, job, worker.key)).startswith(b"DKIM-Signature:")


# ---- keys ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["rsa", "ed25519"])
def test_keygen_writes_the_key_0600_and_prints_a_txt_record_the_verifier_accepts(
    tmp_path: Path, algorithm: str
) -> None:
    selector = f"k{uuid.uuid4().hex[:8]}"
    key_file = tmp_path / "keys" / f"{selector}.key"
    config = tmp_path / "gateway.toml"
    config.write_text(
        f'[store]\nurl = "sqlite:///{tmp_path}/c.db"\n[confirm]\nfrom = "abuse@example.org"\n'
        f'secret_file = "{tmp_path}/reply-token.key"\n'
    )
    out = run_cli(
        config, "dkim", "keygen", "--selector", selector, "--algorithm", algorithm, "--out", str(key_file)
    )
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    line = next(line for line in out.splitlines() if "IN TXT" in line)
    assert line.startswith(f"{selector}._domainkey.example.org. IN TXT")
    value = "".join(re.findall(r'"([^"]*)"', line))
    assert value.startswith(f"v=DKIM1; k={algorithm}; p=")
    ZONE.publish_txt(f"{selector}._domainkey.example.org", value)
    section = f'[dkim]\nselector = "{selector}"\nkey_file = "{key_file}"\n'
    if algorithm == "ed25519":  # an ed25519 key signs beside an RSA one
        rsa_file = tmp_path / "keys" / "rsa.key"
        rsa_out = run_cli(config, "dkim", "keygen", "--selector", f"{selector}r", "--out", str(rsa_file))
        rsa_line = next(line for line in rsa_out.splitlines() if "IN TXT" in line)
        ZONE.publish_txt(f"{selector}r._domainkey.example.org", "".join(re.findall(r'"([^"]*)"', rsa_line)))
        section = (
            f'[dkim]\nselector = "{selector}r"\nkey_file = "{rsa_file}"\n'
            f'ed25519_selector = "{selector}"\ned25519_key_file = "{key_file}"\n'
        )
    config.write_text(config.read_text() + section)
    checked = run_cli(config, "check-config")
    assert f"dkim: {selector}._domainkey.example.org matches" in checked
    signer = Signer.from_config(make_config(tmp_path, "sqlite://", **_toml_dkim(section)))
    assert signer is not None
    signed = signer.sign(_report("example.org"))
    assert len(independent_verify(signed, _zone_txt)) == (2 if algorithm == "ed25519" else 1)
    # A key that does not match what is published is reported, not silently accepted.
    ZONE.unpublish(f"{selector}._domainkey.example.org")
    ZONE.publish_txt(f"{selector}._domainkey.example.org", generate_key(algorithm)[1])
    assert "does not match" in run_cli(config, "check-config")


def _toml_dkim(section: str) -> dict[str, Any]:
    import tomllib

    return tomllib.loads(section)


def test_keygen_never_overwrites_and_a_shared_key_file_is_refused(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from gateway.cli import main

    key_file = tmp_path / "k.key"
    key_file.write_text("existing")
    result = CliRunner().invoke(main, ["dkim", "keygen", "--selector", "s", "--out", str(key_file)])
    assert result.exit_code == 2 and key_file.read_text() == "existing"
    private, _ = generate_key("rsa")
    shared = tmp_path / "shared.key"
    shared.write_bytes(private)
    shared.chmod(0o644)
    config = tmp_path / "g.toml"
    config.write_text(
        f'[dkim]\nselector = "s"\nkey_file = "{shared}"\n[confirm]\nsecret_file = "{tmp_path}/r"\n'
    )
    result = CliRunner().invoke(main, ["check-config", "--config", str(config)])
    assert result.exit_code == 2 and "readable by others" in result.output


def test_the_built_in_localhost_from_is_exempt_so_the_tour_gets_its_confirmation(
    gateway_factory: Callable[..., RunningGateway], smtp_sink: Sink
) -> None:
    """`abuse@localhost` is the development default: no domain of ours to align with, nobody real to
    backscatter to; any real [confirm] from is held to the rule (the tests above)."""
    gateway = _auth_gateway(gateway_factory, smtp_sink, confirm={"from": "abuse@localhost"})
    gateway.send(_report("forged.net"), mail_from="reporter@forged.net")
    smtp_sink.wait_for(1)
    assert _only_row(gateway)["state"] == "sent"


# ---- the pieces --------------------------------------------------------------------------------------------


def test_every_check_asks_the_configured_server_spf_dkim_and_dmarc_alike(tmp_path: Path) -> None:
    """pyspf and dkimpy bring DNS lookups of their own; ours replace them, so the zone's server sees
    each question (a lookup through the host's resolver would not reach it)."""
    checker = Checker(make_config(tmp_path, "sqlite://"))
    key = _publish_key("dkim-signer.net")
    ZONE.asked.clear()
    result = checker.check(
        Signer([key]).sign(_report("dkim-signer.net")),
        "reporter@dkim-signer.net",
        "127.0.0.1",
        "client.test",
        "dkim-signer.net",
    )
    assert (result.spf, result.dkim, result.dmarc, result.sender) == ("fail", "pass", "pass", "pass")
    assert ZONE.asked["dkim-signer.net"] == 1  # SPF
    assert ZONE.asked[f"{key.selector}._domainkey.dkim-signer.net"] == 1  # DKIM
    assert ZONE.asked["_dmarc.dkim-signer.net"] == 1  # DMARC
    assert result.queries == 3


def test_dmarc_falls_back_to_the_organizational_domain(tmp_path: Path) -> None:
    checker = Checker(make_config(tmp_path, "sqlite://"))
    result = checker.check(
        _report("mail.sub-dmarc.net"), "r@mail.sub-dmarc.net", "127.0.0.1", "c.test", "mail.sub-dmarc.net"
    )
    assert "dmarc=pass policy.p=none header.from=mail.sub-dmarc.net" in result.summary


def test_dmarc_records_are_read_as_rfc_7489_says() -> None:
    from parsers.mailauth import parse_dmarc

    policy = parse_dmarc("v=DMARC1; p=reject; sp=none; adkim=s; aspf=r; pct=50")
    assert policy is not None and (policy.p, policy.sp, policy.adkim, policy.pct) == (
        "reject",
        "none",
        "s",
        50,
    )
    assert parse_dmarc("v=spf1 -all") is None
    assert parse_dmarc("p=reject; v=DMARC1") is None  # v= must come first
    assert parse_dmarc("v=DMARC1; p=bogus") is None
    assert parse_dmarc("v=DMARC1; p=bogus; rua=mailto:a@b.example").p == "none"  # type: ignore[union-attr]


def test_alignment_is_relaxed_by_organizational_domain_or_strict_by_name() -> None:
    from parsers.mailauth import aligned

    assert aligned("mail.example.co.uk", "example.co.uk", "r")
    assert not aligned("mail.example.co.uk", "example.co.uk", "s")
    assert not aligned("other.co.uk", "example.co.uk", "r")  # a public suffix is no organization


def test_authentication_results_are_parsed_and_written_without_a_senders_syntax() -> None:
    from parsers.mailauth import ResultEntry, format_results, parse_authentication_results

    authserv, entries = parse_authentication_results(
        "mx.upstream.example (comment; with semicolon);\r\n spf=pass (ok) smtp.mailfrom=a.example;"
        ' dkim=fail header.d="b.example" header.s=sel; garbage'
    )
    assert authserv == "mx.upstream.example"
    assert [(e.method, e.result) for e in entries] == [("spf", "pass"), ("dkim", "fail")]
    assert entries[1].prop("header.d") == "b.example"
    hostile = ResultEntry("spf", "pass", (("smtp.mailfrom", "x;\r\nBcc: y@z (evil)"),))
    line = format_results("mx.test.example", (hostile,))
    assert "\n" not in line and ";" not in line.partition("; ")[2] and "(" not in line


def test_a_reload_rotates_to_the_new_selector_and_keeps_the_old_keys_when_the_new_ones_are_unusable(
    tmp_path: Path,
) -> None:
    from gateway.signing import reloaded_signer

    first, _, _ = _our_keys(tmp_path)
    current = Signer.from_config(make_config(tmp_path, "sqlite://", dkim=first))
    rotated, rsa, _ = _our_keys(tmp_path)
    new = reloaded_signer(make_config(tmp_path, "sqlite://", dkim=rotated), current)
    assert new is not current and new is not None and new.keys[0].selector == rsa
    broken = tmp_path / "broken.key"
    write_key(broken, b"not a key")
    unusable = rotated | {"key_file": str(broken)}
    assert reloaded_signer(make_config(tmp_path, "sqlite://", dkim=unusable), new) is new
