"""``GET /v1/cluster``: the controller nodes sharing the database, and the ring's shares."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response

from controller.api.http import json_response
from controller.core import Controller


def cluster_view(ctl: Controller) -> dict[str, Any]:
    """Every node the database knows (live or lost) with its share of the ring."""
    m = ctl.membership
    if m is None:
        return {"nodeId": None, "ringSkew": 1.0, "nodes": [{
            "nodeId": None, "url": ctl.settings.callback_base, "state": "up", "live": True,
            "share": 1.0}]}
    ring = m.refresh()
    shares = ring.shares()
    nodes = [{"nodeId": n.node_id, "url": n.url, "state": n.state, "live": n.live,
              "heartbeat": n.heartbeat, "leaseExpiry": n.lease_expiry,
              "takenOverBy": n.taken_over_by, "share": round(shares.get(n.node_id, 0.0), 4)}
             for n in m.nodes()]
    return {"nodeId": m.node_id, "ringSkew": round(ring.skew(), 4), "nodes": nodes}


def cluster_routes(bp: Blueprint, ctl: Controller) -> None:

    @bp.get("/cluster")
    def cluster() -> Response:
        """The controller nodes, their state and their share of the ring."""
        return json_response(cluster_view(ctl))
