"""Garbage collector and namespace controller.

* Dependents whose owners are all gone are deleted (background cascade after a Background delete).
* An owner with the ``foregroundDeletion`` finalizer has its dependents deleted (in foreground, as the
  upstream GC does for blocking dependents) and loses the finalizer once none are left: only then does it
  disappear, which is why a Foreground DELETE answers with the object and a later GET still finds it.
* An owner with the ``orphan`` finalizer has its ownerReferences removed from the dependents first.
* A terminating namespace is emptied, then its ``kubernetes`` finalizer is removed.
"""

from __future__ import annotations

from typing import Any

from . import status
from .registry import Registry
from .resources import BY_KEY, BY_KIND
from .store import jcopy

JsonObj = dict[str, Any]
MANAGER = "generic-garbage-collector"


class GarbageCollector:
    def __init__(self, registry: Registry) -> None:
        self._registry = registry
        self._store = registry.store

    def sync(self) -> None:
        objects = list(self._store.all_objects())
        uids = {obj["metadata"]["uid"] for _, obj in objects}
        dependents: dict[str, list[tuple[str, JsonObj]]] = {}
        for res_key, obj in objects:
            for ref in obj["metadata"].get("ownerReferences") or []:
                dependents.setdefault(ref.get("uid", ""), []).append((res_key, obj))
        for res_key, obj in objects:
            try:
                self._sync_object(res_key, obj, uids, dependents)
            except status.ApiError as err:
                if err.code not in (404, 409):
                    raise

    def _delete(self, res_key: str, obj: JsonObj, policy: str = "Background") -> None:
        # The garbage collector and the namespace controller say Background unless they need Foreground: a
        # Job deleted without a policy would orphan its pods (batch/v1's default).
        meta = obj["metadata"]
        res = BY_KEY[res_key]
        self._registry.delete(res, meta.get("namespace", ""), meta["name"], {"propagationPolicy": policy})

    def _sync_object(
        self, res_key: str, obj: JsonObj, uids: set[str], dependents: dict[str, list[tuple[str, JsonObj]]]
    ) -> None:
        meta = obj["metadata"]
        refs = meta.get("ownerReferences") or []
        if refs and not meta.get("deletionTimestamp") and all(ref.get("uid") not in uids for ref in refs):
            self._delete(res_key, obj)
            return
        finalizers = list(meta.get("finalizers") or [])
        if not meta.get("deletionTimestamp"):
            return
        deps = [
            d
            for d in dependents.get(meta["uid"], [])
            if self._store.peek(d[0], d[1]["metadata"].get("namespace", ""), d[1]["metadata"]["name"]) is not None
        ]
        if "orphan" in finalizers:
            for dep_key, dep in deps:
                live = self._store.get(dep_key, dep["metadata"].get("namespace", ""), dep["metadata"]["name"])
                if live is None:
                    continue
                new = jcopy(live)
                kept = [r for r in new["metadata"].get("ownerReferences") or [] if r.get("uid") != meta["uid"]]
                if kept:
                    new["metadata"]["ownerReferences"] = kept
                else:
                    new["metadata"].pop("ownerReferences", None)
                self._registry.controller_update(BY_KEY[dep_key].kind, live, new, MANAGER)
            self._remove_finalizer(res_key, obj, "orphan")
            return
        if "foregroundDeletion" in finalizers:
            if deps:
                for dep_key, dep in deps:
                    if not dep["metadata"].get("deletionTimestamp"):
                        self._delete(dep_key, dep, "Foreground")
                return
            self._remove_finalizer(res_key, obj, "foregroundDeletion")
            return
        if res_key == "/namespaces":
            self._sync_namespace(obj)

    def _remove_finalizer(self, res_key: str, obj: JsonObj, finalizer: str) -> None:
        live = self._store.get(res_key, obj["metadata"].get("namespace", ""), obj["metadata"]["name"])
        if live is None:
            return
        new = jcopy(live)
        remaining = [f for f in new["metadata"].get("finalizers") or [] if f != finalizer]
        if remaining:
            new["metadata"]["finalizers"] = remaining
        else:
            new["metadata"].pop("finalizers", None)
        self._registry.controller_update(BY_KEY[res_key].kind, live, new, MANAGER)

    def _sync_namespace(self, ns_obj: JsonObj) -> None:
        name = ns_obj["metadata"]["name"]
        remaining = 0
        for res in BY_KEY.values():  # built-in and custom resources alike
            if not res.namespaced:
                continue
            for obj in self._store.list(res.key, name):
                remaining += 1
                if not obj["metadata"].get("deletionTimestamp"):
                    self._delete(res.key, obj)
        if remaining:
            return
        live = self._store.get("/namespaces", "", name)
        if live is None:
            return
        new = jcopy(live)
        new.setdefault("spec", {})["finalizers"] = []
        new["spec"].pop("finalizers")
        self._registry.commit_update(BY_KIND["Namespace"], live, new, self._registry_opts(), subresource="finalize")

    @staticmethod
    def _registry_opts() -> Any:
        from .registry import WriteOptions

        return WriteOptions(manager="namespace-controller")
