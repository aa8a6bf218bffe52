"""CSRF: every POST carries a token in the hidden field `csrf`, compared in constant time.

- Signed in: the session's own token (storage/users.py keeps it beside the session), one per session.
- The login form has no session yet: a double-submit pre-session cookie (`desk_login`, random,
  HttpOnly, SameSite=Strict) whose value the form repeats. Why not an Origin check: the desk sends
  `Referrer-Policy: no-referrer`, under which browsers send `Origin: null` on form posts, so the header
  says nothing; a cross-site page can neither read our cookie nor set it (SameSite=Strict, no JS of ours).
"""

from __future__ import annotations

import hmac
import secrets

from starlette.datastructures import FormData

LOGIN_COOKIE = "desk_login"
FIELD = "csrf"


def new_token() -> str:
    return secrets.token_urlsafe(32)


def matches(expected: str | None, form: FormData) -> bool:
    given = form.get(FIELD)
    if not expected or not isinstance(given, str) or not given:
        return False
    return hmac.compare_digest(expected.encode("utf-8"), given.encode("utf-8"))
