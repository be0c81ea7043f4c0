"""What each simulated command does to the simulated state (see :mod:`.base`)."""

from simulator.behaviours import host, storage
from simulator.behaviours.base import BEHAVIOURS, Behaviour, Body, Fleet

__all__ = ["BEHAVIOURS", "Behaviour", "Body", "Fleet", "host", "storage"]
