"""The desk's own tables (issue 20): the people who work cases, their sessions, failed logins, notes.

Kept beside `models.py` (which imports this module at its end, so `SQLModel.metadata` always has them):
these rows are about staff, not about mail, and nothing of the intake reads them.

- `desk_users`: a name, a role, an argon2id hash (None for a user the SSO proxy names), `disabled`.
  Users are never deleted: their names stay in the audit trail, on notes and as assignees.
- `desk_sessions`: keyed by the SHA-256 of the cookie's random token, so a copy of the store hands out no
  live session.
- `login_failures`: one row per failed login, by name and by client address, so every web process sharing
  the store counts the same failures.
- `case_notes`: what staff write on a case; stored as given, shown escaped.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, Index, Text
from sqlmodel import Field, SQLModel

from storage.models import _ts, utcnow


class DeskUser(SQLModel, table=True):
    __tablename__ = "desk_users"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(unique=True, max_length=64)
    role: str = Field(max_length=16)  # support | analyst | csam | admin
    password_hash: str | None = Field(default=None, nullable=True)  # None: only the SSO proxy logs it in
    disabled: bool = False
    created_at: datetime = _ts(default_factory=utcnow)
    updated_at: datetime = _ts(default_factory=utcnow)
    last_login_at: datetime | None = _ts(default=None, nullable=True)


class DeskSession(SQLModel, table=True):
    __tablename__ = "desk_sessions"

    token_hash: str = Field(primary_key=True, max_length=64)  # sha256 hex of the cookie's token
    user_id: int = Field(foreign_key="desk_users.id", index=True)
    csrf_token: str = Field(max_length=64)
    created_at: datetime = _ts(default_factory=utcnow)
    # Indexed: expired sessions are swept at every login.
    expires_at: datetime = _ts(index=True)
    last_seen_at: datetime = _ts(default_factory=utcnow)


class LoginFailure(SQLModel, table=True):
    __tablename__ = "login_failures"

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = _ts(default_factory=utcnow, index=True)
    name: str = Field(max_length=64)
    client: str | None = Field(default=None, max_length=64)

    __table_args__ = (
        Index("ix_login_failures_name_at", "name", "at"),
        Index("ix_login_failures_client_at", "client", "at"),
    )


class CaseNote(SQLModel, table=True):
    __tablename__ = "case_notes"

    id: int | None = Field(default=None, primary_key=True)
    case_pk: int = Field(foreign_key="cases.id", index=True)
    author: str = Field(max_length=64)
    body: str = Field(sa_column=Column(Text, nullable=False))
    created_at: datetime = _ts(default_factory=utcnow)
