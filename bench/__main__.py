"""`python -m bench [--quick] [--preload N] [--json out.json] [--profile] [--keep]`"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import client, escaping, ingest, preload, report, servers, smtpsource
from bench.plan import FULL, QUICK, Plan
from bench.store_probe import StoreProbe

DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "latest.json"


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def matrix_specs(plan: Plan, procs: int) -> list[tuple[int, int, int, client.LoadSpec]]:
    specs = []
    for size in plan.sizes:
        budget = plan.cell_max_small if size <= 4096 else plan.cell_max_large
        for sessions in plan.concurrency:
            for per_conn in (1, plan.per_conn_many):
                spec = client.LoadSpec(
                    port=0,
                    sessions=sessions,
                    per_conn=per_conn,
                    size=size,
                    max_messages=budget,
                    duration=plan.cell_seconds,
                    procs=procs,
                )
                specs.append((sessions, per_conn, size, spec))
    return specs


def _with_port(spec: client.LoadSpec, port: int) -> client.LoadSpec:
    return client.LoadSpec(**{**spec.__dict__, "port": port})


class Run:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.plan = QUICK if args.quick else FULL
        self.procs = args.client_procs or client.client_procs_default()
        self.workdir = Path(tempfile.mkdtemp(prefix="abuse-gw-bench-", dir=args.tmp))
        self.db = self.workdir / "cases.db"
        self.probe = StoreProbe(self.db)
        self.deadline = time.monotonic() + args.max_minutes * 60
        self.results: dict[str, Any] = {
            "started": datetime.now(UTC).isoformat(timespec="seconds"),
            "quick": self.plan.quick,
            "host": {"python": platform.python_version(), "cpus": os.cpu_count(), "load": os.getloadavg()},
            "client_procs": self.procs,
            "workers": args.workers,
            "env": {k: v for k, v in os.environ.items() if k.startswith("ABUSE_GATEWAY_")},
            "log_level": args.log_level,
            "workdir": str(self.workdir),
            "plan": self.plan.__dict__,
        }
        self.gateway: servers.Server | None = None
        from bench.mailauth import start_dns

        self.dns, _, dns_port = start_dns()  # intake's SPF/DKIM/DMARC checks ask it (issue 22)
        self.config = servers.gateway_config(
            self.workdir,
            servers.free_port(),
            args.log_level,
            max(64 * 1024 * 1024, self.plan.rss_bytes * 2),
            dns=f"127.0.0.1:{dns_port}",
        )

    def time_left(self) -> bool:
        return time.monotonic() < self.deadline

    # ---- phases ---------------------------------------------------------------------------------------

    def setup(self) -> None:
        log(f"workdir {self.workdir}; db upgrade")
        servers.gateway_cli(self.config, "db", "upgrade", timeout=120)
        if self.args.preload:
            log(f"preloading {self.args.preload} messages")
            self.results["preload"] = preload.preload(self.db, self.args.preload)
            log(f"preloaded: {self.results['preload']}")

    def escaping(self) -> None:
        log("escaping: pathological 1 MB inputs")
        self.results["escaping"] = escaping.run(limit=self.plan.escape_limit)

    def mailauth(self) -> None:
        from bench import mailauth

        log("mail authentication: SPF/DKIM/DMARC checks and DKIM signing per message")
        self.results["mailauth"] = mailauth.measure(50 if self.plan.quick else 200)

    def sink(self) -> None:
        sink = servers.start_sink(self.workdir, servers.free_port())
        try:
            for sessions, per_conn, size, spec in matrix_specs(self.plan, self.procs):
                if not self.time_left():
                    break
                res = client.run_load(_with_port(spec, sink.port))
                self._cell(sessions, per_conn, size)["sink"] = res.summary()
                log(f"sink {sessions}x{per_conn} {size}: {res.rate:.0f}/s")
            if smtpsource.available():
                n = 600 if self.plan.quick else 3000
                self.results.setdefault("smtp_source", {})["sink, 1 msg/conn"] = smtpsource.run(
                    sink.port, 50, 2048, n, persistent=False, timeout=60
                )
                self.results["smtp_source"]["sink, persistent (-d)"] = smtpsource.run(
                    sink.port, 50, 2048, n, persistent=True, timeout=60
                )
            else:
                self.results["smtp_source"] = {"skipped": {"skipped": "smtp-source not installed"}}
        finally:
            sink.stop()

    def start_gateway(self) -> servers.Server:
        port = int(self.config.read_text().split("127.0.0.1:")[1].split('"')[0])
        self.gateway = servers.start_gateway(self.workdir, self.config, port, self.args.workers)
        return self.gateway

    def stop_gateway(self) -> None:
        if self.gateway is not None:
            self.gateway.stop(timeout=15)  # SIGTERM; SIGKILL to our own child if its drain runs longer
            self.gateway = None

    def gateway_phases(self) -> None:
        """End-to-end phases first, on a fresh gateway with an empty backlog; then the intake matrix."""
        gw = self.start_gateway()
        self._e2e_phases(gw)
        self.gateway_matrix(gw)

    def gateway_matrix(self, gw: servers.Server) -> None:
        for sessions, per_conn, size, spec in matrix_specs(self.plan, self.procs):
            if not self.time_left():
                break
            cell = self._cell(sessions, per_conn, size)
            _drained, _ = self.probe.wait_drained(0, self.plan.drain_wait)
            before = self.probe.max_inbox_id()
            cell["backlog_before"] = self.probe.pending()
            res = client.run_load(_with_port(spec, gw.port))
            cell["gateway"] = res.summary()
            cell["backlog_after"] = self.probe.pending()
            cell["lag"] = self.probe.lag(before)
            sink_rate = (cell.get("sink") or {}).get("msgs_per_s")
            cell["ratio"] = round(res.rate / sink_rate, 3) if sink_rate else None
            log(
                f"gateway {sessions}x{per_conn} {size}: {res.rate:.0f}/s p99 {cell['gateway']['p99_ms']} ms "
                f"backlog {cell['backlog_after']}"
            )
        if smtpsource.available() and self.time_left():
            self.probe.wait_drained(0, self.plan.drain_wait)
            n = 200 if self.plan.quick else 2000
            self.results.setdefault("smtp_source", {})["gateway, 1 msg/conn"] = smtpsource.run(
                gw.port, 50, 2048, n, persistent=False, timeout=120
            )
            self.probe.wait_drained(0, self.plan.drain_wait)
            self.results["smtp_source"]["gateway, persistent (-d)"] = smtpsource.run(
                gw.port, 50, 2048, n, persistent=True, timeout=120
            )

    def _e2e_phases(self, gw: servers.Server) -> None:
        e2e = self.results.setdefault("e2e", {})
        plan = self.plan
        phases = [
            (
                "max-rate 50 sessions 2KB",
                client.LoadSpec(
                    port=gw.port,
                    sessions=50,
                    per_conn=plan.per_conn_many,
                    size=2048,
                    max_messages=int(plan.fixed_seconds * 1500),
                    duration=plan.fixed_seconds / 2,
                    procs=self.procs,
                ),
            ),
            (
                f"fixed {plan.fixed_rate:.0f}/s for {plan.fixed_seconds:.0f}s 2KB",
                client.LoadSpec(
                    port=gw.port,
                    sessions=50,
                    per_conn=plan.per_conn_many,
                    size=2048,
                    max_messages=int(plan.fixed_rate * plan.fixed_seconds),
                    duration=plan.fixed_seconds,
                    rate=plan.fixed_rate,
                    procs=self.procs,
                ),
            ),
        ]
        for name, spec in phases:
            if not self.time_left():
                break
            self.probe.wait_drained(0, plan.final_drain)
            backlog = self.probe.pending()
            before = self.probe.max_inbox_id()
            sampler = self._sampler(gw, name, spec.duration + 1)
            res = client.run_load(spec)
            after = self.probe.max_inbox_id()
            drained, waited = self.probe.wait_drained(before, plan.final_drain)
            row: dict[str, Any] = {
                "load": res.summary(),
                "drained": drained,
                "drain_wait_s": round(waited, 1),
                "backlog_before": backlog,
                "offered_per_s": spec.rate,
            }
            row["lag"] = self.probe.lag(before, after)
            if sampler is not None:
                row["profile"] = self._profile_done(sampler, name)
            e2e[name] = row
            log(
                f"{name}: accepted {res.rate:.0f}/s, stored {row['lag'].get('e2e_msgs_per_s')}/s, "
                f"lag p99 {row['lag'].get('lag_p99_s')} s, drained={drained}"
            )

    def rss(self) -> None:
        if not self.time_left():
            return
        self.stop_gateway()  # a fresh process, so VmHWM belongs to this test alone
        gw = self.start_gateway()
        plan = self.plan
        self.probe.wait_drained(0, plan.drain_wait)
        backlog = self.probe.pending()
        before = self.probe.max_inbox_id()
        base = gw.status()
        spec = client.LoadSpec(
            port=gw.port,
            sessions=plan.rss_sessions,
            per_conn=1,
            size=plan.rss_bytes,
            max_messages=plan.rss_sessions,
            duration=60,
            procs=min(self.procs, 4),
        )
        log(f"rss: {plan.rss_sessions} sessions x {plan.rss_bytes >> 20} MB")
        res = client.run_load(spec)
        after_smtp = gw.status()
        drained, _ = self.probe.wait_drained(before, plan.rss_drain)
        final = gw.status()
        children = gw.children_status()
        lag = self.probe.lag(before)
        self.results["rss"] = {
            "sessions": plan.rss_sessions,
            "size": plan.rss_bytes,
            "load": res.summary(),
            "rss_idle_mb": round(base.get("VmRSS", 0) / 1024, 1),
            "hwm_after_smtp_mb": round(after_smtp.get("VmHWM", 0) / 1024, 1),
            "hwm_listener_mb": round(final.get("VmHWM", 0) / 1024, 1),
            "hwm_children_mb": round(children.get("VmHWM", 0) / 1024, 1),
            "child_processes": children.get("count", 0),
            # The figure the target reads: the listener's peak plus its child processes' (intake, listeners).
            "hwm_mb": round((final.get("VmHWM", 0) + children.get("VmHWM", 0)) / 1024, 1),
            "processed": lag.get("processed"),
            "drained": drained,
            "lag": lag,
            "backlog_before": backlog,
        }
        log(f"rss: HWM {self.results['rss']['hwm_mb']} MB")
        self.stop_gateway()

    def ingest(self) -> None:
        if not self.time_left():
            return
        self.stop_gateway()
        log(f"ingest of {self.plan.ingest_count} messages")
        self.results["ingest_store"] = {"messages_before": self.probe.messages()}
        self.results["ingest"] = ingest.run(
            self.config, self.workdir, self.plan.ingest_count, self.plan.ingest_timeout
        )
        log(f"ingest: {self.results['ingest']}")

    # ---- helpers --------------------------------------------------------------------------------------

    def _cell(self, sessions: int, per_conn: int, size: int) -> dict[str, Any]:
        cells = self.results.setdefault("matrix", [])
        for c in cells:
            if (c["sessions"], c["per_conn"], c["size"]) == (sessions, per_conn, size):
                return c
        cell: dict[str, Any] = {"sessions": sessions, "per_conn": per_conn, "size": size}
        cells.append(cell)
        return cell

    def _sampler(self, gw: servers.Server, name: str, duration: float) -> Any:
        if not self.args.profile:
            return None
        from bench import profile

        out = self.workdir / f"profile-{len(list(self.workdir.glob('profile-*')))}.txt"
        return (profile.Sampler(gw.pid, out, duration), out)

    def _profile_done(self, sampler: Any, name: str) -> dict[str, Any]:
        from bench import profile

        s, out = sampler
        error = s.finish()
        if error:
            return {"error": error}
        keep = DEFAULT_JSON.parent / f"profile-{name.split()[0]}.collapsed"
        keep.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(out, keep)
        summary = profile.summarise(out)
        summary["collapsed"] = str(keep)
        return summary

    def execute(self) -> dict[str, Any]:
        started = time.monotonic()
        try:
            self.setup()
            self.escaping()
            self.mailauth()
            self.ingest()  # before the gateway runs, so its intake worker does not share the inbox
            self.sink()
            self.gateway_phases()
            self.rss()
        finally:
            self.stop_gateway()
            self.results["seconds"] = round(time.monotonic() - started, 1)
            if not self.args.keep:
                shutil.rmtree(self.workdir, ignore_errors=True)
        self.results["targets"] = report.targets(self.results)
        return self.results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="reduced run (~2 minutes)")
    parser.add_argument(
        "--preload", type=int, default=0, metavar="N", help="fill the store with N messages first"
    )
    parser.add_argument(
        "--json", type=Path, default=DEFAULT_JSON, help=f"figures as JSON (default {DEFAULT_JSON})"
    )
    parser.add_argument("--profile", action="store_true", help="py-spy the gateway in the end-to-end phases")
    parser.add_argument(
        "--client-procs", type=int, default=0, help="load generator processes (default: cpus, 2..8)"
    )
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        help="gateway log level (INFO, the production default)",
    )
    parser.add_argument(
        "--workers", type=int, default=1, help="listener processes: `serve --workers N` (SO_REUSEPORT)"
    )
    parser.add_argument("--max-minutes", type=float, default=0, help="skip phases not started by then")
    parser.add_argument("--tmp", default=None, help="parent of the scratch directory")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory (db, logs)")
    args = parser.parse_args(argv)
    if not args.max_minutes:
        args.max_minutes = 4 if args.quick else 12
    run = Run(args)
    results = run.execute()
    report.print_matrix(results.get("matrix", []))
    report.print_sections(results)
    report.print_targets(results["targets"])
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=1, default=str))
    print(f"\nfigures: {args.json}   ({results['seconds']} s, load avg at start {results['host']['load']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
