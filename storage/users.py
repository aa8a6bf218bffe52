"""The desk's people (issue 20): users and roles, login sessions, failed-login counts.

Why here and like this:
- Passwords arrive hashed (gateway/passwords.py owns argon2id); storage never sees a password.
- A session is a random token in the cookie and its SHA-256 in `desk_sessions`: a leaked copy of the store
  gives no live session. The CSRF token is per session, stored as is (it is worthless without the cookie).
- A session is refused once expired, unknown, or its user disabled, whatever the cookie says; disabling a
  user or changing a password also ends every session of that user.
- Failed logins are rows, not counters in one process: every web process sharing the store counts the
  same failures, by name and by client address.
- Every change to a user is an `audit_events` row naming who made it (the CLI's Unix user, the desk's
  admin), never the hash.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Engine, delete, func, or_, select, update
from sqlalchemy.orm import Session

from storage.desk_models import DeskSession, DeskUser, LoginFailure
from storage.models import AuditEvent
from storage.util import _aware, _now, is_integrity_error

ROLES = ("support", "analyst", "csam", "admin")
# Names reach pages, logs and the audit trail: letters, digits and `._@-` only, nothing to escape.
NAME_RE = re.compile(r"[A-Za-z0-9._@-]{1,64}")
# `last_seen_at` is written at most this often: a page view must not be a write every time.
TOUCH_EVERY = timedelta(minutes=1)
# Failed-login rows older than this are swept when a new one is written; no throttle looks further back.
FAILURES_KEPT = timedelta(days=1)


class UserError(Exception):
    """A change the store refuses (unknown user, duplicate name, bad role or name); the message says why.
    Messages starting with "no " mean not found."""


@dataclass(frozen=True, slots=True)
class UserRecord:
    name: str
    role: str
    disabled: bool
    password_hash: str | None
    created_at: datetime
    last_login_at: datetime | None


@dataclass(frozen=True, slots=True)
class SessionRecord:
    name: str
    role: str
    csrf_token: str
    expires_at: datetime


def valid_name(name: str) -> bool:
    return NAME_RE.fullmatch(name) is not None


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _record(user: DeskUser) -> UserRecord:
    return UserRecord(
        name=user.name,
        role=user.role,
        disabled=bool(user.disabled),
        password_hash=user.password_hash,
        created_at=_aware(user.created_at) or _now(),
        last_login_at=_aware(user.last_login_at),
    )


def _check_role(role: str) -> None:
    if role not in ROLES:
        raise UserError(f"role {role!r} is not one of {', '.join(ROLES)}")


def _audit(session: Session, actor: str, action: str, target: str, at: datetime) -> None:
    session.add(AuditEvent(at=at, actor=actor[:64], action=action, target=target))


@dataclass(slots=True)
class Users:
    engine: Engine

    @staticmethod
    def _user(session: Session, name: str) -> DeskUser:
        user = session.execute(select(DeskUser).where(DeskUser.name == name)).scalar_one_or_none()
        if user is None:
            raise UserError(f"no user {name!r}")
        return user

    # -- users ---------------------------------------------------------------------------------------

    def add(self, name: str, role: str, password_hash: str | None, *, actor: str = "system") -> None:
        """A new user. Names are unique regardless of case (`Alice` beside `alice` would fool a reader)."""
        if not valid_name(name):
            raise UserError(f"user name {name!r}: 1-64 of A-Z a-z 0-9 . _ @ -")
        _check_role(role)
        now = _now()
        try:
            with Session(self.engine) as session, session.begin():
                taken = session.execute(
                    select(DeskUser.name).where(func.lower(DeskUser.name) == name.lower())
                ).first()
                if taken is not None:
                    raise UserError(f"user {taken[0]!r} exists")
                session.add(
                    DeskUser(
                        name=name,
                        role=role,
                        password_hash=password_hash,
                        disabled=False,
                        created_at=now,
                        updated_at=now,
                    )
                )
                _audit(session, actor, "user_add", f"{name} role {role}", now)
        except Exception as exc:
            if is_integrity_error(exc):  # two adds at once: the unique index decided
                raise UserError(f"user {name!r} exists") from exc
            raise

    def get(self, name: str) -> UserRecord | None:
        with Session(self.engine) as session:
            user = session.execute(select(DeskUser).where(DeskUser.name == name)).scalar_one_or_none()
            return _record(user) if user is not None else None

    def list(self) -> list[UserRecord]:
        with Session(self.engine) as session:
            return [_record(u) for u in session.execute(select(DeskUser).order_by(DeskUser.name)).scalars()]

    def set_password(self, name: str, password_hash: str | None, *, actor: str = "system") -> None:
        """A new hash (None: SSO only); every session of the user ends (a changed password locks out
        whoever had the old one)."""
        self._change(name, actor, "user_passwd", name, password_hash=password_hash)

    def rehash(self, name: str, password_hash: str) -> None:
        """A login found the stored hash made with weaker parameters than today's (`needs_rehash`): store a
        fresh hash of the same password. Not a password change: sessions stay, nothing is audited."""
        with Session(self.engine) as session, session.begin():
            session.execute(update(DeskUser).where(DeskUser.name == name).values(password_hash=password_hash))

    def set_role(self, name: str, role: str, *, actor: str = "system") -> None:
        _check_role(role)
        self._change(name, actor, "user_role", f"{name} role {role}", role=role, end_sessions=False)

    def disable(self, name: str, *, actor: str = "system") -> None:
        self._change(name, actor, "user_disable", name, disabled=True)

    def enable(self, name: str, *, actor: str = "system") -> None:
        self._change(name, actor, "user_enable", name, disabled=False, end_sessions=False)

    def _change(
        self, name: str, actor: str, action: str, target: str, *, end_sessions: bool = True, **values: object
    ) -> None:
        now = _now()
        with Session(self.engine) as session, session.begin():
            user = self._user(session, name)
            session.execute(update(DeskUser).where(DeskUser.id == user.id).values(updated_at=now, **values))
            if end_sessions:
                session.execute(delete(DeskSession).where(DeskSession.user_id == user.id))
            _audit(session, actor, action, target, now)

    # -- sessions ------------------------------------------------------------------------------------

    def create_session(self, name: str, ttl_seconds: int) -> tuple[str, str]:
        """A login: a new session for an enabled user, as (token for the cookie, CSRF token). The login is
        recorded (`last_login_at`, an audit row); expired sessions of anyone are swept."""
        now = _now()
        token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        with Session(self.engine) as session, session.begin():
            user = self._user(session, name)
            if user.disabled:
                raise UserError(f"user {name!r} is disabled")
            session.execute(delete(DeskSession).where(DeskSession.expires_at < now))
            session.add(
                DeskSession(
                    token_hash=token_hash(token),
                    user_id=user.id,
                    csrf_token=csrf,
                    created_at=now,
                    expires_at=now + timedelta(seconds=ttl_seconds),
                    last_seen_at=now,
                )
            )
            session.execute(update(DeskUser).where(DeskUser.id == user.id).values(last_login_at=now))
            _audit(session, name, "login", name, now)
        return token, csrf

    def session(self, token: str) -> SessionRecord | None:
        """The live session behind a cookie's token, or None (expired, unknown, user disabled)."""
        if not token:
            return None
        now = _now()
        key = token_hash(token)
        with Session(self.engine) as session:
            found = session.execute(
                select(DeskSession, DeskUser.name, DeskUser.role, DeskUser.disabled)
                .join(DeskUser, DeskUser.id == DeskSession.user_id)
                .where(DeskSession.token_hash == key)
            ).first()
            if found is None:
                return None
            row, name, role, disabled = found
            expires = _aware(row.expires_at)
            if disabled or expires is None or expires <= now:
                return None
            seen = _aware(row.last_seen_at)
            if seen is None or now - seen >= TOUCH_EVERY:
                session.execute(
                    update(DeskSession).where(DeskSession.token_hash == key).values(last_seen_at=now)
                )
                session.commit()
            return SessionRecord(name=name, role=role, csrf_token=row.csrf_token, expires_at=expires)

    def end_session(self, token: str) -> None:
        with Session(self.engine) as session, session.begin():
            session.execute(delete(DeskSession).where(DeskSession.token_hash == token_hash(token)))

    def end_sessions_of(self, name: str) -> int:
        with Session(self.engine) as session, session.begin():
            user = self._user(session, name)
            result = session.execute(delete(DeskSession).where(DeskSession.user_id == user.id))
            return int(result.rowcount or 0)

    # -- failed logins -------------------------------------------------------------------------------

    def record_login_failure(self, name: str, client: str | None) -> None:
        """One failed login (never the password tried). `name` is what was typed, cut to 64 characters."""
        now = _now()
        with Session(self.engine) as session, session.begin():
            session.execute(delete(LoginFailure).where(LoginFailure.at < now - FAILURES_KEPT))
            session.add(LoginFailure(at=now, name=name[:64], client=(client or None) and client[:64]))

    def login_failures_since(self, name: str | None, client: str | None, since: datetime) -> int:
        """Failures since `since` for this name or from this client (a row matching both counts once):
        one number a throttle compares with its limit, so spraying names from one address and guessing
        one name from many addresses are both slowed."""
        wanted = []
        if name:
            wanted.append(LoginFailure.name == name[:64])
        if client:
            wanted.append(LoginFailure.client == client[:64])
        if not wanted:
            return 0
        with Session(self.engine) as session:
            return int(
                session.execute(
                    select(func.count())
                    .select_from(LoginFailure)
                    .where(or_(*wanted), LoginFailure.at >= since)
                ).scalar_one()
            )

    def clear_login_failures(self, name: str) -> None:
        """A successful login forgets that name's failures (an address's failures for other names stay)."""
        with Session(self.engine) as session, session.begin():
            session.execute(delete(LoginFailure).where(LoginFailure.name == name[:64]))
