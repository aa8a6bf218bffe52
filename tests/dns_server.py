"""A real DNS server for the tests (issue 22): dnslib, on 127.0.0.1, UDP and TCP on one port, answering
from zone text (tests/data/mailauth.zone) and whatever a test publishes. Every other name is NXDOMAIN;
a name in `servfail` answers SERVFAIL (the temporary failure a resolver times out into, without waiting);
a name in `hang` never answers.

The suite starts one for the whole session (tests/conftest.py) and points every gateway at it, so no test
ever asks the host's resolver.
"""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path
from typing import Any

from dnslib import QTYPE, RCODE, RR, DNSRecord
from dnslib.server import BaseResolver, DNSLogger, DNSServer

ZONE = Path(__file__).with_name("data") / "mailauth.zone"


class ZoneResolver(BaseResolver):  # type: ignore[misc]
    def __init__(self, zone_text: str = "") -> None:
        self.lock = threading.Lock()
        self.records: dict[tuple[str, str], list[RR]] = {}
        self.servfail: set[str] = set()
        # Names that never answer (a sender's nameserver that hangs): the handler thread waits, then drops
        # the query's answer; `release` ends every wait at once (a test's teardown).
        self.hang: set[str] = set()
        self.release = threading.Event()
        self.asked: Counter[str] = Counter()
        if zone_text:
            self.load(zone_text)

    def load(self, zone_text: str) -> None:
        for rr in RR.fromZone(zone_text):
            self._add(rr)

    def _add(self, rr: RR) -> None:
        key = (str(rr.rname).lower().rstrip("."), QTYPE[rr.rtype])
        with self.lock:
            self.records.setdefault(key, []).append(rr)

    def publish_txt(self, name: str, value: str) -> None:
        """A TXT record, its value split into 255-byte strings."""
        chunks = " ".join(f'"{value[i : i + 255]}"' for i in range(0, len(value), 255))
        self.load(f"{name.rstrip('.')}. 60 IN TXT {chunks}")

    def unpublish(self, name: str) -> None:
        with self.lock:
            for key in [k for k in self.records if k[0] == name.lower().rstrip(".")]:
                del self.records[key]

    def resolve(self, request: DNSRecord, handler: Any) -> DNSRecord:
        reply = request.reply()
        name = str(request.q.qname).lower().rstrip(".")
        qtype = QTYPE[request.q.qtype]
        with self.lock:
            self.asked[name] += 1
            hangs = name in self.hang
        if hangs:
            self.release.wait(10)
            reply.header.rcode = RCODE.SERVFAIL  # long after any resolver of ours gave up
            return reply
        with self.lock:
            if name in self.servfail:
                reply.header.rcode = RCODE.SERVFAIL
                return reply
            found = list(self.records.get((name, qtype), []))
            exists = any(k[0] == name for k in self.records)
        for rr in found:
            reply.add_answer(rr)
        if not found and not exists:
            reply.header.rcode = RCODE.NXDOMAIN
        return reply


class LocalDns:
    """The running server: `address` is what `[dns] nameservers` names."""

    def __init__(self, resolver: ZoneResolver) -> None:
        self.resolver = resolver
        logger = DNSLogger(log="-request,-reply,-truncated,-error,-recv,-send,-data", prefix=False)
        self.udp = DNSServer(resolver, address="127.0.0.1", port=0, logger=logger)
        self.port = int(self.udp.server.server_address[1])
        self.tcp = DNSServer(resolver, address="127.0.0.1", port=self.port, tcp=True, logger=logger)
        self.udp.start_thread()
        self.tcp.start_thread()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        for server in (self.udp, self.tcp):
            server.stop()
            server.server.server_close()


def start_test_dns() -> LocalDns:
    return LocalDns(ZoneResolver(ZONE.read_text()))
