"""The abuse-gateway benchmark: `python -m bench [--quick] [--preload N] [--json out.json]`.

Starts the gateway (and a bare aiosmtpd sink for comparison) as subprocesses on 127.0.0.1, drives them with
a timestamping multi-process SMTP client, polls the SQLite store for processing lag, times `ingest` and the
escaping of pathological inputs, and prints a table with PASS/MISS beside each target. See bench/README.md.
"""
