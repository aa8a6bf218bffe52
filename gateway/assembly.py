"""The composition root: every long-lived part of the gateway is built here, from the Config, and only here.

Store, casework, engine, inbox, spool, threader, SMTP handler, intake and confirmation workers: each
process of `serve` (the parent in gateway/service.py, the intake children in gateway/intake_process.py,
the listener children in gateway/listeners.py) and each CLI command (gateway/cli/) asks this module for
the parts it runs, so that they are wired the same way everywhere (the case prefix, the related-case
window, the commit budget, the token keys) and so that no process module has to import another to borrow
its factories. That borrowing was an import cycle (service → intake_process → service, lazily) until
issue 18.

Imports point down from here: this module uses the parts (gateway/config, confirm, intake, smtp,
threader, metrics; storage/; parsers/) and none of them, nor anything that runs processes, imports it
back. Builders build: they open engines but start nothing (no thread, no task, no process, no socket).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import Engine

from gateway import metrics
from gateway.config import Config
from gateway.confirm import ConfirmWorker, confirm_policy, load_token_keys
from gateway.intake import IntakeWorker
from gateway.prepare import ParseFn
from gateway.smtp import GatewayHandler, tls_context
from gateway.threader import Threader
from parsers.case_ref import new_case_id
from parsers.message import parse_message
from storage import schema
from storage.casework import CaseWork
from storage.claims import new_worker_id
from storage.engine import make_engine
from storage.inbox import Inbox, Spool
from storage.records import Committed
from storage.store import CaseStore

log = logging.getLogger("abuse_gateway.assembly")


class StoreNotReady(Exception):
    """The store is missing its schema or needs `db upgrade`; `serve` refuses to start on it."""


def check_store(engine: Engine) -> None:
    if schema.needs_upgrade(engine):
        current = schema.current_revision(engine)
        raise StoreNotReady(
            f"the store is at schema {current or 'none'}, this release needs {schema.head_revision()}: "
            "run `abuse-gateway db upgrade` first"
        )


def build_engine(config: Config, *, durable: bool = True) -> Engine:
    """`durable=False` only where everything written can be derived again from the inbox (the intake
    children): see storage/engine.py."""
    return make_engine(config.store.url, durable=durable)


def build_store(config: Config, engine: Engine | None = None, worker_group: str = "") -> CaseStore:
    engine = engine or make_engine(config.store.url)
    prefix = config.intake.case_prefix
    return CaseStore(
        engine,
        new_case_id=lambda: new_case_id(prefix),
        worker_id=new_worker_id(worker_group),
        related_window=timedelta(days=config.intake.related_days),
        csam_preserve=timedelta(days=config.csam.preserve_days),
    )


def build_casework(config: Config) -> CaseWork:
    prefix = config.intake.case_prefix
    return CaseWork(make_engine(config.store.url), new_case_id=lambda: new_case_id(prefix))


def build_threader(config: Config) -> Threader:
    keys = load_token_keys(config)
    return Threader(
        config.intake.case_prefix,
        token_keys=keys,
        confirm_policy=confirm_policy(config) if config.confirm.enabled else None,
        group_window_seconds=config.intake.machine_report_group_window,
    )


def build_spool(config: Config) -> Spool:
    return Spool(config.store.spool_dir)


def build_inbox(
    config: Config, engine: Engine, spool: Spool, on_stored: Callable[[Iterable[int]], None]
) -> Inbox:
    """The durable front of every listener process: group commit to the store, the spool when it fails."""
    return Inbox(
        engine,
        spool,
        commit_budget=config.store.commit_budget,
        group_window=config.store.group_commit_ms / 1000,
        on_stored=on_stored,
        on_error=lambda operation: metrics.STORE_ERRORS.labels(operation).inc(),
    )


def build_handler(config: Config, inbox: Inbox) -> GatewayHandler:
    """The SMTP hooks of one listener process, with the TLS context its config names (if any)."""
    return GatewayHandler(config, inbox, tls=tls_context(config))


def build_intake_worker(
    config: Config,
    store: CaseStore,
    threader: Threader | None = None,
    *,
    parse: ParseFn = parse_message,
    on_committed: Callable[[Sequence[Committed]], None] | None = None,
    on_failure: Callable[[], None] | None = None,
    isolated: bool = False,
) -> IntakeWorker:
    """`threader`: pass the one the caller keeps (serve's parent updates it on SIGHUP); otherwise a fresh
    one from `config`."""
    return IntakeWorker(
        config,
        store,
        threader if threader is not None else build_threader(config),
        parse,
        on_committed=on_committed,
        on_failure=on_failure,
        isolated=isolated,
    )


def build_confirm_worker(config: Config, store: CaseStore) -> ConfirmWorker:
    return ConfirmWorker(config, store.outbox)


def build_status_app(config: Config, engine: Engine | None = None) -> Any:
    """The reporters' status page (issue 21): only the store's status read model and the token keys."""
    from gateway.status_page import build_app
    from storage.reporter import Reporters

    reporters = Reporters(engine or make_engine(config.store.url))
    return build_app(config, reporters.status_view, load_token_keys(config))


def release_dead_claims(store: CaseStore) -> int:
    released = store.release_dead_claims(_pid_alive)
    if released:
        log.warning("released claims of dead processes on this host: rows=%d", released)
    return released


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True


def build_web_app(config: Config, store: CaseStore) -> object:
    """The desk's ASGI app (issue 20) on `store`, with merge/split on the same engine. Imported here, lazily,
    so the SMTP process (which imports this module) never loads the web stack."""
    from gateway.web.app import create_app
    from gateway.web.gate import DeskParts

    prefix = config.intake.case_prefix
    casework = CaseWork(store.engine, new_case_id=lambda: new_case_id(prefix))
    return create_app(DeskParts(config=config, store=store, casework=casework))
