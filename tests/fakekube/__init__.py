"""A faithful fake Kubernetes v1.32 API server for tests (see README.md)."""

from __future__ import annotations

from .clock import Clock, FakeClock, SystemClock
from .fake import FakeKube
from .faults import FaultRule, RecordedRequest
from .runtime import IpPool, PodRuntime, PodRuntimeStatus, SimulatedRuntime

__all__ = [
    "Clock",
    "FakeClock",
    "FakeKube",
    "FaultRule",
    "IpPool",
    "PodRuntime",
    "PodRuntimeStatus",
    "RecordedRequest",
    "SimulatedRuntime",
    "SystemClock",
]
