"""Deploy options of the add-host / add-storage bodies: only meaningful with ``deploy``."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from controller.api import schemas as sc

CLUSTER = "0" * 32
HOST = {"name": "h1", "clusterUuid": CLUSTER, "managementIp": "10.0.0.5"}


def test_ship_packages_goes_with_deploy() -> None:
    body = sc.HostCreate.model_validate({**HOST, "deploy": True, "shipPackages": True})
    assert body.ship_packages is True
    assert sc.HostCreate.model_validate(HOST).ship_packages is False


@pytest.mark.parametrize("field", ["shipPackages", "sshPassword"])
def test_deploy_options_without_deploy_name_the_field(field: str) -> None:
    value = True if field == "shipPackages" else "a-password"
    with pytest.raises(ValidationError) as e:
        sc.HostCreate.model_validate({**HOST, field: value})
    assert [err["loc"] for err in e.value.errors()] == [(field,)]
    assert "only used with deploy" in str(e.value)
