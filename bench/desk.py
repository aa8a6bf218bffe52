"""`python -m bench.desk [--messages N] [--db PATH] [--queries K]`: the web desk's queries on a large store.

What the desk's queue (`storage/queue.py`, keyset pages) and search (`storage.search.find_cases`, a case ID
through `show_case`) cost on a store of N messages (default 1,000,000: the benchmark's preload, a case
per four messages, then `preload.annotate_for_desk` for assignees, kinds and flags). p50/p95/max over K
runs of each shape, after one warm-up run (a desk's second query finds the page cache warm).

The store is built once and kept: at `--db`, else `$ABUSE_GATEWAY_BENCH_DESK_DB`, else a scratch file
removed afterwards (a 1 M build takes ~2 minutes and ~5 GB). `--pg-url` fills a PostgreSQL store of the
same shape (`preload.preload_pg`, ~2 minutes for 1 M) unless it holds cases, then measures it; `--url`
measures any existing store and builds nothing.

`measure(shapes, runs)` takes one callable per query shape, so the web desk's HTTP round trips can be
timed the same way beside these (pass `{"http_queue": lambda i: client.get("/")}`).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from bench import preload

ENV_DB = "ABUSE_GATEWAY_BENCH_DESK_DB"
Shape = Callable[[int], object]


def measure(shapes: Mapping[str, Shape], runs: int) -> dict[str, dict[str, float]]:
    """p50/p95/max milliseconds of each shape over `runs` calls (the run number is passed in, so a shape
    can vary its query), after one untimed warm-up call."""
    results: dict[str, dict[str, float]] = {}
    for name, shape in shapes.items():
        shape(0)
        samples = []
        for i in range(runs):
            started = time.perf_counter()
            shape(i)
            samples.append((time.perf_counter() - started) * 1000)
        samples.sort()
        results[name] = {
            "p50_ms": round(statistics.median(samples), 1),
            "p95_ms": round(samples[max(0, int(len(samples) * 0.95 + 0.5) - 1)], 1),
            "max_ms": round(samples[-1], 1),
        }
    return results


def build(db: Path, n: int) -> dict[str, Any]:
    """A store of `n` preloaded messages at `db`, unless one is there already (then it is reused)."""
    from storage import schema
    from storage.engine import make_engine

    if db.exists():
        return {"reused": str(db)}
    engine = make_engine(f"sqlite:///{db}")
    schema.upgrade(engine)
    engine.dispose()
    started = time.monotonic()
    loaded = preload.preload(db, n, time_limit=3600)
    annotated = preload.annotate_for_desk(db)
    return {
        "built": str(db),
        "preload": loaded,
        "annotate": annotated,
        "seconds": round(time.monotonic() - started, 1),
    }


def build_pg(url: str, n: int) -> dict[str, Any]:
    """A PostgreSQL store of `n` messages at `url`, unless it holds cases already (then it is reused)."""
    from storage import schema
    from storage.engine import make_engine
    from storage.search import CaseFilter, find_cases

    engine = make_engine(url)
    schema.upgrade(engine)
    filled = bool(find_cases(engine, CaseFilter(), limit=1).rows)
    engine.dispose()
    if filled:
        return {"reused": url.split("@")[-1]}
    return {"built": url.split("@")[-1], "preload": preload.preload_pg(url, n)}


def shapes(store: Any, n: int, queries: int) -> dict[str, Shape]:
    """The desk's queries: the queue (page 1, filtered, page 100 by cursor) and each search path."""
    from storage.search import CaseFilter, find_cases

    engine = store.engine
    rng = random.Random(7)
    picks = [rng.randrange(0, n // 4) * 4 for _ in range(max(queries, 1))]
    # Page 100 is reached once by walking the cursors; timing then asks for it directly, as a desk user
    # following "older" links ends up asking for it.
    before = None
    for _ in range(99):
        before = store.desk.queue(before=before).next_cursor
    page_100 = before
    case_ids = [row["case_id"] for row in find_cases(engine, CaseFilter(), limit=2000).rows]
    deep_ids = [store.desk.queue(before=page_100, limit=50).rows[-1].case_id]

    def queue_page_1(_: int) -> None:
        assert len(store.desk.queue().rows) == 50

    def queue_status_open(_: int) -> None:
        assert len(store.desk.queue(status="open").rows) == 50

    def queue_status_closed_page_2(_: int) -> None:
        first = store.desk.queue(status="closed")
        assert len(store.desk.queue(status="closed", before=first.next_cursor).rows) == 50

    def queue_page_100(_: int) -> None:
        assert len(store.desk.queue(before=page_100).rows) == 50

    def queue_assignee(_: int) -> None:
        assert store.desk.queue(assignee="analyst3").rows

    def queue_flag_unverified(_: int) -> None:
        assert store.desk.queue(flag="unverified_sender").rows

    def queue_flag_processing_failed(_: int) -> None:
        assert store.desk.queue(flag="processing_failed").rows

    def queue_flag_csam(_: int) -> None:
        assert store.desk.queue(flag="csam").rows

    def queue_kind_machine(_: int) -> None:
        assert store.desk.queue(kind="machine_report").rows

    def search_text(i: int) -> None:
        assert find_cases(engine, CaseFilter(text=f"login-{picks[i % len(picks)]}.bad.example")).rows

    def search_indicator(i: int) -> None:
        host = f"bad{picks[i % len(picks)] % 977}.example"
        assert find_cases(engine, CaseFilter(indicator=(host, host))).rows

    def search_reporter(i: int) -> None:
        assert find_cases(
            engine, CaseFilter(reporter=f"reporter{picks[i % len(picks)] % 997}@reporter.example.net")
        ).rows

    def search_case_id(i: int) -> None:
        wanted = (case_ids + deep_ids)[i % (len(case_ids) + 1)]
        assert store.desk.case_exists(wanted) and store.show_case(wanted) is not None

    return {
        "queue_page_1": queue_page_1,
        "queue_status_open": queue_status_open,
        "queue_status_closed_page_2": queue_status_closed_page_2,
        "queue_page_100_cursor": queue_page_100,
        "queue_assignee": queue_assignee,
        "queue_kind_machine_report": queue_kind_machine,
        "queue_flag_unverified_sender": queue_flag_unverified,
        "queue_flag_processing_failed": queue_flag_processing_failed,
        "queue_flag_csam": queue_flag_csam,
        "search_text_rare_word": search_text,
        "search_indicator_domain": search_indicator,
        "search_reporter": search_reporter,
        "search_case_id_show": search_case_id,
    }


def table(results: Mapping[str, Mapping[str, float]]) -> str:
    width = max(len(name) for name in results)
    lines = [f"{'query':<{width}}  {'p50 ms':>8}  {'p95 ms':>8}  {'max ms':>8}"]
    for name, figures in results.items():
        lines.append(
            f"{name:<{width}}  {figures['p50_ms']:>8}  {figures['p95_ms']:>8}  {figures['max_ms']:>8}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.desk", description=__doc__)
    parser.add_argument("--messages", type=int, default=1_000_000, metavar="N")
    parser.add_argument("--db", default=os.environ.get(ENV_DB), help=f"keep the store here (${ENV_DB})")
    parser.add_argument("--url", default=None, help="measure this existing store; build nothing")
    parser.add_argument(
        "--pg-url",
        default=None,
        help="PostgreSQL: fill it (generate_series) when it has no case, then measure",
    )
    parser.add_argument("--queries", type=int, default=40, metavar="K")
    parser.add_argument("--json", default=None, metavar="FILE", help="also write the figures here")
    args = parser.parse_args()
    from storage.engine import make_engine
    from storage.store import CaseStore

    scratch = None
    info: dict[str, Any] = {"messages": args.messages}
    if args.url:
        url = args.url
    elif args.pg_url:
        info["store"] = build_pg(args.pg_url, args.messages)
        url = args.pg_url
    else:
        if args.db:
            db = Path(args.db)
        else:
            scratch = Path(tempfile.mkdtemp(prefix="bench-desk-"))
            db = scratch / "cases.db"
        info["store"] = build(db, args.messages)
        url = f"sqlite:///{db}"
    try:
        engine = make_engine(url)
        store = CaseStore(engine, new_case_id=lambda: "unused")
        results = measure(shapes(store, args.messages, args.queries), args.queries)
        engine.dispose()
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    print(json.dumps(info))
    print(table(results))
    if args.json:
        Path(args.json).write_text(json.dumps({**info, "results": results}, indent=2))


if __name__ == "__main__":
    main()
