"""Prometheus metrics: what ops need to see that mail flows, and nothing of what it says.

Counters move where things happen (listener, intake, confirmations); gauges that need the store (inbox
depth and age, outbox states) are refreshed by the service every few seconds rather than on each scrape,
so a slow store cannot stall the scraper. Off by default; `[metrics] listen = "127.0.0.1:9325"` serves
`/metrics` from prometheus-client's own thread.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

REGISTRY = CollectorRegistry(auto_describe=True)

SESSIONS = Gauge("abuse_gateway_smtp_sessions", "SMTP sessions open now", registry=REGISTRY)
ACCEPTED = Counter(
    "abuse_gateway_messages_accepted", "Messages answered 250", ["stored_in"], registry=REGISTRY
)  # stored_in: store | spool
REFUSED = Counter("abuse_gateway_messages_refused", "SMTP refusals by reason", ["reason"], registry=REGISTRY)
INBOX_DEPTH = Gauge("abuse_gateway_inbox_depth", "Inbox entries waiting to be processed", registry=REGISTRY)
INBOX_AGE = Gauge(
    "abuse_gateway_inbox_oldest_age_seconds", "Age of the oldest unprocessed inbox entry", registry=REGISTRY
)
PROCESSING_LATENCY = Histogram(
    "abuse_gateway_processing_latency_seconds",
    "From 250 to the message stored in its case",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300),
    registry=REGISTRY,
)
CASES_OPENED = Counter("abuse_gateway_cases_opened", "Cases opened", ["kind"], registry=REGISTRY)
MESSAGES_THREADED = Counter(
    "abuse_gateway_messages_threaded",
    "Messages joined to an existing case, by thread signal",
    ["signal"],
    registry=REGISTRY,
)
PROCESSING_FAILED = Counter(
    "abuse_gateway_processing_failures", "Processing attempts that raised", registry=REGISTRY
)
CONFIRMATIONS = Gauge("abuse_gateway_confirmations", "Outbox rows by state", ["state"], registry=REGISTRY)
SPOOL_DEPTH = Gauge("abuse_gateway_spool_depth", "Messages waiting in the local spool", registry=REGISTRY)
STORE_ERRORS = Counter(
    "abuse_gateway_store_errors", "Store operations that failed", ["operation"], registry=REGISTRY
)
CONFIRM_JOB_ERRORS = Counter(
    "abuse_gateway_confirmation_job_errors",
    "Outbox rows failed by an error building or sending them",
    registry=REGISTRY,
)
TASK_RESTARTS = Counter(
    "abuse_gateway_task_restarts", "Service tasks restarted after they died", ["task"], registry=REGISTRY
)
TASK_UP = Gauge(
    "abuse_gateway_task_up", "1 while a supervised service task runs", ["task"], registry=REGISTRY
)


def serve_metrics(listen: str) -> None:
    host, _, port = listen.rpartition(":")
    start_http_server(int(port), addr=host.strip("[]") or "127.0.0.1", registry=REGISTRY)
