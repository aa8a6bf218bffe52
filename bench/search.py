"""`python -m bench.search [--preload N] [--db PATH] [--queries K]`: the desk's search on a large store.

What `cases list --text` and `cases list --indicator` cost on a store of N messages (default 1,000,000,
the benchmark's preload: a case per four messages, two indicators per case): p50/p95 over K queries of
each shape, through `storage.search.find_cases`, the function the CLI (and the web desk) call. Shapes:
a rare word (one case), a common phrase (every message: the limit cuts and the total is counted), a
URL typed in its escaped form, a domain (also finds URLs on it and its subdomains), an exact URL.

A store made with `--db` is kept and reused by the next run with the same path (a 1 M preload takes
minutes); without `--db` a scratch store is made and removed.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench import preload


def _time(fn, runs: int) -> dict[str, float]:  # type: ignore[no-untyped-def]
    samples = []
    for i in range(runs):
        started = time.perf_counter()
        fn(i)
        samples.append((time.perf_counter() - started) * 1000)
    samples.sort()
    return {
        "p50_ms": round(statistics.median(samples), 1),
        "p95_ms": round(samples[max(0, int(len(samples) * 0.95) - 1)], 1),
        "max_ms": round(samples[-1], 1),
    }


def run(db: Path, n: int, queries: int) -> dict[str, object]:
    from storage import schema
    from storage.engine import make_engine
    from storage.search import CaseFilter, find_cases

    url = f"sqlite:///{db}"
    results: dict[str, object] = {"messages": n}
    fresh = not db.exists()
    engine = make_engine(url)
    schema.upgrade(engine)
    if fresh:
        started = time.monotonic()
        results["preload"] = preload.preload(db, n, time_limit=3600)
        results["preload_s"] = round(time.monotonic() - started, 1)
    rng = random.Random(7)
    picks = [rng.randrange(0, n // 4) * 4 for _ in range(queries)]

    def rare(i: int) -> None:
        assert find_cases(engine, CaseFilter(text=f"login-{picks[i]}")).rows, picks[i]

    def common(_: int) -> None:
        found = find_cases(engine, CaseFilter(text="phishing report"))
        assert len(found.rows) == 100 and found.total >= 100

    def escaped(i: int) -> None:
        find_cases(engine, CaseFilter(text=f"hxxps://login-{picks[i]}[.]bad[.]example/verify"))

    def domain(i: int) -> None:
        host = f"bad{picks[i] % 977}.example"
        assert find_cases(engine, CaseFilter(indicator=(host, host))).rows

    def exact_url(i: int) -> None:
        host = f"login-{picks[i]}.bad{picks[i] % 977}.example"
        value = f"https://{host}/verify?id={picks[i]}"
        assert find_cases(engine, CaseFilter(indicator=(value, None))).rows

    def queue(_: int) -> None:
        find_cases(engine, CaseFilter(status="open"))

    for name, fn in [
        ("text_rare_word", rare),
        ("text_common_phrase", common),
        ("text_escaped_url", escaped),
        ("indicator_domain", domain),
        ("indicator_exact_url", exact_url),
        ("queue_open_newest_100", queue),
    ]:
        fn(0)  # warm the page cache once, as a desk's second query would find it
        results[name] = _time(fn, queries)
    engine.dispose()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.search", description=__doc__)
    parser.add_argument("--preload", type=int, default=1_000_000, metavar="N")
    parser.add_argument("--db", default=None, help="keep the store here and reuse it next time")
    parser.add_argument("--queries", type=int, default=40, metavar="K")
    args = parser.parse_args()
    scratch = None
    if args.db:
        db = Path(args.db)
    else:
        scratch = Path(tempfile.mkdtemp(prefix="bench-search-"))
        db = scratch / "cases.db"
    try:
        results = run(db, args.preload, args.queries)
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    json.dump(results, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
