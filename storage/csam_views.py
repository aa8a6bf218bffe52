"""Who looked: every view of a CSAM or possible-CSAM case's content attributed to a person with a reason,
and the metadata-only view that needs none (issue 19).

Why a module: "did a person view file K of message N?" must have a true answer (US v. Wilson, 9th Cir.
2021), so a view is an `audit_events` row with action `viewed` naming the operator, the case, the message
(by key, which survives merges), the attachment and the reason, and `viewed_by_person` in a case's view is
derived from those rows, never set by hand. The marks and their preservation are `storage.csam`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Engine, or_, select
from sqlalchemy.orm import Session

from storage.csam import CSAM, POSSIBLE, CsamError, _case
from storage.models import AuditEvent, Case, CsamMark, Message
from storage.util import _iso

HASH_KEYS = ("md5", "sha1", "sha256", "pdq", "pdq_quality")
# How a view reached an attachment's bytes: the attachment itself, or the whole raw message that holds it.
_BYTES_VIEWS = ("attachment", "raw")


def in_compartment(engine: Engine, case_id: str) -> bool | None:
    """Is the case (or the case it was merged into) marked CSAM or possible CSAM? None: no such case."""
    with Session(engine) as session:
        try:
            case = _case(session, case_id)
        except CsamError:
            return None
        return bool(case.csam or case.possible_csam)


def record_view(
    engine: Engine,
    actor: str,
    case_id: str,
    via: str,
    reason: str | None,
    message_index: int | None = None,
    attachment_index: int | None = None,
) -> None:
    """A person is about to see content of a case: who, what, why. Written before the content goes out, so
    a crash after the write over-reports a view rather than hiding one."""
    with Session(engine) as session, session.begin():
        message_pk = None
        if message_index is not None:
            message_pk = session.execute(
                select(Message.id)
                .join(Case, Case.id == Message.case_pk)
                .where(Case.case_id == case_id.upper(), Message.index == message_index)
            ).scalar()
        what = [case_id.upper()]
        if message_index is not None:
            what.append(f"message {message_index}")
        if attachment_index is not None:
            what.append(f"attachment {attachment_index}")
        session.add(
            AuditEvent(
                actor=actor,
                action="viewed",
                target=f"{' '.join(what)} ({via})",
                case_id=case_id.upper(),
                message_pk=message_pk,
                message_index=message_index,
                attachment_index=attachment_index,
                reason=reason,
            )
        )


def audit_for_case(engine: Engine, case_id: str, limit: int = 1000) -> list[dict[str, Any]]:
    """Every audit event about one case, newest first: views, marks, clears, raw and export reads."""
    case_id = case_id.upper()
    with Session(engine) as session:
        rows = session.execute(
            select(AuditEvent)
            .where(
                or_(
                    AuditEvent.case_id == case_id,
                    AuditEvent.target == case_id,
                    AuditEvent.target.like(f"{case_id} %"),
                    AuditEvent.target.like(f"%{case_id}%") & (AuditEvent.action == "purge"),
                )
            )
            .order_by(AuditEvent.id.desc())
            .limit(limit)
        ).scalars()
        return [audit_row(r) for r in rows]


def audit_row(row: AuditEvent) -> dict[str, Any]:
    return {
        "at": _iso(row.at),
        "actor": row.actor,
        "action": row.action,
        "target": row.target,
        "case_id": row.case_id,
        "message": row.message_index,
        "attachment": row.attachment_index,
        "reason": row.reason,
    }


def decorate_case_view(
    session: Session, case: Case, view: dict[str, Any], message_pks: Sequence[int]
) -> None:
    """Add the compartment's part to a `cases show --json` view: flags, their sources, the preservation, and
    per attachment `viewed_by_person`, derived from the audit trail (never set by hand)."""
    marks = list(
        session.execute(select(CsamMark).where(CsamMark.case_pk == case.id).order_by(CsamMark.id)).scalars()
    )
    view["csam"] = bool(case.csam)
    view["possible_csam"] = bool(case.possible_csam)
    view["preserve_until"] = _iso(case.preserve_until)
    view["csam_sources"] = [m.source for m in marks if m.kind == CSAM and m.cleared_at is None]
    view["possible_csam_sources"] = [m.source for m in marks if m.kind == POSSIBLE and m.cleared_at is None]
    view["csam_marks"] = [mark_row(m) for m in marks]
    views = _views_by_message(session, message_pks)
    for message, pk in zip(view.get("messages", []), message_pks, strict=False):
        seen = views.get(pk, [])
        for position, attachment in enumerate(message.get("attachments", []), start=1):
            who = [v for v in seen if v["attachment"] in (position, None)]
            attachment["index"] = position
            attachment["viewed_by_person"] = bool(who)
            attachment["views"] = who


def mark_row(m: CsamMark) -> dict[str, Any]:
    return {
        "kind": m.kind,
        "source": m.source,
        "at": _iso(m.at),
        "by": m.actor,
        "reason": m.reason,
        "preserve_until": _iso(m.preserve_until),
        "cleared": (
            {"at": _iso(m.cleared_at), "by": m.cleared_by, "reason": m.clear_reason} if m.cleared_at else None
        ),
    }


def _views_by_message(session: Session, message_pks: Sequence[int]) -> dict[int, list[dict[str, Any]]]:
    """Views that reached attachment bytes, by message key: `cases attachment` (that file) and `cases raw`
    (every file of the message; `attachment` is None then)."""
    if not message_pks:
        return {}
    rows = session.execute(
        select(AuditEvent).where(
            AuditEvent.action == "viewed",
            AuditEvent.message_pk.in_(list(message_pks)),
            or_(*(AuditEvent.target.like(f"% ({via})") for via in _BYTES_VIEWS)),
        )
    ).scalars()
    found: dict[int, list[dict[str, Any]]] = {}
    for row in rows:
        found.setdefault(int(row.message_pk or 0), []).append(
            {"at": _iso(row.at), "by": row.actor, "attachment": row.attachment_index, "reason": row.reason}
        )
    return found


def metadata_view(view: dict[str, Any]) -> dict[str, Any]:
    """What anyone may see of a case without a reason: status, dates, counts, hashes and flags, and nothing
    a sender wrote (no subject, text, addresses, filenames, indicators, report fields)."""
    keep = ("case_id", "status", "kind", "hold", "created_at", "updated_at", "flags", "merged_into")
    keep += ("assignee",)  # issue 20: who works the case is the desk's, not the sender's
    meta: dict[str, Any] = {k: view.get(k) for k in keep if k in view}
    for key in (
        "csam",
        "possible_csam",
        "preserve_until",
        "csam_sources",
        "possible_csam_sources",
        "csam_marks",
    ):
        meta[key] = view.get(key)
    meta["messages"] = [
        {
            "index": m["index"],
            "kind": m["kind"],
            "received_at": m["received_at"],
            "sha256": m["sha256"],
            "size": m.get("size"),
            "flags": m.get("flags", []),
            "defects": m.get("defects", []),
            "attachments": [
                {
                    "index": a.get("index", position),
                    "content_type": a.get("content_type"),
                    "size": a.get("size"),
                    **{k: a[k] for k in HASH_KEYS if k in a},
                    "viewed_by_person": a.get("viewed_by_person", False),
                }
                for position, a in enumerate(m.get("attachments", []), start=1)
            ],
        }
        for m in view.get("messages", [])
    ]
    meta["message_count"] = len(meta["messages"])
    meta["attachment_count"] = sum(len(m["attachments"]) for m in meta["messages"])
    meta["indicator_count"] = len(view.get("indicators", []))
    meta["content_withheld"] = True
    return meta


# ---- purge -----------------------------------------------------------------------------------------------
