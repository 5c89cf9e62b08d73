"""A TGI simulator for the demo, the tests and the benchmarks."""

from gateway.sim.faults import Fault
from gateway.sim.server import Simulator
from gateway.sim.state import SeenRequest, SimConfig

__all__ = ["Fault", "SeenRequest", "SimConfig", "Simulator"]
