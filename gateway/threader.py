"""Where a message belongs: the case reference, strongest signal first (DESIGN.md, "Thread").

    token    abuse+<token>@ recipient whose HMAC verifies (a bad token counts as none)
    header   In-Reply-To / References naming a message of a case or a confirmation we sent
    subject  a case ID in the Subject (the first that exists wins; others become cross-references)
    body     a case ID in the first lines of the new text or in the quoted tail

A reference to no existing case opens a new case and is recorded; it is never refused. A message that
only a subject or body signal ties to a case, from someone who is not a participant, is stored in it but
flagged `unverified_sender` and never changes the case's reporter (issue 5: a guessed or copied ID must
not slip content into someone else's case unnoticed).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from parsers.case_ref import find_case_ids, find_case_ids_in_body
from parsers.reply_token import token_from_address, verify_reply_token
from storage.store import ConfirmRequest, Lookup, PreparedMessage, ThreadDecision

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
        header_ids = [*parsed.in_reply_to, *reversed(parsed.references), *item.returned_message_ids]
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
        if case_id is not None and signal in ("subject", "body"):
            sender = (item.entry.mail_from or parsed.from_addr or "").lower()
            from_addr = (parsed.from_addr or "").lower()
            people = lookup.participants(case_id)
            if sender not in people and from_addr not in people:
                flags.append("unverified_sender")
        if case_id is None and ref is not None:
            flags.append("unknown_case_reference")
        flags += [f"cross_reference:{other}" for other in cross_refs]
        confirm = None
        if self.confirm_policy is not None:
            confirm = self.confirm_policy(item, lookup, case_id is None)
        bounced = item.returned_message_ids if item.kind == "automatic" and signal == "header" else ()
        return ThreadDecision(
            case_id=case_id, signal=signal, ref=ref, flags=tuple(flags), confirm=confirm, bounced=bounced
        )
