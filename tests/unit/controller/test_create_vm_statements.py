"""How many SQL statements creating one VM costs: a bound that guards the create path.

Counting is deterministic where timing is not; each statement is a round trip
and most of a create's controller CPU, so a new one on this path should be a
choice. Raise the bound only with a reason, lower it when a change earns it.
"""

from __future__ import annotations

from tests.unit.controller.harness import Cloud
from tests.unit.controller.statements import counting

#: statements for one VM (one L3 network, no data disk), in the steady state
CREATE_VM_STATEMENTS = 24


def test_create_vm_statement_count(cloud: Cloud) -> None:
    cloud.basic(hosts=2)
    for i in range(3):  # the image cached, the DHCP server address set, bridges made
        cloud.succeeded("POST", "/v1/vms", cloud.vm_body(f"warm{i}"))
    with counting(cloud.ctl.db) as log:
        cloud.succeeded("POST", "/v1/vms", cloud.vm_body("web1"))
    assert len(log) <= CREATE_VM_STATEMENTS, f"{len(log)} statements ({dict(log.by_kind())}):\n" \
        + log.report()


def test_count_sees_every_kind(cloud: Cloud) -> None:
    cloud.basic(hosts=1)
    with counting(cloud.ctl.db) as log:
        cloud.succeeded("POST", "/v1/vms", cloud.vm_body("web1"))
    kinds = log.by_kind()
    assert kinds["SELECT"] and kinds["INSERT"] and kinds["UPDATE"]
    assert all(st.site for st in log.statements), log.report()
