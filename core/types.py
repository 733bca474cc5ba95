"""Value types shared by targets, verifiers and the plugin."""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from releasegate.core.errors import ConfigError
from releasegate.core.versions import is_valid_label_value, quoted

Slot = str
"""A deployment slot: `blue`/`green` for blue-green, `stable`/`canary` for canary releases."""

DEFAULT_VERSION_HEADER = "X-App-Version"
"""The demo's version header, and the default of `release.version_header`."""

BLUE: Slot = "blue"
GREEN: Slot = "green"


def other_slot(slot: Slot) -> Slot:
    """The blue-green slot that is not `slot`: where the candidate goes when `slot` is live."""
    return GREEN if slot == BLUE else BLUE


class Role(StrEnum):
    """What an endpoint reaches: the new version alone, the live version alone, or the public service."""

    CANDIDATE = "candidate"
    BASELINE = "baseline"
    SERVICE = "service"


@dataclass(frozen=True)
class Endpoint:
    """A base URL and what stands behind it. `version` is None for the service during a split.

    `version_header` is the response header that says which version answered (`release.version_header`);
    empty when the app sends none, and then nothing can tell versions apart by their answers.
    """

    role: Role
    url: str
    slot: Slot | None
    version: str | None
    version_header: str = DEFAULT_VERSION_HEADER

    def describe(self) -> str:
        who = f"{self.role.value} {self.version}" if self.version else self.role.value
        return f"{who} at {self.url}"


@dataclass(frozen=True)
class TrafficSplit:
    """Percent of the service's traffic per slot; the weights add up to 100."""

    weights: Mapping[Slot, int]

    def __post_init__(self) -> None:
        if any(w < 0 for w in self.weights.values()) or sum(self.weights.values()) != 100:
            raise ValueError(f"traffic weights must be >= 0 and add up to 100, got {dict(self.weights)}")

    @classmethod
    def all_to(cls, slot: Slot) -> TrafficSplit:
        return cls({slot: 100})

    @classmethod
    def split(cls, stable: Slot, canary: Slot, canary_percent: int) -> TrafficSplit:
        return cls({stable: 100 - canary_percent, canary: canary_percent})

    @property
    def single_slot(self) -> Slot | None:
        """The slot that takes all traffic, or None during a split."""
        live = [slot for slot, weight in self.weights.items() if weight == 100]
        return live[0] if live else None

    def describe(self) -> str:
        return ", ".join(f"{slot} {w}%" for slot, w in sorted(self.weights.items()) if w)


@dataclass(frozen=True)
class WorkloadStatus:
    """One slot's pods as the target sees them."""

    slot: Slot
    version: str | None
    replicas: int
    ready_replicas: int
    problems: tuple[str, ...] = ()
    restarts: tuple[tuple[str, int], ...] = ()  # (pod, container restarts so far) for each pod of the slot

    @property
    def ready(self) -> bool:
        return self.replicas > 0 and self.ready_replicas >= self.replicas

    def restarted_since(self, earlier: WorkloadStatus) -> list[str]:
        """Pods that restarted since `earlier` was read (`demo-green-0 restarted 1 time(s)`). A pod that is
        gone or new (a scale change) is not a restart; a container that died and came back in its pod is."""
        before = dict(earlier.restarts)
        return [f"{pod} restarted {count - before[pod]} time(s)" for pod, count in self.restarts
                if pod in before and count > before[pod]]


@dataclass(frozen=True)
class LiveState:
    """What serves users right now, read from the target."""

    app: str
    traffic: TrafficSplit
    versions: Mapping[Slot, str | None]
    previous_version: str | None = None

    @property
    def live_slot(self) -> Slot | None:
        return self.traffic.single_slot

    @property
    def live_version(self) -> str | None:
        slot = self.live_slot
        return self.versions.get(slot) if slot else None


@dataclass(frozen=True)
class SwitchResult:
    """How a traffic change went: the new split and how long it took to take effect."""

    traffic: TrafficSplit
    previous: TrafficSplit
    converged_ms: float


@dataclass(frozen=True)
class Promotion:
    """How the new version came to serve all traffic for good (Target.promote)."""

    switch: SwitchResult
    live_slot: Slot  # where the new version serves from now on
    retired_slot: Slot | None  # what finalize scales down after the keep-warm delay (None: nothing left)
    detail: str = ""  # what the target did, one line, for the reports


class Phase(StrEnum):
    """Where a release stands; written to the target before and after each action."""

    STARTED = "started"
    PROVISIONING = "provisioning"
    PROVISIONED = "provisioned"
    VERIFYING = "verifying"
    SHIFTING = "shifting"  # canary: traffic split between the stable version and the candidate
    SWITCHING = "switching"
    SWITCHED = "switched"
    ROLLING_BACK = "rolling-back"
    ROLLED_BACK = "rolled-back"
    FINALIZING = "finalizing"
    PROMOTED = "promoted"
    ABORTED = "aborted"


@dataclass(frozen=True)
class ReleaseState:
    """The durable record of one release on the target (Kubernetes: annotations on the Service)."""

    run_id: str
    version: str
    previous_version: str | None
    live_slot: Slot | None
    live_version: str | None
    candidate_slot: Slot | None
    phase: Phase
    updated_at: float

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["phase"] = self.phase.value
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ReleaseState:
        return cls(
            run_id=str(data["run_id"]),
            version=str(data["version"]),
            previous_version=data.get("previous_version"),
            live_slot=data.get("live_slot"),
            live_version=data.get("live_version"),
            candidate_slot=data.get("candidate_slot"),
            phase=Phase(data["phase"]),
            updated_at=float(data["updated_at"]),
        )

    @property
    def finished(self) -> bool:
        return self.phase in (Phase.PROMOTED, Phase.ROLLED_BACK, Phase.ABORTED)


