"""`abuse-gateway` (also `python -m gateway`): the contract in DESIGN.md, "Contracts users and tests rely on".

Exit codes: 0 done, 1 not found, 2 bad usage or configuration, 75 (EX_TEMPFAIL) store and spool unavailable
— what an MTA pipe transport expects, so the MTA keeps the message and retries.

Commands take their store, casework, spool and intake worker from the composition root
(gateway/assembly.py), so `ingest` and `reprocess` wire them as `serve` does; they never build one here.

The commands live by concern. Each module imports gateway/cli/common.py (the groups and what every command
shares), the readers also compartment.py, and none imports this package: importing them here registers
their commands on the groups, and the import graph stays acyclic (tests/test_import_graph.py):
    common.py       exit codes, the `main` and `cases` groups, --config, store, the one output layer
    cases.py        cases list, show
    compartment.py  the CSAM viewing rule (--reason), cases csam
    evidence.py     cases raw, export, attachment
    casework.py     cases close, reopen, hold, release, merge, unmerge, split, unsplit, assign, note
    outbox.py       outbox list, show
    operations.py   serve, ingest, reprocess, db upgrade, check-config, purge, audit list
    users.py        users add, list, passwd, disable, enable, role (the web desk's people)
    web.py          web (the desk's HTTP server; gateway/web/)
"""

from gateway.cli import (  # noqa: F401 (registers)
    cases,
    casework,
    compartment,
    evidence,
    operations,
    outbox,
    users,
    web,
)
from gateway.cli.common import EX_NOTFOUND, EX_OK, EX_TEMPFAIL, EX_USAGE, main

__all__ = ["EX_NOTFOUND", "EX_OK", "EX_TEMPFAIL", "EX_USAGE", "main"]
