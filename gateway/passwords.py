"""Desk passwords (issue 20): argon2id (RFC 9106), through argon2-cffi's `PasswordHasher`.

Why here and not in storage: storage keeps only the encoded hash; choosing the algorithm and its cost is
policy, and the CLI and the web desk must share it. The parameters are argon2-cffi's defaults (RFC 9106's
low-memory profile: 64 MiB, 3 passes, 4 lanes); the encoded hash carries them, so `needs_rehash` tells a
login when a stored hash is older than the policy, and the desk can store a fresh one.
"""

from __future__ import annotations

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

_HASHER = PasswordHasher(type=Type.ID)
# Verified when there is no hash to verify (unknown user, SSO-only user), so a login for a name that does
# not exist takes as long as a wrong password and does not tell which names exist.
_DUMMY = _HASHER.hash("not a password of anyone's")
MIN_LENGTH = 12


def hash_password(password: str) -> str:
    return _HASHER.hash(password)


def verify_password(encoded: str | None, password: str) -> bool:
    """Does `password` match? Never raises: a malformed or missing hash is simply no match."""
    try:
        if encoded is None:
            _HASHER.verify(_DUMMY, password)
            return False
        return _HASHER.verify(encoded, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(encoded: str) -> bool:
    try:
        return _HASHER.check_needs_rehash(encoded)
    except (InvalidHashError, ValueError):
        return True


def password_problem(password: str) -> str | None:
    """Why a new password is refused, in words, or None."""
    if not password:
        return "the password is empty"
    if len(password) < MIN_LENGTH:
        return f"the password is shorter than {MIN_LENGTH} characters"
    return None
