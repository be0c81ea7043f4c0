"""L2 and L3 networks, IP ranges and the IPs handed out from them."""

from __future__ import annotations

from sqlalchemy import BigInteger, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from controller.db.base import Base, ResourceMixin, new_uuid


class L2Network(ResourceMixin, Base):
    """A layer-2 segment on hosts' physical interface: novlan, vlan or vxlan.

    ``vlan`` is the 802.1Q id of a vlan network, ``vni`` the VXLAN network
    identifier of a vxlan one (unique in its zone: a host names the device by it).
    """

    __tablename__ = "l2_networks"
    __table_args__ = (UniqueConstraint("zone_uuid", "vni", name="uq_l2_networks_zone_vni"),)
    zone_uuid: Mapped[str] = mapped_column(ForeignKey("zones.uuid"), index=True)
    type: Mapped[str] = mapped_column(String(16))
    physical_interface: Mapped[str] = mapped_column(String(32))
    vlan: Mapped[int | None] = mapped_column(Integer, default=None)
    vni: Mapped[int | None] = mapped_column(Integer, default=None)


class L2NetworkClusterRef(Base):
    """An L2 network attached to a cluster (realised on its hosts)."""

    __tablename__ = "l2_network_cluster_refs"
    __table_args__ = (UniqueConstraint("l2_network_uuid", "cluster_uuid"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    l2_network_uuid: Mapped[str] = mapped_column(ForeignKey("l2_networks.uuid"), index=True)
    cluster_uuid: Mapped[str] = mapped_column(ForeignKey("clusters.uuid"), index=True)


class L3Network(ResourceMixin, Base):
    """An IP network on an L2 network, with flat DHCP on each host."""

    __tablename__ = "l3_networks"
    zone_uuid: Mapped[str] = mapped_column(ForeignKey("zones.uuid"), index=True)
    l2_network_uuid: Mapped[str] = mapped_column(ForeignKey("l2_networks.uuid"), index=True)
    dns: Mapped[str | None] = mapped_column(String(512), default=None)
    dns_domain: Mapped[str | None] = mapped_column(String(255), default=None)
    dhcp_server_ip: Mapped[str | None] = mapped_column(String(64), default=None)


class IpRange(ResourceMixin, Base):
    """A range of addresses of an L3 network, with its netmask and gateway."""

    __tablename__ = "ip_ranges"
    l3_network_uuid: Mapped[str] = mapped_column(ForeignKey("l3_networks.uuid"), index=True)
    start_ip: Mapped[str] = mapped_column(String(64))
    end_ip: Mapped[str] = mapped_column(String(64))
    netmask: Mapped[str] = mapped_column(String(64))
    gateway: Mapped[str] = mapped_column(String(64))


class UsedIp(Base):
    """An address taken from a range; unique per L3 network."""

    __tablename__ = "used_ips"
    __table_args__ = (UniqueConstraint("l3_network_uuid", "ip_int"),)
    uuid: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_uuid)
    ip_range_uuid: Mapped[str] = mapped_column(ForeignKey("ip_ranges.uuid"), index=True)
    l3_network_uuid: Mapped[str] = mapped_column(ForeignKey("l3_networks.uuid"), index=True)
    ip: Mapped[str] = mapped_column(String(64), index=True)
    ip_int: Mapped[int] = mapped_column(BigInteger)
