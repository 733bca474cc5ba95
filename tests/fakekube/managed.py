"""Field ownership for server-side apply (a small model of structured-merge-diff).

Each object has, per manager ``(name, operation, apiVersion, subresource)``, the set of leaf field paths it
owns. Updates (POST/PUT/PATCH) give their manager the fields they *changed*; an apply owns every field of its
configuration. An apply that changes a field owned by someone else is a conflict unless ``force=true``.

``managedFields`` itself is not serialised (the golden recordings strip it); only the behaviour is kept:
conflicts, forced take-over, and "a forced apply with identical values still bumps resourceVersion".
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from . import schema
from .patch import MERGE_KEYS, PRIMITIVE_MERGE

JsonObj = dict[str, Any]
Path = tuple[str, ...]

# Maps and structs that are owned as one unit (``+mapType=atomic`` / ``+structType=atomic``).
ATOMIC_FIELDS = {("V1ServiceSpec", "selector"), ("V1PodSpec", "nodeSelector")}
ATOMIC_TYPES = {"V1LabelSelector"}

_IGNORED_META = {
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
}


@dataclass(frozen=True)
class Manager:
    name: str
    operation: str  # "Update" or "Apply"
    api_version: str
    subresource: str = ""

    def describe(self) -> str:
        text = json.dumps(self.name)
        if self.subresource:
            text += f" with subresource {json.dumps(self.subresource)}"
        if self.operation == "Update":
            text += f" using {self.api_version}"
        return text


def format_path(path: Path) -> str:
    out = ""
    for seg in path:
        out += seg if seg.startswith("[") else f".{seg}"
    return out


def leaves(obj: JsonObj, root_type: str, *, include_status: bool) -> dict[Path, str]:
    """Leaf paths of an object with their JSON-encoded values."""
    out: dict[Path, str] = {}
    for key, value in obj.items():
        if key in ("apiVersion", "kind") or (key == "status" and not include_status):
            continue
        if key == "metadata" and isinstance(value, dict):
            for mkey, mval in value.items():
                if mkey in _IGNORED_META:
                    continue
                _walk(mval, ("metadata", mkey), "V1ObjectMeta", mkey, out)
            continue
        _walk(value, (key,), root_type, key, out)
    return out


def _walk(value: Any, path: Path, owner: str, field: str, out: dict[Path, str]) -> None:
    spec = schema.field_spec(owner, field)
    if (owner, field) in ATOMIC_FIELDS or value is None:
        out[path] = json.dumps(value, sort_keys=True)
        return
    if isinstance(spec, dict) and "ref" in spec and isinstance(value, dict):
        child = spec["ref"]
        if child in ATOMIC_TYPES or not value:
            out[path] = json.dumps(value, sort_keys=True)
            return
        for key, sub in value.items():
            _walk(sub, (*path, key), child, key, out)
        return
    if isinstance(spec, dict) and "map" in spec and isinstance(value, dict):
        if not value:
            out[path] = "{}"
        for key, sub in value.items():
            out[(*path, key)] = json.dumps(sub, sort_keys=True)
        return
    merge_key = MERGE_KEYS.get((owner, field))
    if isinstance(value, list) and merge_key is not None:
        if merge_key == PRIMITIVE_MERGE:
            for item in value:
                out[(*path, f"[{json.dumps(item)}]")] = "true"
            return
        inner = spec.get("list") if isinstance(spec, dict) else None
        item_type = inner.get("ref") if isinstance(inner, dict) else None
        for item in value:
            if not isinstance(item, dict) or item_type is None:
                continue
            seg = f"[{merge_key}={json.dumps(item.get(merge_key))}]"
            for key, sub in item.items():
                _walk(sub, (*path, seg, key), item_type, key, out)
        return
    out[path] = json.dumps(value, sort_keys=True)


class FieldOwnership:
    """Per-object ownership sets, keyed by object uid."""

    def __init__(self) -> None:
        self._owners: dict[str, dict[Manager, set[Path]]] = {}

    def snapshot(self, uid: str) -> dict[Manager, frozenset[Path]]:
        return {m: frozenset(p) for m, p in self._owners.get(uid, {}).items()}

    def forget(self, uid: str) -> None:
        self._owners.pop(uid, None)

    def record_update(self, uid: str, manager: Manager, old: dict[Path, str], new: dict[Path, str]) -> None:
        owners = self._owners.setdefault(uid, {})
        changed = {p for p, v in new.items() if old.get(p) != v}
        removed = set(old) - set(new)
        for mgr, paths in list(owners.items()):
            if mgr != manager:
                paths -= changed | removed
                if not paths:
                    del owners[mgr]
        if changed:
            owners.setdefault(manager, set()).update(changed)
        if manager in owners:
            owners[manager] -= removed
            if not owners[manager]:
                del owners[manager]

    def conflicts(
        self, uid: str, manager: Manager, current: dict[Path, str], applied: dict[Path, str]
    ) -> list[tuple[Manager, Path]]:
        found: list[tuple[Manager, Path]] = []
        for path, value in applied.items():
            if current.get(path) == value:
                continue
            for mgr, paths in self._owners.get(uid, {}).items():
                if mgr.name != manager.name and path in paths:
                    found.append((mgr, path))
        return found

    def previously_applied(self, uid: str, manager: Manager) -> set[Path]:
        return set(self._owners.get(uid, {}).get(manager, set()))

    def owned_by_others(self, uid: str, manager: Manager) -> set[Path]:
        out: set[Path] = set()
        for mgr, paths in self._owners.get(uid, {}).items():
            if mgr != manager:
                out |= paths
        return out

    def record_apply(self, uid: str, manager: Manager, applied: set[Path], *, force: bool) -> None:
        owners = self._owners.setdefault(uid, {})
        if force:
            for mgr, paths in list(owners.items()):
                if mgr != manager:
                    paths -= applied
                    if not paths:
                        del owners[mgr]
        owners[manager] = set(applied)


def conflict_message(conflicts: list[tuple[Manager, Path]]) -> str:
    if len(conflicts) == 1:
        mgr, path = conflicts[0]
        return f"Apply failed with 1 conflict: conflict with {mgr.describe()}: {format_path(path)}"
    by_manager: dict[str, list[str]] = {}
    for mgr, path in conflicts:
        by_manager.setdefault(mgr.describe(), []).append(format_path(path))
    lines: list[str] = []
    for name in sorted(by_manager):
        lines.append(f"conflicts with {name}:")
        lines.extend(f"- {p}" for p in by_manager[name])
    return f"Apply failed with {len(conflicts)} conflicts: " + "\n".join(lines)


def delete_path(obj: Any, path: Path) -> None:
    """Remove the field at ``path`` (list items addressed by ``[key="v"]``) if it exists."""
    node = obj
    for i, seg in enumerate(path):
        last = i == len(path) - 1
        if seg.startswith("[") and isinstance(node, list):
            inner = seg[1:-1]
            if "=" in inner:
                key, raw = inner.split("=", 1)
                want = json.loads(raw)
                idx = next((j for j, it in enumerate(node) if isinstance(it, dict) and it.get(key) == want), None)
            else:
                want = json.loads(inner)
                idx = next((j for j, it in enumerate(node) if it == want), None)
            if idx is None:
                return
            if last:
                node.pop(idx)
                return
            node = node[idx]
        elif isinstance(node, dict):
            if seg not in node:
                return
            if last:
                del node[seg]
                return
            node = node[seg]
        else:
            return
