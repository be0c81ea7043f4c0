"""agent_credentials: a bearer token per deployed agent

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-21 12:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'agent_credentials',
        sa.Column('endpoint', sa.String(length=300), nullable=False),
        sa.Column('token', sa.String(length=128), nullable=False),
        sa.Column('role', sa.String(length=32), nullable=False),
        sa.Column('create_date', sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint('endpoint'),
    )


def downgrade() -> None:
    op.drop_table('agent_credentials')