@dataclass(frozen=True)
class LockHolder:
    """Who holds a release lock: the run, and enough to find it (version, host, process).

    `run_id` is the lock's identity (the Lease's holderIdentity); the rest is stored beside it so that a
    refused release can say which release holds the lock and where it runs.
    """

    run_id: str
    version: str = ""
    host: str = ""
    pid: int | None = None

    @classmethod
    def this_process(cls, run_id: str, version: str) -> LockHolder:
        return cls(run_id=run_id, version=version, host=socket.gethostname(), pid=os.getpid())

    @classmethod
    def of(cls, holder: LockHolder | str) -> LockHolder:
        """A LockHolder from itself or from a bare run id (callers that only know the run)."""
        return holder if isinstance(holder, LockHolder) else cls(run_id=str(holder))

    def describe(self) -> str:
        """`20261127-101010-abcdef (version v2, host build-7, pid 4242)`; unknown parts are left out."""
        parts = [f"version {self.version}" if self.version else "", f"host {self.host}" if self.host else "",
                 f"pid {self.pid}" if self.pid is not None else ""]
        known = ", ".join(part for part in parts if part)
        return f"{self.run_id} ({known})" if known else self.run_id

    def held_until(self, expires_at: float, now: float) -> str:
        """`<describe()> until 2026-12-02 03:00:00 UTC (594s left)`: the holder and when its lock expires."""
        when = datetime.fromtimestamp(expires_at, UTC).strftime("%Y-%m-%d %H:%M:%S")
        return f"{self.describe()} until {when} UTC ({max(0.0, expires_at - now):.0f}s left)"


@dataclass(frozen=True)
class MetricsScope:
    """How to find one workload's series in Prometheus: the labels that name app, slot and version."""

    prometheus_url: str
    app: str
    app_label: str = "app"
    slot_label: str = "slot"
    version_label: str = "version"
    # The series that is 1 for each pod scraped successfully at its last scrape, 0 for one that was not.
    # Prometheus's own `up` where every pod is a scrape target (Kubernetes); the local cluster's Prometheus
    # scrapes all pods through one target, which reports each pod as `releasegate_pod_up`.
    pod_up_metric: str = "up"

    def __post_init__(self) -> None:
        for key in ("app_label", "slot_label", "version_label"):
            check_promql_label_name(getattr(self, key), source=f"prometheus.{key}")
        check_label_value(self.app, source="app.name")
        if not _PROMQL_METRIC_NAME.fullmatch(self.pod_up_metric):  # it enters queries as it is
            raise ConfigError(f"pod_up_metric {quoted(self.pod_up_metric)} is not a Prometheus metric name")

    def selector(self, *, slot: Slot | None = None, version: str | None = None) -> str:
        """A PromQL label matcher body such as `app="demo",version="v2"` (no braces).

        Every value is checked to be a label value (as the pods' labels are) before it enters the query, and
        escaped as well: a version read back from a target must not be able to rewrite the query.
        """
        parts = [f'{self.app_label}="{promql_string(self.app)}"']
        if slot is not None:
            parts.append(f'{self.slot_label}="{promql_string(check_label_value(slot, source="slot"))}"')
        if version is not None:
            parts.append(f'{self.version_label}="{promql_string(check_label_value(version, source="version"))}"')
        return ",".join(parts)


# PromQL label names (Prometheus data model): a letter or `_`, then letters, digits and `_`.
_PROMQL_LABEL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Metric names: the same, with `:` too (recording rules use it).
_PROMQL_METRIC_NAME = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
# Kubernetes label keys: an optional DNS subdomain prefix and `/`, then a name of at most 63 characters.
_K8S_LABEL_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
# Go string escapes, which PromQL strings use: a raw newline or quote would end the string early.
_PROMQL_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def promql_string(value: str) -> str:
    """`value` as the body of a PromQL double-quoted string (matcher values, regexes)."""
    return "".join(_PROMQL_ESCAPES.get(char, char) for char in value)


def check_label_value(value: str, *, source: str) -> str:
    """`value` unchanged if it is a Kubernetes (and so Prometheus-safe) label value; else a ConfigError."""
    if not is_valid_label_value(value):
        raise ConfigError(f"{source} {quoted(value)} is not a valid label value; use at most 63 letters, digits and "
                          "'-', '_' or '.' inside, starting and ending with a letter or digit")
    return value


def check_promql_label_name(name: str, *, source: str) -> str:
    if not _PROMQL_LABEL_NAME.fullmatch(name):
        raise ConfigError(f"{source} {quoted(name)} is not a Prometheus label name; use letters, digits and '_', "
                          "not starting with a digit (e.g. app, slot, version)")
    return name


def check_label_key(key: str, *, source: str) -> str:
    """`key` unchanged if it is a Kubernetes label key (`[prefix/]name`); else a ConfigError."""
    prefix, _, name = key.rpartition("/")
    bad_prefix = bool(prefix) and (len(prefix) > 253 or not _DNS_SUBDOMAIN.fullmatch(prefix))
    if bad_prefix or not _K8S_LABEL_NAME.fullmatch(name):
        raise ConfigError(f"{source} {quoted(key)} is not a Kubernetes label key; use a name of at most 63 letters, "
                          "digits and '-', '_' or '.', optionally after a DNS prefix and '/' "
                          "(e.g. app.kubernetes.io/name)")
    return key


def label_selector(labels: Mapping[str, str], *, source: str = "label selector") -> str:
    """`app=demo,slot=blue` from checked keys and values: nothing can add a term such as `,app!=`."""
    return ",".join(f"{check_label_key(key, source=f'{source} key')}="
                    f"{check_label_value(value, source=f'{source} value')}" for key, value in labels.items())
