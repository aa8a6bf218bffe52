"""Deferred confirmations (issue 22): a sender whose authentication DNS could not decide at intake is
checked again by the outbox worker, on a bounded schedule, before anything is sent to it.

`AUTH_RECHECK` (storage/records.py) gives the waits: about 2, 8 and 20 minutes after intake's check. A
pass queues the confirmation (it goes out at once); a fail suppresses it `unauthenticated`; still
undecided after the last check, it is suppressed `unauthenticated` too, with the reason in `last_error`,
never sent unchecked and never dropped silently: `outbox list` shows every step.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from gateway.mailauth import Checker, authentication_results
from parsers.mailauth import address_domain
from storage.outbox import Outbox
from storage.records import AUTH_RECHECK, OutboxJob

log = logging.getLogger("abuse_gateway.confirm")


def recheck(job: OutboxJob, outbox: Outbox, checker: Checker) -> str:
    """`send` when the sender is now authenticated; otherwise the row's new state (it is recorded)."""
    inputs = outbox.auth_inputs(job.outbox_id)
    if inputs is None:  # the message is gone (purged): nobody to vouch for
        outbox.settle_deferred(job.outbox_id, "suppressed", authentication=None, reason="unauthenticated")
        return "suppressed"
    raw, mail_from, client_addr, helo, from_addr = inputs
    headers = authentication_results(raw) if checker.trusted else ()
    try:
        result = checker.check(raw, mail_from, client_addr, helo, address_domain(from_addr), headers)
    except Exception as exc:
        log.warning(
            "authentication re-check failed: outbox_id=%d error=%s", job.outbox_id, type(exc).__name__
        )
        result = checker.unavailable("check failed")
    if result.sender == "pass":
        outbox.settle_deferred(job.outbox_id, "queued", authentication=result.summary)
        log.info("confirmation authenticated on re-check: outbox_id=%d", job.outbox_id)
        return "send"
    last = job.attempts + 1 >= len(AUTH_RECHECK)
    if result.sender == "temperror" and not last:
        due = datetime.now(UTC) + AUTH_RECHECK[job.attempts + 1]
        outbox.settle_deferred(
            job.outbox_id,
            "deferred",
            authentication=result.summary,
            error=f"authentication: DNS temporary failure, check {job.attempts + 2} next",
            next_attempt_at=due,
        )
        return "deferred"
    error = (
        f"authentication: DNS temporary failure on {len(AUTH_RECHECK) + 1} checks over 30 minutes"
        if result.sender == "temperror"
        else None
    )
    outbox.settle_deferred(
        job.outbox_id, "suppressed", authentication=result.summary, reason="unauthenticated", error=error
    )
    log.info("confirmation suppressed on re-check: outbox_id=%d reason=unauthenticated", job.outbox_id)
    return "suppressed"
