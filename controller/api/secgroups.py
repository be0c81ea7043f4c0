"""``GET /v1/security-groups/<uuid>/members``: the NICs in a group, with their VMs and
addresses (what the group's filters and the rules naming it are built from)."""

from __future__ import annotations

from flask import Blueprint, Response

from controller.api.http import json_response
from controller.core import Controller
from controller.services import secgroups


def secgroup_routes(bp: Blueprint, ctl: Controller) -> None:

    @bp.get("/security-groups/<uuid>/members")
    def security_group_members(uuid: str) -> Response:
        """Every NIC in the group: ``vmNicUuid``, ``vmUuid``, ``l3NetworkUuid``, ``ip``, ``mac``."""
        members = secgroups.member_nics(ctl, uuid)
        return json_response({"securityGroupUuid": uuid, "total": len(members), "members": members})
