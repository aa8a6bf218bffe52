"""A case's indicators derived again from its messages, after a split gave it messages (issue 16).

Why a module: `cases split` and the web desk's split must leave the same indicators behind. The raw bytes
are read, never changed; a message that fails to prepare keeps what it had.
"""

from __future__ import annotations

import contextlib
from typing import Any


def reindex_case(store: Any, case_id: str) -> None:
    from gateway.prepare import prepare

    for message_pk, entry in store.messages_for_reprocess(failed_only=False, case_id=case_id):
        with contextlib.suppress(Exception):
            store.update_reprocessed(message_pk, prepare(entry))
