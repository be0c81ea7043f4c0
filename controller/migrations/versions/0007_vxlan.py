"""vxlan: a VTEP address per host, a VNI per L2 network (unique in its zone)

VXLAN networks made before kept their VNI in ``vlan``; it moves to ``vni``.
Hosts get their management address as VTEP when it is an IPv4 address.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-21 12:10:00
"""

from __future__ import annotations

import ipaddress

import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None

hosts = sa.table('hosts', sa.column('uuid', sa.String), sa.column('management_ip', sa.String),
                 sa.column('vtep_ip', sa.String))
l2 = sa.table('l2_networks', sa.column('type', sa.String), sa.column('vlan', sa.Integer),
              sa.column('vni', sa.Integer))


def _ipv4(text: str) -> str | None:
    try:
        return str(ipaddress.IPv4Address(text))
    except ValueError:
        return None


def upgrade() -> None:
    with op.batch_alter_table('hosts', schema=None) as batch_op:
        batch_op.add_column(sa.Column('vtep_ip', sa.String(length=64), nullable=True))
    with op.batch_alter_table('l2_networks', schema=None) as batch_op:
        batch_op.add_column(sa.Column('vni', sa.Integer(), nullable=True))
    conn = op.get_bind()
    # two statements: MySQL assigns left to right, seeing the values just set
    conn.execute(l2.update().where(l2.c.type == 'vxlan').values(vni=l2.c.vlan))
    conn.execute(l2.update().where(l2.c.type == 'vxlan').values(vlan=None))
    for uuid, ip in conn.execute(sa.select(hosts.c.uuid, hosts.c.management_ip)).all():
        if _ipv4(ip):
            conn.execute(hosts.update().where(hosts.c.uuid == uuid).values(vtep_ip=_ipv4(ip)))
    with op.batch_alter_table('l2_networks', schema=None) as batch_op:
        batch_op.create_unique_constraint('uq_l2_networks_zone_vni', ['zone_uuid', 'vni'])


def downgrade() -> None:
    conn = op.get_bind()
    conn.execute(l2.update().where(l2.c.type == 'vxlan').values(vlan=l2.c.vni))
    with op.batch_alter_table('l2_networks', schema=None) as batch_op:
        batch_op.drop_constraint('uq_l2_networks_zone_vni', type_='unique')
        batch_op.drop_column('vni')
    with op.batch_alter_table('hosts', schema=None) as batch_op:
        batch_op.drop_column('vtep_ip')
