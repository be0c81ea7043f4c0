"""Declarative base, the columns every resource shares, and engines.

SQLite (the default) runs in WAL mode with two engines over one file: writers
take the write lock up front (``BEGIN IMMEDIATE``) so two transactions never
deadlock upgrading a read lock, readers stay deferred and never block. SQLite
has one writer at a time anyway, so this process queues its writers on a
mutex instead of letting them spin in SQLite's busy handler (which sleeps in
growing steps and wrecks latency under load). Other databases (PostgreSQL,
MariaDB) use one engine for both and no mutex.

A database may abort a transaction to break a deadlock (PostgreSQL 40P01,
MariaDB 1213), for a serialization failure (40001) or a lock wait timeout
(MariaDB 1205), and SQLite answers "database is locked" when another process
holds the file past the busy timeout. :meth:`Database.transaction` runs a body
again from its start on those errors; ``with db.write()`` cannot (a context
manager cannot re-run its block), so contended writes go through it.
"""

from __future__ import annotations

import functools
import logging
import random
import sqlite3
import threading
import time
import uuid as uuidlib
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import (
    Connection,
    DateTime,
    Engine,
    String,
    bindparam,
    create_engine,
    event,
    insert,
    select,
)
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker
from sqlalchemy.pool import StaticPool
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt, wait_random_exponential

from controller.db.migrate import upgrade

log = logging.getLogger(__name__)
T = TypeVar("T")
#: how often a transaction runs before its transient error is raised
WRITE_ATTEMPTS = 8
#: the most seconds waited (at random) before the second attempt; then each doubles, to 1 s
FIRST_WAIT = 0.02
_RETRY_SQLSTATES = frozenset({"40P01", "40001"})  # deadlock_detected, serialization_failure
_RETRY_MYSQL_CODES = frozenset({1213, 1205})  # ER_LOCK_DEADLOCK, ER_LOCK_WAIT_TIMEOUT


def new_uuid() -> str:
    """A resource UUID: 32 hex digits, as ZStack spells them."""
    return uuidlib.uuid4().hex


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


@compiles(DateTime, "mysql", "mariadb")
def _mysql_datetime(_type: DateTime, _compiler: Any, **_kw: Any) -> str:
    """Microseconds on MySQL/MariaDB too (a bare DATETIME keeps whole seconds), in every
    table a migration makes: rows made in one second keep their creation order."""
    return "DATETIME(6)"


def is_transient(e: BaseException) -> bool:
    """True when the database gave up on the transaction and running it again can succeed."""
    if not isinstance(e, DBAPIError) or e.orig is None:
        return False
    orig = e.orig
    if getattr(orig, "sqlstate", None) in _RETRY_SQLSTATES:  # psycopg
        return True
    if isinstance(orig, sqlite3.OperationalError):
        code = getattr(orig, "sqlite_errorcode", None)
        return (code is not None and code & 0xFF == sqlite3.SQLITE_BUSY) or \
            "database is locked" in str(orig)
    errno = next(iter(orig.args), None)  # PyMySQL: (errno, message)
    return errno in _RETRY_MYSQL_CODES


def _log_failed(body: object, attempt: int, e: BaseException | None) -> None:
    log.warning("write transaction %s: attempt %d failed (%s); running it again",
                getattr(body, "__qualname__", body), attempt, getattr(e, "orig", e))


def _log_retry(state: RetryCallState) -> None:
    e = state.outcome.exception() if state.outcome is not None else None
    body = next(iter(state.args), None)  # Database._once(body)
    _log_failed(body, state.attempt_number + 1, e)  # the first attempt ran before tenacity's


class Base(DeclarativeBase):
    """Base of every table."""


def core(s: Session | Connection) -> Connection:
    """The connection under a session (or the connection itself), for core statements."""
    return s.connection() if isinstance(s, Session) else s


def insert_row(s: Session | Connection, row: Base) -> None:
    """INSERT a new object's row with one prebuilt core statement.

    The unit of work costs several times more for a single row. Columns the
    object leaves unset get their defaults, set on the object too, so it holds
    what was written; it stays out of the session. Every primary key must be set.
    """
    table: Any = row.__table__
    given = row.__dict__
    values: dict[str, Any] = {}
    for c in table.c:
        if c.key in given:
            values[c.key] = given[c.key]
            continue
        v = None
        if c.default is not None and c.default.is_scalar:
            v = c.default.arg
        elif c.default is not None and c.default.is_callable:
            v = c.default.arg(None)
        setattr(row, c.key, v)
        values[c.key] = v
    core(s).execute(_insert(table), values)


M = TypeVar("M", bound=Base)


def fetch_all(s: Session | Connection, model: type[M], stmt: Any,
              params: dict[str, Any]) -> list[M]:
    """Rows of a prebuilt ``select(*table.c)`` as detached objects, without the ORM's loading."""
    table: Any = model.__table__
    return [detached(model, table, r) for r in core(s).execute(stmt, params)]


