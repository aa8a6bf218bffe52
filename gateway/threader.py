"""Where a message belongs: the case reference, strongest signal first (DESIGN.md, "Thread").

    token    abuse+<token>@ recipient whose HMAC verifies (a bad token counts as none)
    header   In-Reply-To / References naming a message of a case or a confirmation we sent
    subject  a case ID in the Subject (the first that exists wins; others become cross-references)
    body     a case ID in the first lines of the new text or in the quoted tail

A reference to no existing case opens a new case and is recorded; it is never refused. A message tied
to a case by any signal whose envelope sender is not a participant is stored in it but flagged
`unverified_sender`, never changes the case's reporter and gets no acknowledgement (issues 5 and 15: a
guessed or copied ID, Message-ID or reply token must not slip content into someone else's case unnoticed).
Participants are envelope senders of the first message and of verified, non-automatic messages, so a
reply to a stranger's message inherits the flag. An unverified or automatic message never reopens a
closed case: it joins it, flagged `joined_closed_case`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from parsers.case_ref import find_case_ids, find_case_ids_in_body
from parsers.reply_token import token_from_address, verify_reply_token
from storage.records import ConfirmRequest, Lookup, PreparedMessage, ThreadDecision

# Message-IDs asked of the store per header: the nearest ancestors are the last References (RFC 5322
# §3.6.4), and a chain of 300,000 once hit SQLite's bound-variable limit (issue 15).
_HEADER_IDS = 50

ConfirmPolicy = Callable[[PreparedMessage, Lookup, bool], ConfirmRequest | None]


class Threader:
    def __init__(
        self,
        prefix: str,
        token_keys: Sequence[bytes] = (),
        confirm_policy: ConfirmPolicy | None = None,
        group_window_seconds: float = 0.0,
    ) -> None:
        self.prefix = prefix
        self.token_keys = tuple(token_keys)
        self.confirm_policy = confirm_policy
        self.group_window_seconds = group_window_seconds

    def _token_case(self, item: PreparedMessage) -> str | None:
        if not self.token_keys:
            return None
        for rcpt in item.entry.rcpt_tos:
            token = token_from_address(rcpt)
            if token:
                case_id = verify_reply_token(token, self.token_keys)
                if case_id:
                    return case_id
        return None

    def _candidates(
        self, item: PreparedMessage, lookup: Lookup
    ) -> tuple[str | None, str, str | None, list[str]]:
        """(case_id, signal, ref, cross_refs) before deciding about the sender."""
        case_id = self._token_case(item)
        if case_id and lookup.case(case_id):
            return case_id, "token", case_id, []
        parsed = item.parsed
        header_ids = [
            *parsed.in_reply_to[:_HEADER_IDS],
            *list(reversed(parsed.references))[:_HEADER_IDS],
            *item.returned_message_ids[:_HEADER_IDS],
        ]
        case_id = lookup.case_for_message_ids(header_ids)
        if case_id:
            return case_id, "header", case_id, []
        unknown: str | None = None
        for signal, ids in (
            ("subject", find_case_ids(parsed.subject, self.prefix)),
            ("body", self._body_ids(item)),
        ):
            existing = [i for i in ids if lookup.case(i)]
            if existing:
                others = [i for i in ids if i != existing[0]]
                return existing[0], signal, existing[0], others
            if ids and unknown is None:
                unknown = ids[0]
        return None, "none", unknown, []

    def _body_ids(self, item: PreparedMessage) -> list[str]:
        ids = find_case_ids_in_body(item.parsed.text, self.prefix)
        for text in item.embedded_texts:
            ids += [i for i in find_case_ids(text, self.prefix) if i not in ids]
        return ids

    def resolve(self, item: PreparedMessage, lookup: Lookup) -> ThreadDecision:
        parsed = item.parsed
        seen = lookup.seen_message(parsed.message_id, item.entry.sha256)
        if seen is not None and seen[1]:
            # The same bytes again (a lost 250, a resend): stored once (issue 5, "Redelivery").
            return ThreadDecision(case_id=seen[0], signal="none", ref=seen[0], duplicate=True)
        flags: list[str] = []
        if seen is not None:
            flags.append("duplicate_message_id")

        case_id, signal, ref, cross_refs = self._candidates(item, lookup)
        if case_id is None and item.group_key and self.group_window_seconds > 0:
            from datetime import UTC, datetime, timedelta

            since = datetime.now(UTC) - timedelta(seconds=self.group_window_seconds)
            grouped = lookup.open_group_case(item.group_key, since) if item.kind == "machine_report" else None
            if grouped:
                case_id, signal, ref = grouped, "none", grouped
                flags.append("grouped")
        unverified = False
        if case_id is not None and signal != "none":  # "none" here: our own grouping of machine reports
            unverified = self._unverified(item, lookup, case_id)
            if unverified:
                flags.append("unverified_sender")
        reopen = not unverified and item.kind != "automatic"
        if case_id is not None and not reopen:
            info = lookup.case(case_id)
            if info is not None and info.status == "closed":
                flags.append("joined_closed_case")  # stays closed; the desk sees the flag
        if case_id is None and ref is not None:
            flags.append("unknown_case_reference")
        flags += [f"cross_reference:{other}" for other in cross_refs]
        confirm = None
        if self.confirm_policy is not None:
            confirm = self.confirm_policy(item, lookup, case_id is None)
        if unverified and confirm is not None and confirm.suppressed_reason is None:
            # No acknowledgement at all: one would hand a stranger the signed reply address (and with it
            # an unflagged way in), and even one without it would confirm that a guessed case ID exists
            # and mail a possibly forged envelope sender. Recorded as a suppression so the desk sees it.
            confirm = ConfirmRequest(
                recipient=confirm.recipient, kind=confirm.kind, suppressed_reason="unverified_sender"
            )
        bounced = ()
        if item.kind == "automatic" and signal == "header":
            bounced = item.returned_message_ids[:_HEADER_IDS]
        return ThreadDecision(
            case_id=case_id,
            signal=signal,
            ref=ref,
            flags=tuple(flags),
            confirm=confirm,
            bounced=bounced,
            reopen=reopen,
        )

    @staticmethod
    def _unverified(item: PreparedMessage, lookup: Lookup, case_id: str) -> bool:
        """Whatever signal matched (a token or a Message-ID can be copied as easily as a subject), only an
        envelope sender that is already a participant is verified; the `From:` header never counts."""
        sender = (item.entry.mail_from or "").strip().lower()
        return not sender or sender not in lookup.participants(case_id)
