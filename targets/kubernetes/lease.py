"""The per-app release lock: a coordination.k8s.io/v1 Lease, taken over once its holder stops renewing.

holderIdentity is the run id; the holder's version, host and pid are annotations on the Lease
(`<prefix>holder-version`, `-host`, `-pid`), so a refused release can say who holds the lock and where.
Every write is a compare-and-swap (the resourceVersion we read).

MicroTime on the wire: the API server accepts exactly six fractional digits (`2026-12-02T03:00:00.000000Z`)
and answers 400 to anything else. The generated client (kubernetes>=35) validates every create/replace
body into its models, even a plain dict: a time string becomes a `datetime`, which it then serialises with
`isoformat()`, and that drops `.000000` when the microseconds are zero. So a string alone does not survive
the client; the times of every Lease body are MicroTime objects, datetimes whose `isoformat()` is the exact
format (pydantic keeps datetime subclasses as they are). tests/test_kubernetes_target.py checks the
request log of every Lease write with a clock whose microseconds are zero.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from kubernetes.client import CoordinationV1Api

from releasegate.core.errors import LockHeldError, LockLostError
from releasegate.core.recovery import LockInfo, holder_is_dead
from releasegate.core.types import LockHolder
from releasegate.targets.kubernetes.api import ConflictError, KubeApi, NotFoundError, retry_on_conflict

MICROTIME = "%Y-%m-%dT%H:%M:%S.%fZ"  # exactly six fractional digits, or the API server answers 400
MICROTIME_FIELDS = ("acquireTime", "renewTime")
HOLDER_KEYS = ("holder-version", "holder-host", "holder-pid")


class MicroTime(datetime):
    """A datetime that the client serialises as a metav1.MicroTime (it calls `isoformat()`)."""

    @classmethod
    def of(cls, moment: datetime) -> MicroTime:
        utc = moment.astimezone(UTC)
        return cls(utc.year, utc.month, utc.day, utc.hour, utc.minute, utc.second, utc.microsecond, tzinfo=UTC)

    def isoformat(self, sep: str = "T", timespec: str = "auto") -> str:
        return self.astimezone(UTC).strftime(MICROTIME)

    def __str__(self) -> str:
        return self.isoformat()


def microtime(moment: datetime | None = None) -> str:
    """A metav1.MicroTime as the API server parses it: `2026-12-02T03:00:00.000000Z`."""
    return (moment or datetime.now(UTC)).astimezone(UTC).strftime(MICROTIME)


def parse_microtime(text: str) -> datetime:
    """A MicroTime (or any RFC 3339 time) read from the API, as an aware UTC datetime."""
    parsed = datetime.fromisoformat(text)
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).astimezone(UTC)


def exact_microtimes(spec: dict[str, Any]) -> dict[str, Any]:
    """`spec` with acquireTime/renewTime as MicroTime objects, whatever form (string, datetime) they had."""
    for key in MICROTIME_FIELDS:
        value = spec.get(key)
        if isinstance(value, str):
            value = parse_microtime(value)
        if isinstance(value, datetime):
            spec[key] = MicroTime.of(value)
    return spec


def lease_duration(ttl_s: float) -> int:
    return max(1, round(ttl_s))


class ReleaseLease:
    def __init__(self, api: KubeApi, name: str, app: str, *, annotation_prefix: str = "releasegate.io/",
                 now: Callable[[], datetime] | None = None) -> None:
        self.api = api
        self.leases = CoordinationV1Api(api.client)
        self.name = name
        self.app = app
        self.annotation_prefix = annotation_prefix
        self.now = now or (lambda: datetime.now(UTC))  # injectable: tests send times with zero microseconds

    @property
    def where(self) -> str:
        return f"lease {self.api.namespace}/{self.name}"

    def _read(self) -> dict[str, Any] | None:
        try:
            lease: dict[str, Any] = self.api.call("get", "leases", self.leases.read_namespaced_lease,
                                                  self.name, self.api.namespace)
        except NotFoundError:
            return None
        return lease

    def _replace(self, lease: dict[str, Any]) -> None:
        # The resourceVersion we read makes this a compare-and-swap: a 409 means someone else moved first.
        lease["spec"] = exact_microtimes(lease.get("spec") or {})
        self.api.call("update", "leases", self.leases.replace_namespaced_lease, self.name, self.api.namespace, lease)

    # -- the holder, stored beside holderIdentity ---------------------------------------------------
    def _annotations(self, holder: LockHolder) -> dict[str, str]:
        values = (holder.version, holder.host, "" if holder.pid is None else str(holder.pid))
        return {f"{self.annotation_prefix}{key}": value for key, value in zip(HOLDER_KEYS, values, strict=True)}

    def _set_holder(self, lease: dict[str, Any], holder: LockHolder | None) -> None:
        metadata = lease.setdefault("metadata", {})
        annotations = {key: value for key, value in (metadata.get("annotations") or {}).items()
                       if key not in {f"{self.annotation_prefix}{k}" for k in HOLDER_KEYS}}
        if holder is not None:
            annotations.update(self._annotations(holder))
        metadata["annotations"] = annotations

    def holder_of(self, lease: dict[str, Any] | None) -> LockHolder | None:
        """Who holds `lease` (None when nobody does): run id, and version/host/pid when recorded."""
        run_id = ((lease or {}).get("spec") or {}).get("holderIdentity")
        if lease is None or not run_id:
            return None
        annotations = (lease.get("metadata") or {}).get("annotations") or {}
        version, host, pid = (annotations.get(f"{self.annotation_prefix}{key}", "") for key in HOLDER_KEYS)
        return LockHolder(run_id=str(run_id), version=version, host=host,
                          pid=int(pid) if pid.isdigit() else None)

    def holder(self) -> LockHolder | None:
        return self.holder_of(self._read())

    def read_lock(self) -> LockInfo | None:
        """The holder with its renewTime and leaseDurationSeconds (core.recovery.LockReader), or None."""
        lease = self._read()
        holder = self.holder_of(lease)
        return None if lease is None or holder is None else self._lock_info(holder, lease.get("spec") or {})

    def _lock_info(self, holder: LockHolder, spec: dict[str, Any]) -> LockInfo:
        renewed = spec.get("renewTime") or spec.get("acquireTime")
        renewed_at = parse_microtime(renewed).timestamp() if renewed else 0.0
        return LockInfo(holder=holder, renewed_at=renewed_at, ttl_s=float(spec.get("leaseDurationSeconds", 0)))

    # -- acquire, renew, release --------------------------------------------------------------------
    def acquire(self, holder: LockHolder, ttl_s: float) -> None:
        """Take (or take over, once expired) the lease; LockHeldError when another live release holds it."""
        retry_on_conflict(lambda: self._acquire_once(holder, ttl_s))

    def _acquire_once(self, holder: LockHolder, ttl_s: float) -> None:
        now = self.now()
        lease = self._read()
        spec = {"holderIdentity": holder.run_id, "leaseDurationSeconds": lease_duration(ttl_s),
                "acquireTime": microtime(now), "renewTime": microtime(now), "leaseTransitions": 0}
        if lease is None:
            body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": self.name, "namespace": self.api.namespace,
                                 "labels": {"app": self.app, "app.kubernetes.io/managed-by": "releasegate"},
                                 "annotations": self._annotations(holder)},
                    "spec": spec}
            body["spec"] = exact_microtimes(spec)
            try:
                self.api.call("create", "leases", self.leases.create_namespaced_lease, self.api.namespace, body)
            except ConflictError:  # AlreadyExists: someone created it since we read; decide again
                raise ConflictError("lease created concurrently") from None
            return
        current = lease.get("spec") or {}
        current_holder = self.holder_of(lease)
        if current_holder is not None and current_holder.run_id != holder.run_id and not self._expired(current, now):
            dead = holder_is_dead(self._lock_info(current_holder, current), now=now.timestamp())
            if dead is None:
                raise LockHeldError(
                    f"another release of {self.app} is in progress: {self.where} is held by "
                    f"{current_holder.held_until(self._expires_at(current).timestamp(), now.timestamp())} unless "
                    "renewed; wait for it to finish, or for the lock to expire if that release died")
            # Proven dead before its lease expired (core.recovery): taken over by the same compare-and-swap.
        if current_holder is not None and current_holder.run_id == holder.run_id:
            spec["acquireTime"] = current.get("acquireTime", spec["acquireTime"])
            spec["leaseTransitions"] = int(current.get("leaseTransitions", 0))
        else:
            spec["leaseTransitions"] = int(current.get("leaseTransitions", 0)) + 1
        lease["spec"] = spec
        self._set_holder(lease, holder)
        self._replace(lease)

    def renew(self, holder: LockHolder, ttl_s: float) -> None:
        """Move renewTime to now if `holder` still holds the lease; LockLostError when it does not."""
        def renew_once() -> None:
            now = self.now()
            lease = self._read()
            current = self.holder_of(lease)
            if lease is None or current is None or current.run_id != holder.run_id:
                raise LockLostError(self._lost(holder, lease, current, now))
            lease["spec"]["renewTime"] = microtime(now)
            lease["spec"]["leaseDurationSeconds"] = lease_duration(ttl_s)
            self._replace(lease)

        retry_on_conflict(renew_once)

    def _lost(self, holder: LockHolder, lease: dict[str, Any] | None, current: LockHolder | None,
              now: datetime) -> str:
        if lease is None:
            return f"{self.where} was deleted: run {holder.run_id} no longer holds the release lock of {self.app}"
        if current is None:
            return f"{self.where} was released: run {holder.run_id} no longer holds the release lock of {self.app}"
        expires = self._expires_at(lease.get("spec") or {}).timestamp()
        return (f"{self.where} was taken over by {current.held_until(expires, now.timestamp())}: run "
                f"{holder.run_id} no longer holds the release lock of {self.app}")

    def release(self, holder: LockHolder) -> None:
        def release_once() -> None:
            lease = self._read()
            if lease is None or (lease.get("spec") or {}).get("holderIdentity") != holder.run_id:
                return
            lease["spec"].pop("holderIdentity", None)
            lease["spec"]["renewTime"] = microtime(self.now())
            self._set_holder(lease, None)
            self._replace(lease)

        retry_on_conflict(release_once)

    @staticmethod
    def _expires_at(spec: dict[str, Any]) -> datetime:
        renewed = spec.get("renewTime") or spec.get("acquireTime")
        base = parse_microtime(renewed) if renewed else datetime.fromtimestamp(0, UTC)
        return datetime.fromtimestamp(base.timestamp() + int(spec.get("leaseDurationSeconds", 0)), UTC)

    def _expired(self, spec: dict[str, Any], now: datetime) -> bool:
        return now >= self._expires_at(spec)
