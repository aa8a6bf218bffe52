"""Reply tokens: ``Reply-To: abuse+<token>@domain`` that names a case and cannot be forged.

Token = ``<case id, lower case>.<MAC>``, e.g. ``abu-7k3m-q9d2.mfrggzdfmztwq2lk`` (30 characters; at most
37 with a 10-character prefix, well inside the 64-octet local-part limit of RFC 5321 §4.5.3.1.1).

* Lower case throughout, because many MTAs and clients lower-case local parts even though RFC 5321 §2.4
  says only the destination host may interpret them; verification lower-cases first, so upper-cased
  tokens still verify.
* ``.`` separates ID and MAC: it is legal inside a dot-atom local part (RFC 5322 §3.4.1, never leading,
  trailing or doubled here), cannot occur in either half, and is not ``+`` (the sub-address delimiter).
* MAC = HMAC-SHA256 over a domain-separated message, truncated to 80 bits and written in RFC 4648 base32
  (lower case, exactly 16 characters, no padding). 80 bits is ample against online guessing, the only
  attack available without the key.
* Several keys are tried on verification so keys can be rotated while old confirmations are answered.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Sequence

from parsers.case_ref import parse_case_id

__all__ = ["MAC_CHARS", "SEPARATOR", "make_reply_token", "token_from_address", "verify_reply_token"]

SEPARATOR = "."
MAC_BYTES = 10  # 80 bits
MAC_CHARS = 16  # base32 of 10 bytes, no padding
# Binds the MAC to this use, so the same key used elsewhere cannot be made to sign a token.
_CONTEXT = b"abuse-gateway/reply-token/v1\x00"
_MAX_TOKEN = 64  # a local part cannot be longer (RFC 5321 §4.5.3.1.1), so neither can a real token
_MAC_RE = re.compile(r"[a-z2-7]{16}")


def _mac(case_id: str, key: bytes) -> str:
    digest = hmac.new(key, _CONTEXT + case_id.encode("ascii"), hashlib.sha256).digest()
    return base64.b32encode(digest[:MAC_BYTES]).decode("ascii").lower()


def make_reply_token(case_id: str, key: bytes) -> str:
    """Token for a case; the MAC covers the canonical (upper-case) ID so any spelling verifies the same.

    Raises ValueError for an invalid case ID or empty key: both are programming errors, and silently
    minting an unverifiable token would only surface later as lost replies.
    """
    canonical = parse_case_id(case_id, prefix=None)
    if canonical is None:
        raise ValueError(f"not a valid case ID: {case_id!r}")
    if not key:
        raise ValueError("reply-token key must not be empty")
    return f"{canonical.lower()}{SEPARATOR}{_mac(canonical, key)}"


def verify_reply_token(token: str, keys: Sequence[bytes]) -> str | None:
    """The canonical case ID if any key verifies the token, else None; junk never raises.

    Every key is tried with `hmac.compare_digest`, so timing reveals neither the MAC nor which key
    matched. The case ID part must also pass its own check character, which rejects most junk before any
    HMAC is computed.
    """
    if not isinstance(token, str) or len(token) > _MAX_TOKEN or not token.isascii():
        return None
    case_part, sep, mac = token.strip().lower().rpartition(SEPARATOR)
    if not sep or not _MAC_RE.fullmatch(mac):
        return None
    canonical = parse_case_id(case_part, prefix=None)
    # Only the canonical spelling is ever minted; refusing lenient variants (o for 0, spaces) keeps one
    # token per case and makes the check above an exact one.
    if canonical is None or canonical.lower() != case_part:
        return None
    matched = False
    for key in keys:
        if isinstance(key, bytes | bytearray) and key:
            matched |= hmac.compare_digest(_mac(canonical, bytes(key)), mac)
    return canonical if matched else None


def token_from_address(address: str, base_local: str = "abuse") -> str | None:
    """The sub-address tag of ``base_local+TAG@domain`` (lower-cased), or None.

    Accepts a bare address, ``<addr>``, ``Name <addr>`` and ``mailto:addr``. The base local part is
    compared case-insensitively because MTAs lower-case in practice; None when there is no ``+`` tag or
    the address is for another mailbox.
    """
    if not isinstance(address, str) or not isinstance(base_local, str) or len(address) > 1000:
        return None
    text = address.strip()
    if text.endswith(">") and "<" in text:
        text = text[text.rindex("<") + 1 : -1].strip()
    if text[:7].lower() == "mailto:":
        text = text[7:]
    local = text.rpartition("@")[0] if "@" in text else text
    if len(local) >= 2 and local[0] == local[-1] == '"':
        local = local[1:-1]  # a quoted-string local part (RFC 5322 §3.4.1) quoted by an over-eager client
    base, plus, tag = local.partition("+")
    if not plus or not tag or base.lower() != base_local.lower():
        return None
    return tag.lower()
