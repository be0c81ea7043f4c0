"""Security groups: allow rules, and the VM NICs each group holds.

A :class:`SecurityGroupRule` allows traffic into (``ingress``) or out of
(``egress``) the NICs of its group, for a protocol and a port range, from or
to either a CIDR or the NICs of another group (``remote_group_uuid``: its
members' addresses, kept current on the hosts as members come and go). A NIC
in at least one group gets only what its groups allow; a NIC in none is not
filtered beyond anti-spoofing. :class:`VmNicSecurityGroupRef` rows go with
their NIC (``ON DELETE CASCADE``).
"""

from __future__ import annotations

from sqlalchemy import ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from controller.db.base import Base, ResourceMixin


class SecurityGroup(ResourceMixin, Base):
    """A named set of allow rules applied to the NICs attached to it."""

    __tablename__ = "security_groups"


class SecurityGroupRule(ResourceMixin, Base):
    """One allow rule. ``direction``: ingress or egress; ``protocol``: tcp, udp, icmp or all;
    exactly one of ``cidr`` and ``remote_group_uuid``."""

    __tablename__ = "security_group_rules"
    security_group_uuid: Mapped[str] = mapped_column(ForeignKey("security_groups.uuid"), index=True)
    direction: Mapped[str] = mapped_column(String(16))
    protocol: Mapped[str] = mapped_column(String(16))
    port_start: Mapped[int | None] = mapped_column(Integer, default=None)
    port_end: Mapped[int | None] = mapped_column(Integer, default=None)
    cidr: Mapped[str | None] = mapped_column(String(64), default=None)
    remote_group_uuid: Mapped[str | None] = mapped_column(ForeignKey("security_groups.uuid"), index=True,
                                                          default=None)


class VmNicSecurityGroupRef(Base):
    """A NIC in a group."""

    __tablename__ = "vm_nic_security_group_refs"
    __table_args__ = (UniqueConstraint("vm_nic_uuid", "security_group_uuid"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    vm_nic_uuid: Mapped[str] = mapped_column(ForeignKey("vm_nics.uuid", ondelete="CASCADE"), index=True)
    security_group_uuid: Mapped[str] = mapped_column(ForeignKey("security_groups.uuid"), index=True)
