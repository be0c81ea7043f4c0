"""Query arguments shared by the routes: ``?wait=1&timeout=`` of job-backed calls."""

from __future__ import annotations

import pytest

from tests.unit.controller.harness import Cloud


@pytest.mark.parametrize("timeout", ["abc", "nan", "inf", "-1", ""])
def test_a_bad_wait_timeout_is_a_400_before_any_job_starts(cloud: Cloud, timeout: str) -> None:
    zone = cloud.ok("POST", "/v1/zones", {"name": "z1"})["uuid"]
    jobs_before = cloud.ok("GET", "/v1/jobs", count="1")["total"]
    status, body = cloud.call("DELETE", f"/v1/zones/{zone}", confirm="1", wait="1", timeout=timeout)
    assert status == 400, body
    assert body["error"]["details"]["field"] == "timeout"
    assert "timeout" in body["error"]["message"]
    assert cloud.ok("GET", "/v1/jobs", count="1")["total"] == jobs_before
    assert cloud.call("GET", f"/v1/zones/{zone}")[0] == 200


def test_a_bad_timeout_on_a_job_is_a_400(cloud: Cloud) -> None:
    zone = cloud.ok("POST", "/v1/zones", {"name": "z1"})["uuid"]
    job = cloud.ok("DELETE", f"/v1/zones/{zone}", confirm="1", wait="1", timeout="5")["job"]
    status, body = cloud.call("GET", f"/v1/jobs/{job['uuid']}", wait="1", timeout="soon")
    assert (status, body["error"]["details"]["field"]) == (400, "timeout")
    status, body = cloud.call("GET", f"/v1/jobs/{job['uuid']}", wait="1", timeout="0.5")
    assert status == 200 and body["job"]["uuid"] == job["uuid"]
