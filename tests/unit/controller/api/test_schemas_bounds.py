"""Numbers in request bodies are bounded so that they fit their 64-bit columns (found by fuzzing)."""

from __future__ import annotations

import pytest

from tests.unit.controller.harness import Cloud


@pytest.mark.parametrize(("path", "body"), [
    ("/v1/backup-storages", {"name": "b1", "type": "sftp", "hostname": "10.0.0.9", "url": "/store"}),
    ("/v1/primary-storages", {"name": "p1", "type": "nfs", "url": "10.0.0.9:/export",
                              "mountPath": "/mnt/p1"}),
])
def test_a_capacity_beyond_64_bits_is_a_400_naming_it(cloud: Cloud, path: str, body: dict[str, object]) -> None:
    zone = cloud.ok("POST", "/v1/zones", {"name": "z1"})["uuid"]
    body = {**body, ("zoneUuids" if "backup" in path else "zoneUuid"): [zone] if "backup" in path else zone}
    status, reply = cloud.call("POST", path, {**body, "totalCapacity": 2**63})
    assert status == 400, reply
    assert reply["error"]["details"]["field"] == "totalCapacity"
    assert "totalCapacity" in reply["error"]["message"]
