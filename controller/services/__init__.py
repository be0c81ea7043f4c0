"""What each API operation does, one module per area."""

from __future__ import annotations

_registered = False


def register() -> None:
    """Put the job-backed creates, actions and cascade executors into the routing tables."""
    global _registered
    if _registered:
        return
    _registered = True
    from controller.services import hosts, images, networks, storages, vms  # noqa: PLC0415 - they import the routes

    hosts.register()
    images.register()
    networks.register()
    storages.register()
    vms.register()
