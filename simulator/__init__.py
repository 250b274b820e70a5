"""A stand-in for the Huawei Cloud CCE API, served over real HTTP for tests, demos and benchmarks.

It generates a fleet of projects, clusters, node pools and nodes from a seed. It verifies AK/SK
signatures and tokens, validates sync bodies like CCE and throttles with 429 `APIGW.0308`. It
injects faults: 500s, TCP resets, responses dropped after a sync was accepted, and delays. Sync
jobs finish after a configured time, and every accepted sync is recorded in an audit.
"""

from __future__ import annotations

from simulator.faults import Faults
from simulator.fleet import Fleet, FleetOptions
from simulator.server import SimulatorServer, main

__all__ = ["Faults", "Fleet", "FleetOptions", "SimulatorServer", "main"]
