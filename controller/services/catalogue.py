"""Every service's declarations, collected once: what the API, the CLI and the cascade read."""

from __future__ import annotations

from controller.declarations import Catalogue
from controller.services import (
    backups,
    hosts,
    images,
    networks,
    policies,
    primary_storages,
    resources,
    secgroups,
    storages,
    vms,
    volumes,
)

CATALOGUE = Catalogue.collect(
    resources.DECLARATIONS,
    hosts.DECLARATIONS,
    networks.DECLARATIONS,
    primary_storages.DECLARATIONS,
    storages.DECLARATIONS,
    images.DECLARATIONS,
    vms.DECLARATIONS,
    volumes.DECLARATIONS,
    backups.DECLARATIONS,
    policies.DECLARATIONS,
    secgroups.DECLARATIONS,
)
