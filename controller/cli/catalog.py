"""The resource table the CLI's commands are generated from.

It is the controller's own table when the controller package is importable
(``controller.db.models.RESOURCES`` for the collections, and the services'
catalogue for the creates and actions with their body models), so a command's
options are the API body's fields and are validated by the same models before
anything is sent. Otherwise it falls back to the collections and actions of
the API contract, with bodies given as ``--set key=value``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from pydantic import BaseModel

log = logging.getLogger(__name__)

#: the contract's collections, used when the controller is not importable
CONTRACT_COLLECTIONS = [
    "zones", "clusters", "hosts", "primary-storages", "backup-storages", "images",
    "l2-networks", "l3-networks", "ip-ranges", "instance-offerings", "disk-offerings",
    "vms", "vm-nics", "volumes", "snapshots", "vm-backups", "volume-backups",
    "backup-policies", "tags",
]
CONTRACT_ACTIONS = {
    "vms": ["start", "stop", "reboot", "pause", "resume", "migrate", "attach-volume",
            "detach-volume", "attach-nic", "detach-nic", "backup"],
    "hosts": ["reconnect", "enable", "disable", "maintain", "redeploy"],
    "backup-storages": ["reconnect", "redeploy"],
    "volumes": ["create-snapshot"],
    "snapshots": ["revert"],
    "vm-backups": ["restore", "replicate", "create-vm"],
    "volume-backups": ["restore", "replicate"],
    "backup-policies": ["attach", "detach"],
}

#: the first field-name part of ``<x>_uuid(s)`` → the collection it names
FIELD_COLLECTION = {
    "zone": "zones", "cluster": "clusters", "host": "hosts",
    "primary_storage": "primary-storages", "backup_storage": "backup-storages",
    "image": "images", "l2_network": "l2-networks", "l3_network": "l3-networks",
    "ip_range": "ip-ranges", "instance_offering": "instance-offerings",
    "disk_offering": "disk-offerings", "data_disk_offering": "disk-offerings",
    "vm": "vms", "nic": "vm-nics", "volume": "volumes", "snapshot": "snapshots",
    "vm_backup": "vm-backups", "volume_backup": "volume-backups",
    "backup_policy": "backup-policies",
}
#: short option names beside the full ones (``--offering`` for ``instanceOfferingUuid``)
FIELD_ALIASES = {
    "instance_offering": ["offering"], "l3_network": ["l3"], "l2_network": ["l2"],
    "primary_storage": ["ps"], "backup_storage": ["bs"], "data_disk_offering": ["data-disk"],
}
#: short command names beside the singular ones
COMMAND_ALIASES = {
    "l2-network": "l2", "l3-network": "l3", "primary-storage": "ps", "backup-storage": "bs",
    "instance-offering": "offering",
}
DEFAULT_COLUMNS = ["uuid", "name", "state"]
EXTRA_COLUMNS = {
    "vms": ["hostUuid", "cpuNum", "memorySize"],
    "hosts": ["managementIp", "status", "vtepIp"],
    "backup-policies": ["intervalSeconds", "cronExpression", "retentionCount"],
    "images": ["status", "format", "size"],
    "volumes": ["type", "size", "vmUuid"],
    "primary-storages": ["type", "url"],
    "backup-storages": ["type", "hostname"],
    "l2-networks": ["type", "vlan", "vni"],
    "instance-offerings": ["cpuNum", "memorySize"],
    "disk-offerings": ["diskSize"],
    "ip-ranges": ["startIp", "endIp"],
    "vm-nics": ["vmUuid", "ip", "mac"],
    "tags": ["resourceUuid", "tag"],
    "vm-backups": ["vmUuid", "status", "vmState"],
    "volume-backups": ["volumeUuid", "vmBackupUuid", "status", "size"],
}


@dataclass
class ResourceSpec:
    """One collection of the API and what the CLI can do with it."""

    collection: str
    create: type[BaseModel] | None = None
    creatable: bool = False
    actions: dict[str, type[BaseModel] | None] = field(default_factory=dict)

    @property
    def command(self) -> str:
        """``vms`` → ``vm``, ``primary-storages`` → ``primary-storage``, ``backup-policies`` →
        ``backup-policy``."""
        if self.collection.endswith("ies"):
            return self.collection[:-3] + "y"
        return self.collection[:-1] if self.collection.endswith("s") else self.collection

    @property
    def columns(self) -> list[str]:
        return DEFAULT_COLUMNS + EXTRA_COLUMNS.get(self.collection, [])


def contract_catalog() -> dict[str, ResourceSpec]:
    """The contract's collections, without body models."""
    return {
        c: ResourceSpec(c, None, c not in ("vm-nics",),
                        {v: None for v in CONTRACT_ACTIONS.get(c, [])})
        for c in CONTRACT_COLLECTIONS
    }


def controller_catalog() -> dict[str, ResourceSpec]:
    """The controller's own table (raises ImportError when it is not there)."""
    # imported here: the CLI must still work (from the contract) without them
    from controller.db.models import RESOURCES  # noqa: PLC0415
    from controller.services.catalogue import CATALOGUE  # noqa: PLC0415

    creates = CATALOGUE.create_bodies()
    table = {c: ResourceSpec(c, creates.get(c), c in creates) for c in [*RESOURCES, "tags"]}
    for (coll, verb), model in sorted(CATALOGUE.action_bodies().items()):
        if coll in table:
            table[coll].actions[verb] = model
    return table


def load_catalog() -> dict[str, ResourceSpec]:
    """The controller's table, or the contract's when the controller cannot be imported."""
    try:
        return controller_catalog()
    except ImportError as e:
        log.debug("controller tables unavailable (%s): using the API contract", e)
    except Exception as e:  # a broken controller must not take `simulator serve` down with it
        log.warning("controller tables failed to load (%s: %s): using the API contract",
                    type(e).__name__, e)
    return contract_catalog()
