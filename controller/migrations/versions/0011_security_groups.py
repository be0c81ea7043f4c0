"""security groups: SecurityGroup, its rules, and the NICs in each group

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-05 17:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0011'
down_revision = '0010'
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


def upgrade() -> None:
    op.create_table('security_groups', *_resource_columns(), sa.PrimaryKeyConstraint('uuid'))
    for col in ('create_date', 'name', 'state'):
        op.create_index(f'ix_security_groups_{col}', 'security_groups', [col], unique=False)
    op.create_table(
        'security_group_rules',
        sa.Column('security_group_uuid', sa.String(length=32), nullable=False),
        sa.Column('direction', sa.String(length=16), nullable=False),
        sa.Column('protocol', sa.String(length=16), nullable=False),
        sa.Column('port_start', sa.Integer(), nullable=True),
        sa.Column('port_end', sa.Integer(), nullable=True),
        sa.Column('cidr', sa.String(length=64), nullable=True),
        sa.Column('remote_group_uuid', sa.String(length=32), nullable=True),
        *_resource_columns(),
        sa.ForeignKeyConstraint(['security_group_uuid'], ['security_groups.uuid'], ),
        sa.ForeignKeyConstraint(['remote_group_uuid'], ['security_groups.uuid'], ),
        sa.PrimaryKeyConstraint('uuid'),
    )
    for col in ('create_date', 'name', 'state', 'security_group_uuid', 'remote_group_uuid'):
        op.create_index(f'ix_security_group_rules_{col}', 'security_group_rules', [col], unique=False)
    op.create_table(
        'vm_nic_security_group_refs',
        sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
        sa.Column('vm_nic_uuid', sa.String(length=32), nullable=False),
        sa.Column('security_group_uuid', sa.String(length=32), nullable=False),
        sa.ForeignKeyConstraint(['vm_nic_uuid'], ['vm_nics.uuid'], ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['security_group_uuid'], ['security_groups.uuid'], ),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('vm_nic_uuid', 'security_group_uuid'),
    )
    for col in ('vm_nic_uuid', 'security_group_uuid'):
        op.create_index(f'ix_vm_nic_security_group_refs_{col}', 'vm_nic_security_group_refs', [col],
                        unique=False)


def downgrade() -> None:
    op.drop_table('vm_nic_security_group_refs')
    op.drop_table('security_group_rules')
    op.drop_table('security_groups')
