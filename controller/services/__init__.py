"""What each API operation does, one module per area."""

from __future__ import annotations

_registered = False


def register() -> None:
    """Put the job-backed creates, actions and cascade executors into the routing tables."""
    global _registered
    if _registered:
        return
    _registered = True
    from controller.services import (  # noqa: PLC0415 - they import the routes
        hosts,
        images,
        networks,
        primary_storages,
        storages,
        vms,
    )

    hosts.register()
    images.register()
    networks.register()
    primary_storages.register()
    storages.register()
    vms.register()
