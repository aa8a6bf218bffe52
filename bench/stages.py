"""CPU per message by intake stage, from py-spy's collapsed stacks (`bench --profile` writes them).

    python -m bench.stages bench/results/profile-max-rate.collapsed --messages 12000 [--rate 200]

Each sample is charged to one stage: the deepest frame of ours that names one wins, so a query threading makes
is "thread", the same query under the commit is "commit", and a regex under escaping is "escape+indicators".
Samples in no stage (the event loop, the SMTP session, the inbox commit, idle waits py-spy still sees) are
grouped by process role so the intake's share stands apart. Works on stacks from any release: it matches
module paths, not functions, and knows the old homes (`gateway/intake.py:prepare`, `storage/store.py`).
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

# (stage, path fragments): the deepest matching frame of a stack decides. Order only breaks ties in a frame.
STAGES: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "parse",
        (
            "parsers/message.py",
            "parsers/mime.py",
            "parsers/headers.py",
            "parsers/bodies.py",
            "parsers/attachments.py",
            "parsers/html_text.py",
            "parsers/received.py",
        ),
    ),
    ("classify", ("parsers/auto.py", "parsers/reports.py", "parsers/forward.py", "parsers/bounce.py")),
    (
        "escape+indicators",
        ("parsers/urlscan.py", "parsers/escape.py", "parsers/defang.py", "parsers/indicators.py"),
    ),
    ("hashes+csam", ("parsers/content_hashes.py", "parsers/csam_terms.py", "gateway/known_material.py")),
    (
        "thread",
        ("gateway/threader.py", "parsers/case_ref.py", "parsers/reply_token.py", "storage/lookups.py"),
    ),
    (
        "commit",
        (
            "storage/intake_commit.py",
            "storage/links.py",
            "storage/store.py:commit_processed",
            "storage/store.py:_store_one",
            "storage/store.py:_open_case",
            "storage/store.py:_add_attachments",
            "storage/casework.py:link_same_reporter",
        ),
    ),
    ("claim", ("storage/claims.py", "storage/store.py:claim_inbox")),
    # issue 22: SPF, DKIM, DMARC on the intake's pool (libraries' frames included: the deepest ours wins)
    (
        "mailauth",
        ("gateway/mailauth.py", "gateway/resolver.py", "parsers/mailauth.py", "/dkim/", "/spf.py", "/dns/"),
    ),
    ("pipe+pickle", ("gateway/preparer.py", "multiprocessing/connection.py", "pickle")),
    ("smtp+inbox", ("gateway/smtp.py", "gateway/data.py", "storage/inbox.py", "aiosmtpd/")),
)


def _frames(stack: str) -> list[str]:
    """`func (path:line)` frames, root first, as `path:func` so both a module and a function can match."""
    out = []
    for frame in stack.split(";"):
        name, _, where = frame.partition(" (")
        path = where.rsplit(":", 1)[0]
        out.append(f"{path}:{name}")
    return out


def stage_of(stack: str) -> str | None:
    found = None
    for frame in _frames(stack):
        for stage, marks in STAGES:
            if any(mark in frame for mark in marks):
                found = stage
                break
    if found is None and any("gateway/intake.py:prepare" in f for f in _frames(stack)):
        found = "parse"  # the old prepare's own lines
    return found


def tally(collapsed: Path) -> Counter[str]:
    counts: Counter[str] = Counter()
    for line in collapsed.read_text(errors="replace").splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        stage = stage_of(stack)
        if stage is None:
            stage = "other (loop, waits, imports)"
        counts[stage] += int(n)
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("collapsed", type=Path)
    parser.add_argument("--messages", type=int, default=0, help="messages stored while it was sampled")
    parser.add_argument("--rate", type=int, default=200, help="py-spy samples per second (bench uses 200)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    counts = tally(args.collapsed)
    total = sum(counts.values()) or 1
    rows = []
    for stage, n in counts.most_common():
        ms = n / args.rate * 1000 / args.messages if args.messages else None
        rows.append({"stage": stage, "samples": n, "share": n / total, "cpu_ms_per_message": ms})
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    for row in rows:
        ms = f"{row['cpu_ms_per_message']:.3f} ms/msg" if row["cpu_ms_per_message"] is not None else ""
        print(f"{row['stage']:<30} {row['samples']:>8} {row['share']:>6.1%}  {ms}")


if __name__ == "__main__":
    main()
