"""Status-page tokens (issue 21): ``/s/<token>`` names one case for one reporter and cannot be forged.

Token = ``<case id, lower case>.<generation>.<MAC>``. The MAC (HMAC-SHA256, 80 bits, base32 like the reply
token's) covers the case ID, the case's generation counter and the reporter's address, with the reply-token
keys: the first key signs, every key verifies, so the links rotate with that key. The address is in the MAC
and never in the token, so a link shows nobody who reported. Raising the case's generation revokes every
link given out before.

Verification is split in two because the address is not in the token: `split_status_token` reads the
parts (junk never raises), the caller looks up the case's generation and reporters, and `status_token_valid`
checks the MAC against them with `hmac.compare_digest`, every key and every address tried.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Sequence

from parsers.case_ref import parse_case_id

__all__ = ["make_status_token", "split_status_token", "status_token_valid"]

_CONTEXT = b"abuse-gateway/status-token/v1\x00"
_MAX_TOKEN = 80
_TOKEN_RE = re.compile(r"([a-z0-9-]{4,40})\.([0-9]{1,9})\.([a-z2-7]{16})")


def _mac(case_id: str, generation: int, recipient: str, key: bytes) -> str:
    message = _CONTEXT + f"{case_id}\x00{generation}\x00{recipient.strip().lower()}".encode()
    digest = hmac.new(key, message, hashlib.sha256).digest()
    return base64.b32encode(digest[:10]).decode("ascii").lower()


def make_status_token(case_id: str, generation: int, recipient: str, key: bytes) -> str:
    canonical = parse_case_id(case_id, prefix=None)
    if canonical is None:
        raise ValueError(f"not a valid case ID: {case_id!r}")
    if not key or generation < 0:
        raise ValueError("status token needs a key and a generation >= 0")
    return f"{canonical.lower()}.{generation}.{_mac(canonical, generation, recipient, key)}"


def split_status_token(token: object) -> tuple[str, int, str] | None:
    """(canonical case ID, generation, MAC) of a well-formed token, else None."""
    if not isinstance(token, str) or len(token) > _MAX_TOKEN or not token.isascii():
        return None
    found = _TOKEN_RE.fullmatch(token)
    if found is None:
        return None
    case_part, generation, mac = found.groups()
    canonical = parse_case_id(case_part, prefix=None)
    if canonical is None or canonical.lower() != case_part:
        return None
    return canonical, int(generation), mac


def status_token_valid(
    parts: tuple[str, int, str], generation: int, recipients: Sequence[str], keys: Sequence[bytes]
) -> bool:
    """The token was minted for this case's current generation and one of its reporters."""
    case_id, token_generation, mac = parts
    matched = False
    for recipient in recipients:
        for key in keys:
            if key:
                matched |= hmac.compare_digest(_mac(case_id, token_generation, recipient, bytes(key)), mac)
    return matched and token_generation == generation
