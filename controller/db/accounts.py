"""API accounts, the hashes of their tokens, and the audit log of mutating calls."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from controller.db.base import Base, new_uuid, utcnow

#: what each role may do: ``admin`` everything, ``readonly`` only GET
ROLES = ("admin", "readonly")


class Account(Base):
    """Someone who calls the API, with one role (see :data:`ROLES`).

    Its token is not here: :class:`AccountToken` holds only the token's hash,
    so this table can be listed and queried like any resource.
    """

    __tablename__ = "accounts"
    __table_args__ = (UniqueConstraint("name", name="uq_accounts_name"),)
    uuid: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_uuid)
    name: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(32))
    create_date: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)


class AccountToken(Base):
    """The SHA-256 of an account's bearer token (the token itself is shown once, never kept).

    Tokens are 256 random bits, so a plain hash is as good as a slow one: there
    is nothing to guess from it.
    """

    __tablename__ = "account_tokens"
    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    account_uuid: Mapped[str] = mapped_column(
        String(32), ForeignKey("accounts.uuid", ondelete="CASCADE"), index=True)
    create_date: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class AuditEvent(Base):
    """One mutating API call: who made it, what it named, how it ended (never its body)."""

    __tablename__ = "audit_events"
    uuid: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_uuid)
    create_date: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)
    account_uuid: Mapped[str | None] = mapped_column(String(32), index=True, default=None)
    account_name: Mapped[str] = mapped_column(String(255), index=True)
    role: Mapped[str] = mapped_column(String(32))
    method: Mapped[str] = mapped_column(String(8))
    path: Mapped[str] = mapped_column(String(512))
    resource_uuid: Mapped[str | None] = mapped_column(String(32), index=True, default=None)
    status: Mapped[int] = mapped_column(Integer, index=True)
