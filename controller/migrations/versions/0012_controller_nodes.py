"""controller nodes: membership leases, and the node running each job

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06 00:05:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'controller_nodes',
        sa.Column('node_id', sa.String(length=64), nullable=False),
        sa.Column('url', sa.String(length=255), nullable=False),
        sa.Column('state', sa.String(length=16), nullable=False),
        sa.Column('heartbeat', sa.DateTime(), nullable=False),
        sa.Column('lease_expiry', sa.DateTime(), nullable=False),
        sa.Column('joined', sa.DateTime(), nullable=False),
        sa.Column('taken_over_by', sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint('node_id'),
    )
    op.create_index('ix_controller_nodes_state', 'controller_nodes', ['state'], unique=False)
    op.create_index('ix_controller_nodes_lease_expiry', 'controller_nodes', ['lease_expiry'],
                    unique=False)
    with op.batch_alter_table('jobs') as batch:
        batch.add_column(sa.Column('node_id', sa.String(length=64), nullable=True))
        batch.create_index('ix_jobs_node_id', ['node_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('jobs') as batch:
        batch.drop_index('ix_jobs_node_id')
        batch.drop_column('node_id')
    op.drop_index('ix_controller_nodes_lease_expiry', table_name='controller_nodes')
    op.drop_index('ix_controller_nodes_state', table_name='controller_nodes')
    op.drop_table('controller_nodes')
