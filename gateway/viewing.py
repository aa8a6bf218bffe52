"""Who may see what of a case: the one viewing rule the CLI and the web desk both apply (issues 19, 20).

Why a module: the CSAM compartment's rule (content of a CSAM or possible-CSAM case only with a stated,
recorded reason) and the desk's roles (support sees that a case exists, never what it says) must mean the
same thing in `cases show` and on `/cases/<id>`. A second copy in the web would drift from the first.

The answer is a `Sight`:
- `NONE`: no such case, or nothing of it for this person: the web answers 404, exactly as for an unknown ID.
- `METADATA`: existence, status, dates, counts, confirmation state; nothing a sender wrote.
- `REASON`: content, once a reason is stated (and recorded with who) — the compartment's rule.
- `CONTENT`: content, each view audited like any other read.
"""

from __future__ import annotations

import enum
from typing import Any

ROLES = ("support", "analyst", "csam", "admin")
# The CLI's operator: whoever can run commands as the service user sees what the csam role sees.
OPERATOR = "operator"
WITHHELD_SUBJECT = "[withheld: CSAM compartment]"
REASON_MAX_CHARS = 2000


class Sight(enum.Enum):
    NONE = "none"
    METADATA = "metadata"
    REASON = "reason"
    CONTENT = "content"


def sight(role: str, compartment: bool | None) -> Sight:
    """What `role` may see of a case whose compartment status is `compartment` (None: no such case).

    admin administers people and retention; reading reports is the analysts' job, so an admin sees what
    support sees (a desk that wants both gives one person two accounts)."""
    if compartment is None or role not in (*ROLES, OPERATOR):
        return Sight.NONE
    if role in ("support", "admin"):
        return Sight.METADATA
    if role == "analyst":
        return Sight.METADATA if compartment else Sight.CONTENT
    return Sight.REASON if compartment else Sight.CONTENT  # csam, operator


def may_see_lists(role: str) -> bool:
    """The queue and search name reporters and subjects: content, so not for support or admin."""
    return role in ("analyst", "csam", OPERATOR)


def may_mark(role: str, confirmed: bool) -> bool:
    """Confirming or clearing CSAM is the csam role's (and the operator's); anyone who reads content may
    raise the possible-CSAM signal, which hides the content from analysts from then on."""
    if confirmed:
        return role in ("csam", OPERATOR)
    return role in ("analyst", "csam", OPERATOR)


def may_work(role: str) -> bool:
    """Assign, note, close, hold, merge, split: the people who read cases."""
    return role in ("analyst", "csam", OPERATOR)


def reason_text(reason: str | None) -> str | None:
    """A reason as given, trimmed and bounded; None for no reason and for a blank one (callers refuse a
    blank reason in their own words)."""
    if reason is None or not reason.strip():
        return None
    return reason.strip()[:REASON_MAX_CHARS]


def withhold_listed(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A subject is content: in a list, a CSAM or possible-CSAM case's subject is withheld (issue 19)."""
    for row in rows:
        if row.get("csam") or row.get("possible_csam"):
            row["subject"], row["content_withheld"] = WITHHELD_SUBJECT, True
    return rows
