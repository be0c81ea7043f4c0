"""Jobs: operations that reach agents, pollable and cancellable."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, DateTime, Float, String
from sqlalchemy.orm import Mapped, mapped_column

from controller.db.base import Base, new_uuid, utcnow

JOB_STATES = ("queued", "running", "succeeded", "failed", "cancelled")
FINAL_STATES = frozenset({"succeeded", "failed", "cancelled"})


class Job(Base):
    """One API operation; ``state`` moves queued → running → succeeded|failed|cancelled."""

    __tablename__ = "jobs"
    uuid: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_uuid)
    kind: Mapped[str] = mapped_column(String(64))
    resource_type: Mapped[str] = mapped_column(String(64))
    resource_uuid: Mapped[str | None] = mapped_column(String(32), index=True, default=None)
    state: Mapped[str] = mapped_column(String(16), default="queued", index=True)
    stage: Mapped[str | None] = mapped_column(String(128), default=None)
    percent: Mapped[float | None] = mapped_column(Float, default=None)
    result: Mapped[dict | None] = mapped_column(JSON, default=None)
    error: Mapped[dict | None] = mapped_column(JSON, default=None)
    create_date: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)
    last_op_date: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)
    #: the controller node running the job (None: a single-node controller)
    node_id: Mapped[str | None] = mapped_column(String(64), index=True, default=None)
