from tests.unit.controller.harness import Cloud


def test_create_vm(cloud: Cloud) -> None:
    cloud.basic()
    status, data = cloud.call("POST", "/v1/vms", cloud.vm_body(), wait="1")
    assert status == 200, data
    assert data["job"]["state"] == "succeeded", data
    vm = cloud.ok("GET", f"/v1/vms/{data['resource']['uuid']}")
    assert vm["state"] == "Running"
