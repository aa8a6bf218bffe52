"""What one run measures, full or --quick. Every phase bounded in count and in time."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Plan:
    quick: bool
    cell_seconds: float  # each cell of the intake matrix
    cell_max_small: int  # message budget per cell, 2 KB
    cell_max_large: int  # message budget per cell, 200 KB
    drain_wait: float  # max wait for the intake backlog between gateway cells
    fixed_rate: float  # messages/s offered in the fixed-rate phase
    fixed_seconds: float
    final_drain: float  # max wait for processing after the max-rate and fixed-rate phases
    ingest_count: int
    ingest_timeout: float
    rss_sessions: int
    rss_bytes: int
    rss_drain: float
    escape_limit: float  # per pathological input and function
    concurrency: tuple[int, ...] = (1, 10, 50)
    per_conn_many: int = 100
    sizes: tuple[int, ...] = (2 * 1024, 200 * 1024)


FULL = Plan(
    quick=False,
    cell_seconds=5.0,
    cell_max_small=6000,
    cell_max_large=1200,
    drain_wait=25.0,
    fixed_rate=500.0,
    fixed_seconds=60.0,
    final_drain=60.0,
    ingest_count=5000,
    ingest_timeout=240.0,
    rss_sessions=50,
    rss_bytes=10 * 1024 * 1024,
    rss_drain=60.0,
    escape_limit=20.0,
)
QUICK = Plan(
    quick=True,
    cell_seconds=1.0,
    cell_max_small=1000,
    cell_max_large=150,
    drain_wait=2.0,
    fixed_rate=500.0,
    fixed_seconds=10.0,
    final_drain=10.0,
    ingest_count=1000,
    ingest_timeout=60.0,
    rss_sessions=10,
    rss_bytes=10 * 1024 * 1024,
    rss_drain=8.0,
    escape_limit=4.0,
)
