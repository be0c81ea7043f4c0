"""primary storage: what a Ceph primary storage needs (monitors, pools, cephx user, key reference)

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21 11:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None

COLUMNS = [('ceph_monitors', 1024), ('ceph_pool', 64), ('ceph_cache_pool', 64), ('ceph_user', 80),
           ('ceph_key_ref', 128), ('ceph_fsid', 36), ('ceph_secret_uuid', 32)]


def upgrade() -> None:
    with op.batch_alter_table('primary_storages', schema=None) as batch_op:
        for name, length in COLUMNS:
            batch_op.add_column(sa.Column(name, sa.String(length=length), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('primary_storages', schema=None) as batch_op:
        for name, _ in reversed(COLUMNS):
            batch_op.drop_column(name)
