"""What authentication costs per message (issue 22): SPF, DKIM and DMARC checks as intake runs them, DNS
queries per message, and DKIM signing of our outbound mail, against a local DNS server on 127.0.0.1.

    .venv/bin/python -m bench.mailauth            # ~20 s
    .venv/bin/python -m bench.mailauth --n 50     # fewer rounds

The checks run in intake, never before the SMTP reply (gateway/mailauth.py: started on a pool when an
entry is claimed, finished when it is prepared), so these figures are intake CPU and wait, not SMTP
latency. The DNS server is dnslib in this process on loopback: the waits here are a floor; a real
resolver adds its round trips (the queries-per-message column says how many).
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from dnslib import QTYPE, RCODE, RR
from dnslib.server import BaseResolver, DNSLogger, DNSServer

from gateway.config import Config
from gateway.mailauth import Checker
from gateway.signing import Signer, SigningKey, generate_key

ZONE = """
pass.bench.     60 IN TXT "v=spf1 ip4:192.0.2.1 ip4:127.0.0.1 -all"
_dmarc.pass.bench. 60 IN TXT "v=DMARC1; p=reject"
inc.bench.      60 IN TXT "v=spf1 include:a.inc.bench include:b.inc.bench -all"
a.inc.bench.    60 IN TXT "v=spf1 ip4:192.0.2.0/24 a:mx.inc.bench -all"
b.inc.bench.    60 IN TXT "v=spf1 ip4:127.0.0.1 -all"
mx.inc.bench.   60 IN A 192.0.2.77
_dmarc.inc.bench. 60 IN TXT "v=DMARC1; p=none"
signed.bench.   60 IN TXT "v=spf1 ip4:192.0.2.9 -all"
_dmarc.signed.bench. 60 IN TXT "v=DMARC1; p=quarantine"
forged.bench.   60 IN TXT "v=spf1 ip4:192.0.2.10 -all"
_dmarc.forged.bench. 60 IN TXT "v=DMARC1; p=reject"
reporter.example.net. 60 IN TXT "v=spf1 ip4:127.0.0.1 -all"
_dmarc.reporter.example.net. 60 IN TXT "v=DMARC1; p=none"
"""


class _Zone(BaseResolver):  # type: ignore[misc]
    def __init__(self, text: str) -> None:
        self.records: dict[tuple[str, str], list[RR]] = {}
        self.asked: Counter[str] = Counter()
        self.lock = threading.Lock()
        self.load(text)

    def load(self, text: str) -> None:
        for rr in RR.fromZone(text):
            self.records.setdefault((str(rr.rname).lower().rstrip("."), QTYPE[rr.rtype]), []).append(rr)

    def resolve(self, request: Any, handler: Any) -> Any:
        reply = request.reply()
        name = str(request.q.qname).lower().rstrip(".")
        with self.lock:
            self.asked[name] += 1
        found = self.records.get((name, QTYPE[request.q.qtype]), [])
        for rr in found:
            reply.add_answer(rr)
        if not found and not any(k[0] == name for k in self.records):
            reply.header.rcode = RCODE.NXDOMAIN
        return reply


def start_dns(zone_text: str = ZONE) -> tuple[DNSServer, _Zone, int]:
    """The benchmark's nameserver on 127.0.0.1 (UDP, a thread of this process): the end-to-end bench
    points the gateway's [dns] at it, so intake's checks never ask the host's resolver."""
    zone = _Zone(zone_text)
    quiet = DNSLogger(log="-request,-reply,-truncated,-error,-recv,-send,-data", prefix=False)
    server = DNSServer(zone, address="127.0.0.1", port=0, logger=quiet)
    server.start_thread()
    return server, zone, int(server.server.server_address[1])


def _report(domain: str) -> bytes:
    body = (
        "Phishing at hxxp://login.bad.example/ seen from 203.0.113.5, headers attached.\r\n" * 25
    ).encode()
    return (
        f"From: Reporter <reporter@{domain}>\r\nTo: abuse@example.org\r\nSubject: Phishing report\r\n"
        f"Date: Wed, 02 Dec 2026 05:00:00 +0000\r\nMessage-ID: <bench@{domain}>\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
    ).encode() + body


