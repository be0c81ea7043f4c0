"""Alembic environment: runs on the connection the controller hands over."""

from __future__ import annotations

from alembic import context

from controller.db.models import Base

config = context.config
connection = config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through controller.db.migrate")
context.configure(connection=connection, target_metadata=Base.metadata,
                  render_as_batch=True, compare_type=True)
with context.begin_transaction():
    context.run_migrations()
