"""Count the SQL statements a controller runs (a deterministic stand-in for timing it)."""

from __future__ import annotations

import os
import threading
import traceback
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, event

import controller
from controller.db.base import Database

_PACKAGE = os.path.dirname(controller.__file__) + os.sep
_HELPERS = os.path.join(_PACKAGE, "db", "base.py")


@dataclass
class Statement:
    """One statement: its kind (SELECT, INSERT, ...), its SQL and the controller code
    that ran it (innermost frame last, the database helpers left out)."""

    kind: str
    sql: str
    site: tuple[str, ...]


@dataclass
class StatementLog:
    """The statements run while :func:`counting` was open, from every thread."""

    statements: list[Statement] = field(default_factory=list)
    _mu: threading.Lock = field(default_factory=threading.Lock)

    def __len__(self) -> int:
        return len(self.statements)

    def by_kind(self) -> Counter[str]:
        return Counter(st.kind for st in self.statements)

    def by_site(self) -> Counter[str]:
        return Counter(st.site[-1] if st.site else "?" for st in self.statements)

    def report(self) -> str:
        """One line a statement, to read when a bound is broken."""
        return "\n".join(f"{st.kind:6} {' <- '.join(reversed(st.site[-3:]))}: {st.sql[:100]}"
                         for st in self.statements)

    def add(self, sql: str) -> None:
        site = tuple(f"{f.filename.removeprefix(_PACKAGE)}:{f.lineno} {f.name}"
                     for f in traceback.extract_stack()
                     if f.filename.startswith(_PACKAGE) and f.filename != _HELPERS)
        kind = sql.lstrip().split(None, 1)[0].upper() if sql.strip() else "?"
        with self._mu:
            self.statements.append(Statement(kind, " ".join(sql.split()), site))


@contextmanager
def counting(db: Database) -> Iterator[StatementLog]:
    """Log every statement sent through the database's engines while inside.

    SQLite's BEGIN goes straight to the driver (see :mod:`controller.db.base`), so it
    is not counted; COMMIT and ROLLBACK are not statements either."""
    log = StatementLog()

    def before(_conn: Any, _cursor: Any, sql: str, *_args: Any) -> None:
        log.add(sql)

    engines: list[Engine] = list({id(e): e for e in (db.engine, db.read_engine)}.values())
    for e in engines:
        event.listen(e, "before_cursor_execute", before)
    try:
        yield log
    finally:
        for e in engines:
            event.remove(e, "before_cursor_execute", before)