def detached(model: type[M], table: Any, row: Any) -> M:
    """An object holding the row's ``table`` columns, in no session."""
    m = row._mapping
    return model(**{c.key: m[c] for c in table.c})


@functools.cache
def _insert(table: Any) -> Any:
    return insert(table)


@functools.cache
def by_uuid(table: Any) -> Any:
    """``SELECT <every column> FROM table WHERE uuid = :uuid``, built once per table."""
    return select(*table.c).where(table.c.uuid == bindparam("uuid"))


class ResourceMixin:
    """UUID, name, description, dates and state: what every resource has."""

    uuid: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_uuid)
    name: Mapped[str] = mapped_column(String(255), index=True)
    description: Mapped[str | None] = mapped_column(String(2048), default=None)
    state: Mapped[str] = mapped_column(String(32), default="Enabled", index=True)
    create_date: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)
    last_op_date: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=60000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def _make_sqlite(url: str, begin: str) -> Engine:
    memory = url in ("sqlite://", "sqlite:///:memory:")
    kwargs: dict[str, Any] = {"connect_args": {"check_same_thread": False, "timeout": 60}}
    if memory:
        kwargs["poolclass"] = StaticPool
    else:
        kwargs.update(pool_size=16, max_overflow=32)
    engine = create_engine(url, **kwargs)
    event.listen(engine, "connect", _sqlite_pragmas)  # a pool event: connections keep none

    def _begin(dbapi_conn: Any) -> None:
        # straight to the driver: exec_driver_sql's machinery costs more than the BEGIN
        dbapi_conn.driver_connection.execute(begin)

    # the dialect's hook, not a "begin" event: an engine event makes every statement of
    # every connection go through SQLAlchemy's event dispatch (a few percent of a create)
    setattr(engine.dialect, "do_begin", _begin)  # noqa: B010 - this engine's dialect only
    return engine


class Database:
    """Engines and session factories for one database URL."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        if self.is_sqlite:
            self.engine = _make_sqlite(url, "BEGIN IMMEDIATE")
            memory = url in ("sqlite://", "sqlite:///:memory:")
            self.read_engine = self.engine if memory else _make_sqlite(url, "BEGIN")
        else:
            # READ COMMITTED, PostgreSQL's default, also on MariaDB (whose default,
            # REPEATABLE READ, would show a retry the snapshot it already lost on)
            self.engine = create_engine(url, pool_size=16, max_overflow=32, pool_pre_ping=True,
                                        isolation_level="READ COMMITTED")
            self.read_engine = self.engine
        self._write_mu: AbstractContextManager[object] = (
            threading.RLock() if self.is_sqlite else nullcontext())
        self._writer = sessionmaker(self.engine, expire_on_commit=False)
        self._reader = sessionmaker(self.read_engine, expire_on_commit=False)
        # the attempts after the first (see _run)
        self._retrying = Retrying(
            retry=retry_if_exception(is_transient), stop=stop_after_attempt(WRITE_ATTEMPTS - 1),
            wait=wait_random_exponential(multiplier=0.04, max=1.0), before_sleep=_log_retry,
            reraise=True)

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A short write transaction: committed on success, rolled back on error."""
        with self._write_mu, self._writer() as session, session.begin():
            yield session

    def transaction(self, body: Callable[[Session], T]) -> T:
        """Run ``body(session)`` in a write transaction; again from the start (jittered
        backoff, :data:`WRITE_ATTEMPTS` at most) when the database aborts it as a deadlock
        victim, for a serialization failure or a lock wait timeout, or finds SQLite busy.

        ``body`` may run more than once, so it must do nothing outside the session (no
        agent call, no state kept from a failed attempt); it returns what the caller keeps.
        """
        return self._run(self._once, body)

    def _run(self, once: Callable[[Callable[[Any], T]], T], body: Callable[[Any], T]) -> T:
        """The first attempt straight, the others through tenacity: its machinery (state,
        futures, stop and wait checks) costs about a third of a short transaction, which
        runs several times per VM created, and is only needed once the database refused one."""
        try:
            return once(body)
        except DBAPIError as e:
            if not is_transient(e):
                raise
            _log_failed(body, 1, e)
        time.sleep(random.uniform(0, FIRST_WAIT))  # noqa: S311 - jitter, not a secret
        return self._retrying(once, body)

    def _once(self, body: Callable[[Session], T]) -> T:
        with self.write() as s:
            return body(s)

    def transaction_core(self, body: Callable[[Connection], T]) -> T:
        """:meth:`transaction` on a bare connection, for core statements only (no session's
        cost); run again the same way."""
        return self._run(self._once_core, body)

    def _once_core(self, body: Callable[[Connection], T]) -> T:
        with self._write_mu, self.engine.begin() as conn:
            return body(conn)

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A read-only session that never takes the write lock."""
        with self._reader() as session:  # closing ends the transaction, keeps loaded rows
            yield session

    def create_all(self) -> None:
        """Bring the schema to the newest migration."""
        upgrade(self)

    def dispose(self) -> None:
        self.engine.dispose()
        if self.read_engine is not self.engine:
            self.read_engine.dispose()
