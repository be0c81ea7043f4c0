"""backup policies: BackupPolicy, the VMs attached to one, and which backups a policy made

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-05 08:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'backup_policies',
        sa.Column('interval_seconds', sa.Integer(), nullable=True),
        sa.Column('cron_expression', sa.String(length=255), nullable=True),
        sa.Column('retention_count', sa.Integer(), nullable=False),
        sa.Column('backup_storage_uuid', sa.String(length=32), nullable=False),
        sa.Column('uuid', sa.String(length=32), nullable=False),
        sa.Column('name', sa.String(length=255), nullable=False),
        sa.Column('description', sa.String(length=2048), nullable=True),
        sa.Column('state', sa.String(length=32), nullable=False),
        sa.Column('create_date', sa.DateTime(), nullable=False),
        sa.Column('last_op_date', sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(['backup_storage_uuid'], ['backup_storages.uuid'], ),
        sa.PrimaryKeyConstraint('uuid'),
    )
    for col in ('create_date', 'name', 'state', 'backup_storage_uuid'):
        op.create_index(f'ix_backup_policies_{col}', 'backup_policies', [col], unique=False)
    op.create_table(
        'vm_backup_policy_refs',
        sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
        sa.Column('backup_policy_uuid', sa.String(length=32), nullable=False),
        sa.Column('vm_uuid', sa.String(length=32), nullable=False),
        sa.Column('attach_date', sa.DateTime(), nullable=False),
        sa.Column('last_run_at', sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(['backup_policy_uuid'], ['backup_policies.uuid'], ),
        sa.ForeignKeyConstraint(['vm_uuid'], ['vms.uuid'], ),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('vm_uuid'),
    )
    op.create_index('ix_vm_backup_policy_refs_backup_policy_uuid', 'vm_backup_policy_refs',
                    ['backup_policy_uuid'], unique=False)
    with op.batch_alter_table('vm_backups') as b:
        b.add_column(sa.Column('backup_policy_uuid', sa.String(length=32), nullable=True))
        b.create_index('ix_vm_backups_backup_policy_uuid', ['backup_policy_uuid'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('vm_backups') as b:
        b.drop_index('ix_vm_backups_backup_policy_uuid')
        b.drop_column('backup_policy_uuid')
    op.drop_table('vm_backup_policy_refs')
    op.drop_table('backup_policies')
