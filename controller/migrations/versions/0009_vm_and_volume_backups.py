"""vm and volume backups: VmBackup, VolumeBackup and where each is stored

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05 07:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def _resource_columns() -> list[sa.Column]:
    return [
        sa.Column('uuid', sa.String(length=32), nullable=False),
        sa.Column('name', sa.String(length=255), nullable=False),
        sa.Column('description', sa.String(length=2048), nullable=True),
        sa.Column('state', sa.String(length=32), nullable=False),
        sa.Column('create_date', sa.DateTime(), nullable=False),
        sa.Column('last_op_date', sa.DateTime(), nullable=False),
    ]


def _resource_indexes(table: str, *more: str) -> None:
    for col in ('create_date', 'name', 'state', *more):
        op.create_index(f'ix_{table}_{col}', table, [col], unique=False)


def upgrade() -> None:
    op.create_table(
        'vm_backups',
        sa.Column('vm_uuid', sa.String(length=32), nullable=False),
        sa.Column('root_volume_backup_uuid', sa.String(length=32), nullable=True),
        sa.Column('vm_state', sa.String(length=32), nullable=False),
        sa.Column('vm_metadata', sa.JSON(), nullable=False),
        sa.Column('status', sa.String(length=32), nullable=False),
        *_resource_columns(),
        sa.PrimaryKeyConstraint('uuid'),
    )
    _resource_indexes('vm_backups', 'vm_uuid')
    op.create_table(
        'volume_backups',
        sa.Column('volume_uuid', sa.String(length=32), nullable=False),
        sa.Column('vm_backup_uuid', sa.String(length=32), nullable=True),
        sa.Column('parent_backup_uuid', sa.String(length=32), nullable=True),
        sa.Column('volume_type', sa.String(length=16), nullable=False),
        sa.Column('device_id', sa.Integer(), nullable=True),
        sa.Column('install_path', sa.String(length=256), nullable=True),
        sa.Column('digest', sa.String(length=80), nullable=True),
        sa.Column('size', sa.BigInteger(), nullable=False),
        sa.Column('actual_size', sa.BigInteger(), nullable=False),
        sa.Column('format', sa.String(length=16), nullable=False),
        sa.Column('status', sa.String(length=32), nullable=False),
        *_resource_columns(),
        sa.ForeignKeyConstraint(['vm_backup_uuid'], ['vm_backups.uuid'], ),
        sa.PrimaryKeyConstraint('uuid'),
    )
    _resource_indexes('volume_backups', 'volume_uuid', 'vm_backup_uuid')
    op.create_table(
        'volume_backup_storage_refs',
        sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
        sa.Column('volume_backup_uuid', sa.String(length=32), nullable=False),
        sa.Column('backup_storage_uuid', sa.String(length=32), nullable=False),
        sa.Column('install_path', sa.String(length=256), nullable=False),
        sa.ForeignKeyConstraint(['backup_storage_uuid'], ['backup_storages.uuid'], ),
        sa.ForeignKeyConstraint(['volume_backup_uuid'], ['volume_backups.uuid'], ),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('volume_backup_uuid', 'backup_storage_uuid'),
    )
    for col in ('backup_storage_uuid', 'volume_backup_uuid'):
        op.create_index(f'ix_volume_backup_storage_refs_{col}', 'volume_backup_storage_refs', [col],
                        unique=False)


def downgrade() -> None:
    op.drop_table('volume_backup_storage_refs')
    op.drop_table('volume_backups')
    op.drop_table('vm_backups')
