"""The contract's variants: each a registry of checks and the transport its models speak.

The HTTP contract (checks.py) and its gRPC variant (grpcchecks.py, specification 0.4) share
the runtime, the run, the reports and the exit codes; what differs is here.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass

from .battery import CheckFunc, Registry
from .runtime import Speak

GRPC_EXTRA = "the gRPC variant needs the grpc extra: pip install 'psc-model-harness[grpc]'"


@dataclass(frozen=True)
class Contract:
    protocol: str  # "http" or "grpc", as --model-protocol and model.yaml name it
    registry: Registry
    without_cases: Callable[[str], CheckFunc]  # a per-case check's one item when there is no case
    speak: Speak  # the transport to a model's published port
    status_call: str  # how a finding names the status call: "/status" or "Status"


def available(protocol: str) -> str | None:
    """Why a variant cannot be checked here (a missing extra), or None."""
    if protocol == "grpc" and importlib.util.find_spec("grpc") is None:
        return GRPC_EXTRA
    return None


def contract_for(protocol: str) -> Contract:
    """The variant's contract; the gRPC one is imported only when asked for (its extra)."""
    if protocol == "grpc":
        from . import grpcchecks

        return grpcchecks.CONTRACT
    from . import checks

    return checks.CONTRACT
