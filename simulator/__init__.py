"""Simulated agents that speak the real wire protocol over real HTTP.

Hundreds of KVM hosts, primary and backup storages in one process, each at
``http://HOST:PORT/agents/<id>``, validating bodies with the agents' own
models, keeping state so the controller sees consistent answers, with fault
injection for the controller's tests. See ``docs/simulator.md``.
"""

from simulator.engine import Simulator, SimulatorConfig
from simulator.faults import FaultRule
from simulator.server import SimulatorThread, make_app, serve
from simulator.state import Capacity

__all__ = ["Capacity", "FaultRule", "Simulator", "SimulatorConfig", "SimulatorThread",
           "make_app", "serve"]
