"""The bearer token of each agent the controller deployed."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, String
from sqlalchemy.orm import Mapped, mapped_column

from controller.db.base import Base, utcnow


class AgentCredential(Base):
    """One agent's token, keyed by where it listens (``host:port``).

    The deploy generates the token and writes it to the agent's 0600 config;
    the controller presents it on every command to that agent and accepts it on
    that agent's callbacks and events. It is stored in clear (the controller
    has to present it), like the agent's own config file.
    """

    __tablename__ = "agent_credentials"
    endpoint: Mapped[str] = mapped_column(String(300), primary_key=True)
    token: Mapped[str] = mapped_column(String(128))
    role: Mapped[str] = mapped_column(String(32))
    create_date: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
