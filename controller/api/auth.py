"""Who calls the API, and what their role lets them do.

A caller presents ``Authorization: Bearer <token>``. The token is one of the
bootstrap tokens of the settings (``api_tokens``, ``KVMCLOUD_API_TOKENS``),
each an admin, or the token of an account in the database, which keeps only
its SHA-256 (:class:`controller.db.accounts.AccountToken`). Roles:

- ``admin``: everything, and alone may manage accounts and read the audit log;
- ``readonly``: ``GET`` (and ``HEAD``) only; any other method is a 403.

Without any credential the controller does not start, unless
``insecure_no_auth`` is set, which the settings allow on a loopback address
only; a call without a token is then an admin named ``anonymous``.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, inspect, select
from sqlalchemy.exc import IntegrityError

from controller.db.accounts import ROLES, Account, AccountToken
from controller.db.base import Database, new_uuid, utcnow
from controller.errors import Conflict, NotFound
from controller.services.common import to_dict
from controller.settings import Settings

log = logging.getLogger(__name__)

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
#: paths only an admin may use, even to read
ADMIN_PATHS = ("/v1/accounts", "/v1/audit-events")
TOKEN_PREFIX = "kc_"  # noqa: S105 - tells a kvmcloud token apart in a leak scan, not a secret


@dataclass(frozen=True)
class Identity:
    """The caller of one request: a name for the audit log, a role, the account if any."""

    name: str
    role: str
    account_uuid: str | None = None

    def may(self, method: str, path: str) -> bool:
        """Whether this caller may send ``method`` to ``path``."""
        if self.role == "admin":
            return True
        return method in SAFE_METHODS and not path.startswith(ADMIN_PATHS)


ANONYMOUS = Identity("anonymous", "admin")


class NoCredentials(RuntimeError):
    """The controller would serve its API to anyone; it refuses to start."""


def bearer(header: str) -> str:
    """The token of an ``Authorization`` header value ("" when it is not a bearer token)."""
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def token_hash(token: str) -> str:
    """What the database keeps of a token: its SHA-256, in hex."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    """A fresh account token: 256 random bits."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def count_accounts(db: Database) -> int:
    """How many accounts the database holds (0 when it has no accounts table yet)."""
    with db.read() as s:
        if not inspect(s.connection()).has_table(Account.__tablename__):
            return 0
        return int(s.scalar(select(func.count()).select_from(Account)) or 0)


def startup_problem(settings: Settings, accounts: int) -> str | None:
    """Why the controller must not start with these settings (None: it may)."""
    if settings.api_tokens or accounts or settings.insecure_no_auth:
        return None
    return ("refusing to start without API credentials: anyone reaching "
            f"{settings.listen} would be an admin. Give a bootstrap admin token (--api-token, "
            "or KVMCLOUD_API_TOKENS; accounts made with `kvmcloud account create` also count), "
            "or, for development on a loopback address only, --insecure-no-auth")


class ApiAuth:
    """Turns a presented token into an :class:`Identity`; creates and deletes accounts."""

    def __init__(self, settings: Settings, db: Database) -> None:
        self.db = db
        self.insecure = settings.insecure_no_auth
        self._bootstrap = [(token_hash(t), Identity(f"bootstrap:{token_hash(t)[:8]}", "admin"))
                           for t in settings.api_tokens]
        for t in settings.api_tokens:
            if len(t) < 16:
                log.warning("a bootstrap API token is shorter than 16 characters")
        problem = startup_problem(settings, count_accounts(db))
        if problem:
            raise NoCredentials(problem)
        if self.insecure:
            log.warning("insecure_no_auth: calls without a token are admin (%s)", settings.listen)

    def identify(self, presented: str) -> Identity | None:
        """Who presents ``presented`` (None: nobody; the call is a 401)."""
        if not presented:
            return ANONYMOUS if self.insecure else None
        digest = token_hash(presented)
        found = None
        for known, ident in self._bootstrap:  # every one compared: no early exit to time
            if hmac.compare_digest(digest, known):
                found = ident
        if found is not None:
            return found
        with self.db.read() as s:
            row = s.execute(select(Account.uuid, Account.name, Account.role)
                            .join(AccountToken, AccountToken.account_uuid == Account.uuid)
                            .where(AccountToken.token_hash == digest)).first()
        return Identity(row.name, row.role, row.uuid) if row is not None else None

    def create(self, name: str, role: str) -> tuple[dict[str, Any], str]:
        """A new account and its token (returned this once; only its hash is kept)."""
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}")
        token = new_token()
        account = Account(uuid=new_uuid(), name=name, role=role, create_date=utcnow())
        try:
            with self.db.write() as s:
                if s.scalar(select(Account.uuid).where(Account.name == name)) is not None:
                    raise Conflict(f"an account named {name!r} exists", field="name")
                s.add(account)
                s.flush()
                s.add(AccountToken(token_hash=token_hash(token), account_uuid=account.uuid,
                                   create_date=account.create_date))
        except IntegrityError:  # a create of the same name won the race
            raise Conflict(f"an account named {name!r} exists", field="name") from None
        log.info("account %s (%s) created", name, role)
        return to_dict(account), token

    def delete(self, uuid: str) -> None:
        """Delete an account and its token (refused for the last admin when nothing else can log in)."""
        with self.db.write() as s:
            account = s.get(Account, uuid)
            if account is None:
                raise NotFound(f"no account {uuid}", uuid=uuid)
            if account.role == "admin" and not self._bootstrap and not self.insecure:
                admins = s.scalar(select(func.count()).select_from(Account)
                                  .where(Account.role == "admin"))
                if admins == 1:
                    raise Conflict("this is the last admin account and no bootstrap token is "
                                   "configured: nobody could manage accounts after its deletion")
            s.execute(delete(AccountToken).where(AccountToken.account_uuid == uuid))
            s.delete(account)
        log.info("account %s (%s) deleted", account.name, account.role)
