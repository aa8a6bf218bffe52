"""Per-message CPU of the stages of `gateway.prepare.prepare`, in µs (issue 18).

    python -m bench.parse_stages [--count N] [--rounds R]

Three inputs: ~2 KB reports from `bench.messages` (the common case), and two fixtures that take the
machine-report, forward and bounce paths (a person forwarding an ARF report, a DSN). Each stage is timed
alone with `time.process_time_ns`, best of `rounds`, so the figures are CPU, not wall clock on a shared box.
Works on the tree-based intake (one MIME parse) and on the bytes-based one it replaced.
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.messages import report
from gateway import prepare as intake
from parsers.auto import classify
from parsers.bounce import embedded_texts, returned_message_ids
from parsers.defang import defang
from parsers.forward import forwarded_messages
from parsers.message import parse_message
from parsers.reports import parse_machine_report
from storage.records import ClaimedEntry

try:  # the one-parse intake
    from parsers.mime import parse_tree
except ImportError:  # before issue 18: every consumer parsed the bytes itself
    parse_tree = None  # type: ignore[assignment]

_DATA = Path(__file__).resolve().parent.parent / "tests" / "data"


def _entry(raw: bytes, n: int) -> ClaimedEntry:
    sender, rcpts = "reporter@reporter.example.net", ("abuse@example.org",)
    return ClaimedEntry(n, raw, sender, rcpts, datetime.now(UTC), "", 1)


def _best(fn: Callable[[bytes], Any], raws: list[bytes], rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        start = time.process_time_ns()
        for raw in raws:
            fn(raw)
        best = min(best, (time.process_time_ns() - start) / len(raws) / 1000)
    return best


def _stages(raws: list[bytes], rounds: int) -> dict[str, float]:
    source: Callable[[bytes], Any] = parse_tree if parse_tree is not None else (lambda raw: raw)
    sources = {raw: source(raw) for raw in raws}
    parsed = {raw: parse_message(sources[raw]) for raw in raws}
    reports = {raw: parse_machine_report(sources[raw]) for raw in raws}

    def escape_and_indicators(raw: bytes) -> None:
        p = parsed[raw]
        subject, text = defang(p.subject), defang(p.text)
        intake._indicators(subject.indicators + text.indicators, p, reports[raw])

    def forward(raw: bytes) -> None:
        if intake._may_forward(parsed[raw]):
            forwarded_messages(sources[raw], parsed[raw].text)

    def bounce(raw: bytes) -> None:
        p = parsed[raw]
        if classify(p, "x@example.net", reports[raw]).kind == "automatic":
            returned_message_ids(sources[raw])
        if intake._has_embedded_message(p):
            embedded_texts(sources[raw])

    figures: dict[str, float] = {
        # fresh each time: a second parse_message of one tree would find its headers cached
        "parse (tree+fields)": _best(lambda raw: parse_message(source(raw)), raws, rounds),
        "report": _best(lambda raw: parse_machine_report(sources[raw]), raws, rounds),
        "classify": _best(lambda raw: classify(parsed[raw], "x@example.net", reports[raw]), raws, rounds),
        "escape+indicators": _best(escape_and_indicators, raws, rounds),
        "forward": _best(forward, raws, rounds),
        "bounce": _best(bounce, raws, rounds),
    }
    entries = {raw: _entry(raw, n) for n, raw in enumerate(raws)}
    figures["prepare()"] = _best(lambda raw: intake.prepare(entries[raw]), raws, rounds)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    rng = random.Random(18)
    inputs = {
        "2 KB report": [report(rng, 2048, n=n) for n in range(args.count)],
        "forwarded ARF": [(_DATA / "person_forwarded_arf.eml").read_bytes()] * max(1, args.count // 4),
        "DSN (postfix)": [(_DATA / "dsn_postfix.eml").read_bytes()] * max(1, args.count // 4),
    }
    tree = "yes" if parse_tree is not None else "no"
    print(f"one-parse tree: {tree}; µs per message, best of {args.rounds}")
    results = {name: _stages(raws, args.rounds) for name, raws in inputs.items()}
    stages = list(next(iter(results.values())))
    print(f"{'stage':<20}" + "".join(f"{name:>16}" for name in results))
    for stage in stages:
        print(f"{stage:<20}" + "".join(f"{results[name][stage]:>16.1f}" for name in results))


if __name__ == "__main__":
    main()
