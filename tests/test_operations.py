"""Operations (issue 9): STARTTLS with the configured pair, SIGHUP reloads, the metrics endpoint."""

from __future__ import annotations

import hashlib
import signal
import smtplib
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests.conftest import RunningGateway, free_port, load_eml, self_signed_pair, wait_for_port

ROOT = Path(__file__).resolve().parents[1]
REPORT = load_eml("report_phishing.eml")


def _client_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # self-signed test pair; what we check is which cert is served
    return context


def _served_cert(port: int) -> str:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.ehlo("client.test")
        client.starttls(context=_client_context())
        der = client.sock.getpeercert(binary_form=True)
    return hashlib.sha256(der).hexdigest()


def _fingerprint(cert: Path) -> str:
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(cert.read_text())).hexdigest()


def test_starttls_upgrades_with_the_configured_certificate(
    gateway_factory, sqlite_url: str, tmp_path: Path
) -> None:
    cert, key = self_signed_pair(tmp_path, "mx-a")
    gateway = gateway_factory(sqlite_url, smtp={"tls_cert": str(cert), "tls_key": str(key)})
    assert _served_cert(gateway.port) == _fingerprint(cert)
    with smtplib.SMTP("127.0.0.1", gateway.port, timeout=10) as client:
        client.starttls(context=_client_context())
        client.sendmail("reporter@example.net", ["abuse@example.org"], REPORT)
    gateway.wait_idle()
    assert len(gateway.store.list_cases()) == 1


def test_require_tls_refuses_mail_before_starttls(gateway_factory, sqlite_url: str, tmp_path: Path) -> None:
    cert, key = self_signed_pair(tmp_path, "mx-a")
    gateway = gateway_factory(
        sqlite_url, smtp={"tls_cert": str(cert), "tls_key": str(key), "require_tls": True}
    )
    with smtplib.SMTP("127.0.0.1", gateway.port, timeout=10) as client:
        client.ehlo("client.test")
        code, _ = client.mail("reporter@example.net")
    assert code == 530


def test_sighup_picks_up_a_new_certificate_and_new_addresses(tmp_path: Path) -> None:
    cert, key = self_signed_pair(tmp_path, "mx-old")
    port = free_port()
    config = tmp_path / "gateway.toml"

    def write_config(addresses: list[str]) -> None:
        config.write_text(
            f'[smtp]\nlisten = ["127.0.0.1:{port}"]\ntls_cert = "{cert}"\ntls_key = "{key}"\n'
            f"[intake]\naddresses = {addresses!r}\n".replace("'", '"')
            + f'[store]\nurl = "sqlite:///{tmp_path}/cases.db"\nspool_dir = "{tmp_path}/spool"\n'
            f'[confirm]\nenabled = false\nsecret_file = "{tmp_path}/key"\n'
        )

    write_config(["abuse@example.org"])
    subprocess.run(
        [sys.executable, "-m", "gateway", "db", "upgrade", "--config", str(config)],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--config", str(config)], cwd=ROOT, stderr=subprocess.PIPE
    )
    try:
        wait_for_port(port)
        old = _fingerprint(cert)
        assert _served_cert(port) == old
        new_cert, new_key = self_signed_pair(tmp_path, "mx-new")
        new_cert.replace(cert)  # a renewal lands at the same paths
        new_key.replace(key)
        write_config(["abuse@example.org", "abuse@new.example"])
        proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while _served_cert(port) == old and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _served_cert(port) == _fingerprint(cert) != old
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
            client.ehlo("client.test")
            client.mail("reporter@example.net")
            assert client.rcpt("abuse@new.example")[0] == 250
    finally:
        proc.terminate()
        _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0
    assert b"reloaded: changed=tls,intake.addresses" in stderr


def test_metrics_endpoint_counts_mail_without_content(gateway_factory, sqlite_url: str) -> None:
    port = free_port()
    gateway: RunningGateway = gateway_factory(sqlite_url, metrics={"listen": f"127.0.0.1:{port}"})
    gateway.send(REPORT)
    with smtplib.SMTP("127.0.0.1", gateway.port, timeout=10) as client:
        client.ehlo("client.test")
        client.mail("x@example.net")
        client.rcpt("nobody@example.org")
    gateway.wait_idle()
    time.sleep(0.2)
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    for line in (
        'abuse_gateway_messages_accepted_total{stored_in="store"}',
        'abuse_gateway_messages_refused_total{reason="unknown_recipient"}',
        'abuse_gateway_cases_opened_total{kind="report"}',
        "abuse_gateway_processing_latency_seconds_bucket",
        "abuse_gateway_smtp_sessions",
        "abuse_gateway_inbox_depth",
        "abuse_gateway_spool_depth",
    ):
        assert line in body, line
    assert "login-bank" not in body and "reporter@example.net" not in body
