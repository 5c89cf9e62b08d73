"""A TGI simulator for the demo, the tests and the benchmarks."""

from gateway.sim.faults import Fault
from gateway.sim.job import SeenRequest
from gateway.sim.server import SimConfig, Simulator

__all__ = ["Fault", "SeenRequest", "SimConfig", "Simulator"]
