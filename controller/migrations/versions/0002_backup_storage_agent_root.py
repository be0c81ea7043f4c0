"""backup storage: the store's directory on the agent's host

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21 11:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('backup_storages', schema=None) as batch_op:
        batch_op.add_column(sa.Column('agent_root', sa.String(length=1024), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('backup_storages', schema=None) as batch_op:
        batch_op.drop_column('agent_root')
