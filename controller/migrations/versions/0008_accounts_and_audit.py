"""accounts and audit: API accounts with a role, their token hashes, the audit log

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04 15:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'accounts',
        sa.Column('uuid', sa.String(length=32), nullable=False),
        sa.Column('name', sa.String(length=255), nullable=False),
        sa.Column('role', sa.String(length=32), nullable=False),
        sa.Column('create_date', sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint('uuid'),
        sa.UniqueConstraint('name', name='uq_accounts_name'),
    )
    op.create_index('ix_accounts_create_date', 'accounts', ['create_date'])
    op.create_table(
        'account_tokens',
        sa.Column('token_hash', sa.String(length=64), nullable=False),
        sa.Column('account_uuid', sa.String(length=32), nullable=False),
        sa.Column('create_date', sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(['account_uuid'], ['accounts.uuid'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('token_hash'),
    )
    op.create_index('ix_account_tokens_account_uuid', 'account_tokens', ['account_uuid'])
    op.create_table(
        'audit_events',
        sa.Column('uuid', sa.String(length=32), nullable=False),
        sa.Column('create_date', sa.DateTime(), nullable=False),
        sa.Column('account_uuid', sa.String(length=32), nullable=True),
        sa.Column('account_name', sa.String(length=255), nullable=False),
        sa.Column('role', sa.String(length=32), nullable=False),
        sa.Column('method', sa.String(length=8), nullable=False),
        sa.Column('path', sa.String(length=512), nullable=False),
        sa.Column('resource_uuid', sa.String(length=32), nullable=True),
        sa.Column('status', sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint('uuid'),
    )
    for col in ('create_date', 'account_uuid', 'account_name', 'resource_uuid', 'status'):
        op.create_index(f'ix_audit_events_{col}', 'audit_events', [col])


def downgrade() -> None:
    op.drop_table('audit_events')
    op.drop_table('account_tokens')
    op.drop_table('accounts')