def _stats(values: list[float]) -> tuple[float, float]:
    values = sorted(values)
    return statistics.median(values), values[max(int(len(values) * 0.95) - 1, 0)]


def measure(n: int = 200) -> dict[str, Any]:
    """The checks and signing, `n` messages per case; `python -m bench` runs this as its mailauth phase."""
    server, zone, port = start_dns()
    rsa_private, rsa_record = generate_key("rsa")
    ed_private, ed_record = generate_key("ed25519")
    zone.load(f'r1._domainkey.signed.bench. 60 IN TXT "{rsa_record[:255]}" "{rsa_record[255:]}"')
    zone.load(f'e1._domainkey.signed.bench. 60 IN TXT "{ed_record}"')
    rsa = Signer([SigningKey("rsa-sha256", "r1", "signed.bench", rsa_private)])
    both = Signer([*rsa.keys, SigningKey("ed25519-sha256", "e1", "signed.bench", ed_private.strip())])
    config = Config.model_validate(
        {"dns": {"nameservers": [f"127.0.0.1:{port}"]}, "smtp": {"hostname": "mx.bench"}}
    )
    checker = Checker(config)
    cases = {
        "spf pass, no signature": ("pass.bench", _report("pass.bench")),
        "spf via 2 includes + a:": ("inc.bench", _report("inc.bench")),
        "spf fail, dkim rsa pass": ("signed.bench", rsa.sign(_report("signed.bench"))),
        "spf fail, rsa + ed25519": ("signed.bench", both.sign(_report("signed.bench"))),
        "forged (spf fail, no sig)": ("forged.bench", _report("forged.bench")),
    }
    checks: dict[str, dict[str, Any]] = {}
    for label, (domain, raw) in cases.items():
        times, queries, verdicts = [], [], Counter[str]()
        for _ in range(n):
            started = time.perf_counter()
            result = checker.check(raw, f"reporter@{domain}", "127.0.0.1", "client.bench", domain)
            times.append((time.perf_counter() - started) * 1000)
            queries.append(result.queries)
            verdicts[result.sender] += 1
        p50, p95 = _stats(times)
        checks[label] = {
            "p50_ms": round(p50, 2),
            "p95_ms": round(p95, 2),
            "dns_queries": statistics.mean(queries),
        }
        checks[label]["sender"] = dict(verdicts)
    signing: dict[str, dict[str, float]] = {}
    for label, signer in (("sign rsa-sha256", rsa), ("sign rsa + ed25519", both)):
        message = _report("example.org")
        times = []
        for _ in range(n):
            started = time.perf_counter()
            signer.sign(message)
            times.append((time.perf_counter() - started) * 1000)
        p50, p95 = _stats(times)
        signing[label] = {"p50_ms": round(p50, 2), "p95_ms": round(p95, 2)}
    server.stop()
    return {"checks": checks, "signing": signing, "n": n}


def print_table(results: dict[str, Any]) -> None:
    print(f"\n== mail authentication (issue 22), {results['n']} messages per case, DNS on 127.0.0.1 ==")
    print("  in intake, never before the SMTP reply; signing in the outbox worker")
    print(f"  {'case':<28} {'p50 ms':>8} {'p95 ms':>8} {'DNS q/msg':>10}  sender")
    for label, row in results["checks"].items():
        verdicts = ", ".join(f"{k}={v}" for k, v in row["sender"].items())
        queries = row["dns_queries"]
        print(f"  {label:<28} {row['p50_ms']:>8.2f} {row['p95_ms']:>8.2f} {queries:>10.1f}  {verdicts}")
    for label, row in results["signing"].items():
        print(f"  {label:<28} {row['p50_ms']:>8.2f} {row['p95_ms']:>8.2f} {0:>10}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=200, help="messages per case")
    parser.add_argument("--json", default="bench/results/mailauth.json")
    args = parser.parse_args()
    results = measure(args.n)
    print_table(results)
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
