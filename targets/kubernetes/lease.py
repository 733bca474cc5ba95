"""The per-app release lock: a coordination.k8s.io/v1 Lease, taken over once its holder stops renewing."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from kubernetes.client import CoordinationV1Api

from core.errors import LockHeldError
from targets.kubernetes.api import ConflictError, KubeApi, NotFoundError, retry_on_conflict

MICROTIME = "%Y-%m-%dT%H:%M:%S.%fZ"  # exactly six fractional digits, or the API server answers 400


def microtime(moment: datetime | None = None) -> str:
    return (moment or datetime.now(UTC)).strftime(MICROTIME)


def parse_microtime(text: str) -> datetime:
    return datetime.strptime(text, MICROTIME).replace(tzinfo=UTC)


class ReleaseLease:
    def __init__(self, api: KubeApi, name: str, app: str) -> None:
        self.api = api
        self.leases = CoordinationV1Api(api.client)
        self.name = name
        self.app = app

    def _read(self) -> dict[str, Any] | None:
        try:
            lease: dict[str, Any] = self.api.call("get", "leases", self.leases.read_namespaced_lease,
                                                  self.name, self.api.namespace)
        except NotFoundError:
            return None
        return lease

    def acquire(self, holder: str, ttl_s: float) -> None:
        """Take or renew the lease for `holder`; LockHeldError when another live release holds it."""
        retry_on_conflict(lambda: self._acquire_once(holder, ttl_s))

    def _acquire_once(self, holder: str, ttl_s: float) -> None:
        now = datetime.now(UTC)
        lease = self._read()
        spec = {"holderIdentity": holder, "leaseDurationSeconds": max(1, round(ttl_s)),
                "acquireTime": microtime(now), "renewTime": microtime(now), "leaseTransitions": 0}
        if lease is None:
            body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": self.name, "namespace": self.api.namespace,
                                 "labels": {"app": self.app, "app.kubernetes.io/managed-by": "releasegate"}},
                    "spec": spec}
            try:
                self.api.call("create", "leases", self.leases.create_namespaced_lease, self.api.namespace, body)
            except ConflictError:  # AlreadyExists: someone created it since we read; decide again
                raise ConflictError("lease created concurrently") from None
            return
        current = lease.get("spec") or {}
        current_holder = current.get("holderIdentity")
        if current_holder and current_holder != holder and not self._expired(current, now):
            expires = self._expires_at(current)
            raise LockHeldError(
                f"another release of {self.app} is in progress: lease {self.api.namespace}/{self.name} is held by "
                f"{current_holder} until {expires:%H:%M:%S} UTC unless renewed; wait for it to finish, or for "
                "the lease to expire if that release died")
        if current_holder == holder:
            spec["acquireTime"] = current.get("acquireTime", spec["acquireTime"])
            spec["leaseTransitions"] = int(current.get("leaseTransitions", 0))
        else:
            spec["leaseTransitions"] = int(current.get("leaseTransitions", 0)) + 1
        lease["spec"] = spec
        # The resourceVersion we read makes this a compare-and-swap: a 409 means someone else moved first.
        self.api.call("update", "leases", self.leases.replace_namespaced_lease, self.name, self.api.namespace, lease)

    def release(self, holder: str) -> None:
        def release_once() -> None:
            lease = self._read()
            if lease is None or (lease.get("spec") or {}).get("holderIdentity") != holder:
                return
            lease["spec"].pop("holderIdentity", None)
            lease["spec"]["renewTime"] = microtime()
            self.api.call("update", "leases", self.leases.replace_namespaced_lease, self.name,
                          self.api.namespace, lease)

        retry_on_conflict(release_once)

    def holder(self) -> str | None:
        lease = self._read()
        return None if lease is None else (lease.get("spec") or {}).get("holderIdentity")

    @staticmethod
    def _expires_at(spec: dict[str, Any]) -> datetime:
        renewed = spec.get("renewTime") or spec.get("acquireTime")
        base = parse_microtime(renewed) if renewed else datetime.fromtimestamp(0, UTC)
        return datetime.fromtimestamp(base.timestamp() + int(spec.get("leaseDurationSeconds", 0)), UTC)

    def _expired(self, spec: dict[str, Any], now: datetime) -> bool:
        return now >= self._expires_at(spec)
