"""`fleet`: the same declared models on every server of an inventory, drift shown.

`inventory` (the TOML: hosts, groups, their models) → `run` (every host in its own
thread, bounded, each with its time limit) → `host` (one host: check, plan with drift,
remove, pull, create, verify) → `view` (a live table, or plain lines, and the report).
"""

from __future__ import annotations

from provision.fleet.host import (
    FINAL_STATES,
    HostModelResult,
    HostModelStatus,
    HostResult,
    HostState,
    HostStatus,
)
from provision.fleet.inventory import FleetHost, FleetInventory, load_inventory, parse_inventory
from provision.fleet.run import FleetInterrupted, FleetOptions, FleetResult, NullView, run_fleet

__all__ = [
    "FINAL_STATES", "FleetHost", "FleetInterrupted", "FleetInventory", "FleetOptions",
    "FleetResult", "HostModelResult", "HostModelStatus", "HostResult", "HostState", "HostStatus",
    "NullView", "load_inventory", "parse_inventory", "run_fleet",
]
