"""Controller nodes sharing one database: each holds a lease it renews by heartbeat."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, String
from sqlalchemy.orm import Mapped, mapped_column

from controller.db.base import Base, utcnow

#: a node renewing its lease; one whose lease ran out and whose jobs a peer ended
NODE_STATES = ("up", "lost")


class ControllerNode(Base):
    """One ``kvmcloud serve --node-id`` process: in the ring while ``lease_expiry`` is ahead."""

    __tablename__ = "controller_nodes"
    node_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    url: Mapped[str] = mapped_column(String(255))
    state: Mapped[str] = mapped_column(String(16), default="up", index=True)
    heartbeat: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    lease_expiry: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)
    joined: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    #: the node that ended this one's jobs after its lease ran out
    taken_over_by: Mapped[str | None] = mapped_column(String(64), default=None)
