"""Object storage with one global resourceVersion counter and a replayable event history (the "watch cache").

Every write gets the next resourceVersion (a string on the wire, an int here). The history keeps the last
events so a watch can resume from any resourceVersion it saw; a resourceVersion older than the history is
"too old" and the watch answers with a 410 Expired ERROR event, exactly like the real watch cache.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

JsonObj = dict[str, Any]


def jcopy(value: Any) -> Any:
    """Deep copy for JSON-shaped data (several times faster than ``copy.deepcopy``)."""
    if isinstance(value, dict):
        return {k: jcopy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [jcopy(v) for v in value]
    return value


@dataclass(frozen=True)
class StoreEvent:
    rv: int
    resource: str  # ResourceType.key, e.g. "apps/deployments"
    type: str  # ADDED, MODIFIED, DELETED
    obj: JsonObj  # the new state; for DELETED the last state carrying the deletion resourceVersion
    old: JsonObj | None  # the previous state (None for ADDED)


ObjList = list[JsonObj]
EventList = list[StoreEvent]


class Store:
    def __init__(self, *, start_rv: int = 100, history_limit: int = 50_000) -> None:
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self._rv = start_rv
        self._objects: dict[str, dict[tuple[str, str], JsonObj]] = {}
        self._history: list[StoreEvent] = []
        self._history_rvs: list[int] = []
        self._oldest = start_rv
        self._history_limit = history_limit
        self.writes = 0

    # -- reads ------------------------------------------------------------------------------------------

    @property
    def resource_version(self) -> int:
        with self.lock:
            return self._rv

    @property
    def oldest_resource_version(self) -> int:
        with self.lock:
            return self._oldest

    def get(self, resource: str, namespace: str, name: str) -> JsonObj | None:
        with self.lock:
            obj = self._objects.get(resource, {}).get((namespace, name))
            return jcopy(obj) if obj is not None else None

    def peek(self, resource: str, namespace: str, name: str) -> JsonObj | None:
        """Like ``get`` without copying: callers must not mutate the result."""
        with self.lock:
            return self._objects.get(resource, {}).get((namespace, name))

    def list(self, resource: str, namespace: str | None = None, *, copy: bool = True) -> ObjList:
        """Objects sorted by (namespace, name): the etcd key order the real server lists in."""
        with self.lock:
            items = self._objects.get(resource, {})
            keys = sorted(k for k in items if namespace is None or k[0] == namespace)
            return [jcopy(items[k]) if copy else items[k] for k in keys]

    def all_objects(self) -> Iterator[tuple[str, JsonObj]]:
        with self.lock:
            snapshot = [(res, obj) for res, items in self._objects.items() for obj in items.values()]
        yield from snapshot

    def find_uid(self, uid: str) -> tuple[str, JsonObj] | None:
        with self.lock:
            for res, items in self._objects.items():
                for obj in items.values():
                    if obj.get("metadata", {}).get("uid") == uid:
                        return res, obj
        return None

    # -- writes -----------------------------------------------------------------------------------------

    def _record(self, event: StoreEvent) -> None:
        self._history.append(event)
        self._history_rvs.append(event.rv)
        if len(self._history) > self._history_limit:
            drop = len(self._history) // 2
            self._oldest = self._history[drop - 1].rv
            del self._history[:drop]
            del self._history_rvs[:drop]
        self.writes += 1
        self.changed.notify_all()

    def put(self, resource: str, obj: JsonObj, *, dry_run: bool = False) -> JsonObj:
        """Store ``obj`` (ADDED or MODIFIED) with the next resourceVersion; returns a copy of it."""
        with self.lock:
            meta = obj["metadata"]
            key = (meta.get("namespace", ""), meta["name"])
            old = self._objects.get(resource, {}).get(key)
            if dry_run:
                return jcopy(obj)
            self._rv += 1
            stored = jcopy(obj)
            stored["metadata"]["resourceVersion"] = str(self._rv)
            self._objects.setdefault(resource, {})[key] = stored
            self._record(StoreEvent(self._rv, resource, "MODIFIED" if old else "ADDED", stored, old))
            return jcopy(stored)

    def remove(self, resource: str, namespace: str, name: str) -> JsonObj | None:
        with self.lock:
            old = self._objects.get(resource, {}).pop((namespace, name), None)
            if old is None:
                return None
            self._rv += 1
            final = jcopy(old)
            final["metadata"]["resourceVersion"] = str(self._rv)
            self._record(StoreEvent(self._rv, resource, "DELETED", final, old))
            return jcopy(final)

    def compact(self) -> int:
        """Forget the whole history (like an etcd compaction): older resourceVersions become "too old"."""
        with self.lock:
            self._oldest = self._rv
            self._history.clear()
            self._history_rvs.clear()
            return self._oldest

    # -- watch support ------------------------------------------------------------------------------------

    def events_after(self, rv: int, resource: str) -> EventList:
        with self.lock:
            start = bisect.bisect_right(self._history_rvs, rv)
            return [e for e in self._history[start:] if e.resource == resource]

    def wait_for_change(self, since_writes: int, timeout: float) -> int:
        """Block until the write counter moves past ``since_writes`` or ``timeout``; returns the counter."""
        with self.changed:
            if self.writes == since_writes:
                self.changed.wait(timeout)
            return self.writes

    def notify(self) -> None:
        with self.changed:
            self.changed.notify_all()
