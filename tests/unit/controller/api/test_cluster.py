"""``GET /v1/cluster`` on a single node: itself, the whole ring."""

from __future__ import annotations

from tests.unit.controller.harness import Cloud


def test_a_single_node_answers_itself_with_the_whole_ring(cloud: Cloud) -> None:
    view = cloud.ok("GET", "/v1/cluster")
    assert view["nodeId"] is None and view["ringSkew"] == 1.0
    assert [(n["nodeId"], n["state"], n["live"], n["share"]) for n in view["nodes"]] == [
        (None, "up", True, 1.0)]
    assert "/v1/cluster" in cloud.ok("GET", "/v1/openapi.json")["paths"]
