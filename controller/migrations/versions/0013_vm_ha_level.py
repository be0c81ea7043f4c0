"""VM high availability: each VM's haLevel (none, restart)

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06 03:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('vms') as batch:
        batch.add_column(sa.Column('ha_level', sa.String(length=16), nullable=False,
                                   server_default='none'))


def downgrade() -> None:
    with op.batch_alter_table('vms') as batch:
        batch.drop_column('ha_level')
