"""The three classic patch formats: JSON merge (RFC 7386), strategic merge, JSON patch (RFC 6902).

Strategic merge needs to know which lists merge by key; that comes from the Go struct tags
(``patchStrategy:"merge" patchMergeKey:"name"``), reproduced in ``MERGE_KEYS`` for the types we serve.
Lists without a strategy are replaced wholesale, exactly like the real server.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from . import schema

JsonObj = dict[str, Any]

PRIMITIVE_MERGE = "<primitive>"

# (Go type as named in schema.json, field) -> merge key, from the upstream struct tags.
MERGE_KEYS: dict[tuple[str, str], str] = {
    ("V1PodSpec", "containers"): "name",
    ("V1PodSpec", "initContainers"): "name",
    ("V1PodSpec", "ephemeralContainers"): "name",
    ("V1PodSpec", "volumes"): "name",
    ("V1PodSpec", "imagePullSecrets"): "name",
    ("V1PodSpec", "hostAliases"): "ip",
    ("V1PodSpec", "topologySpreadConstraints"): "topologyKey",
    ("V1PodSpec", "resourceClaims"): "name",
    ("V1Container", "ports"): "containerPort",
    ("V1Container", "env"): "name",
    ("V1Container", "volumeMounts"): "mountPath",
    ("V1Container", "volumeDevices"): "devicePath",
    ("V1ServiceSpec", "ports"): "port",
    ("V1ObjectMeta", "ownerReferences"): "uid",
    ("V1ObjectMeta", "finalizers"): PRIMITIVE_MERGE,
    ("V1DeploymentStatus", "conditions"): "type",
    ("V1ReplicaSetStatus", "conditions"): "type",
    ("V1PodStatus", "conditions"): "type",
    ("V1PodStatus", "podIPs"): "ip",
    ("V1NamespaceStatus", "conditions"): "type",
    ("V1ServiceStatus", "conditions"): "type",
}


class PatchError(ValueError):
    """A patch that decoded but cannot be applied (JSON-patch ``test`` failed, missing path, ...)."""


# ---------------------------------------------------------------------------------------------------------
# JSON merge patch (RFC 7386)
# ---------------------------------------------------------------------------------------------------------


def merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


# ---------------------------------------------------------------------------------------------------------
# Strategic merge patch
# ---------------------------------------------------------------------------------------------------------


def _child_type(type_name: str | None, key: str) -> tuple[str | None, Any]:
    if type_name is None:
        return None, None
    spec = schema.field_spec(type_name, key)
    if isinstance(spec, dict) and "ref" in spec:
        return spec["ref"], spec
    if isinstance(spec, dict) and "list" in spec:
        inner = spec["list"]
        return (inner["ref"] if isinstance(inner, dict) and "ref" in inner else None), spec
    if isinstance(spec, dict) and "map" in spec:
        inner = spec["map"]
        return (inner["ref"] if isinstance(inner, dict) and "ref" in inner else None), spec
    return None, spec


def strategic_merge(target: Any, patch: Any, type_name: str | None) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if patch.get("$patch") == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    if patch.get("$patch") == "delete":
        return None
    result = dict(target) if isinstance(target, dict) else {}
    retain = patch.get("$retainKeys")
    for key, value in patch.items():
        if key in ("$patch", "$retainKeys") or key.startswith("$setElementOrder/"):
            continue
        if key.startswith("$deleteFromPrimitiveList/"):
            field_name = key.split("/", 1)[1]
            current = result.get(field_name)
            if isinstance(current, list) and isinstance(value, list):
                result[field_name] = [v for v in current if v not in value]
            continue
        if value is None:
            result.pop(key, None)
            continue
        child_type, spec = _child_type(type_name, key)
        merge_key = MERGE_KEYS.get((type_name or "", key))
        if isinstance(value, list) and merge_key is not None:
            result[key] = _merge_list(result.get(key), value, merge_key, child_type)
        elif isinstance(value, dict) and isinstance(spec, dict) and "map" in spec:
            merged = dict(result.get(key) or {})
            for mk, mv in value.items():
                if mk == "$patch":
                    continue
                if mv is None:
                    merged.pop(mk, None)
                else:
                    merged[mk] = strategic_merge(merged.get(mk), mv, child_type)
            result[key] = {} if value.get("$patch") == "replace" and not merged else merged
        elif isinstance(value, dict):
            merged_value = strategic_merge(result.get(key), value, child_type)
            if merged_value is None:
                result.pop(key, None)
            else:
                result[key] = merged_value
        else:
            result[key] = copy.deepcopy(value)
    if isinstance(retain, list):
        result = {k: v for k, v in result.items() if k in retain}
    return result


def _merge_list(current: Any, patch: list[Any], merge_key: str, item_type: str | None) -> list[Any]:
    items = [copy.deepcopy(i) for i in current] if isinstance(current, list) else []
    if merge_key == PRIMITIVE_MERGE:
        for value in patch:
            if value not in items:
                items.append(copy.deepcopy(value))
        return items
    if any(isinstance(p, dict) and p.get("$patch") == "replace" for p in patch):
        return [copy.deepcopy(p) for p in patch if not (isinstance(p, dict) and p.get("$patch") == "replace")]
    for entry in patch:
        if not isinstance(entry, dict) or merge_key not in entry:
            items.append(copy.deepcopy(entry))
            continue
        idx = next(
            (i for i, it in enumerate(items) if isinstance(it, dict) and it.get(merge_key) == entry[merge_key]),
            None,
        )
        if entry.get("$patch") == "delete":
            if idx is not None:
                items.pop(idx)
            continue
        if idx is None:
            items.append(strategic_merge({}, entry, item_type))
        else:
            items[idx] = strategic_merge(items[idx], entry, item_type)
    return items


# ---------------------------------------------------------------------------------------------------------
# JSON patch (RFC 6902)
# ---------------------------------------------------------------------------------------------------------


def _tokens(pointer: str) -> list[str]:
    if pointer == "":
        return []
    if not pointer.startswith("/"):
        raise PatchError(f"invalid JSON pointer {pointer!r}")
    return [t.replace("~1", "/").replace("~0", "~") for t in pointer[1:].split("/")]


def _resolve_parent(doc: Any, tokens: list[str]) -> Any:
    node = doc
    for tok in tokens[:-1]:
        if isinstance(node, dict):
            if tok not in node:
                raise PatchError(f"doc is missing path: {tok}")
            node = node[tok]
        elif isinstance(node, list):
            node = node[_index(tok, len(node))]
        else:
            raise PatchError("parent is not a container")
    return node


def _index(tok: str, length: int, *, allow_end: bool = False) -> int:
    if tok == "-" and allow_end:
        return length
    if not tok.isdigit() or (len(tok) > 1 and tok.startswith("0")):
        raise PatchError(f"invalid array index {tok!r}")
    idx = int(tok)
    if idx > length or (idx == length and not allow_end):
        raise PatchError("array index out of bounds")
    return idx


def _get(doc: Any, pointer: str) -> Any:
    node = doc
    for tok in _tokens(pointer):
        if isinstance(node, dict):
            if tok not in node:
                raise PatchError(f"missing path {pointer}")
            node = node[tok]
        elif isinstance(node, list):
            node = node[_index(tok, len(node))]
        else:
            raise PatchError(f"missing path {pointer}")
    return node


def _add(doc: Any, pointer: str, value: Any) -> Any:
    tokens = _tokens(pointer)
    if not tokens:
        return copy.deepcopy(value)
    parent = _resolve_parent(doc, tokens)
    last = tokens[-1]
    if isinstance(parent, dict):
        parent[last] = copy.deepcopy(value)
    elif isinstance(parent, list):
        parent.insert(_index(last, len(parent), allow_end=True), copy.deepcopy(value))
    else:
        raise PatchError("cannot add to a scalar")
    return doc


def _remove(doc: Any, pointer: str) -> Any:
    tokens = _tokens(pointer)
    if not tokens:
        raise PatchError("cannot remove the root")
    parent = _resolve_parent(doc, tokens)
    last = tokens[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise PatchError(f"missing path {pointer}")
        del parent[last]
    elif isinstance(parent, list):
        parent.pop(_index(last, len(parent)))
    else:
        raise PatchError("cannot remove from a scalar")
    return doc


def json_patch(doc: Any, ops: list[Any]) -> Any:
    doc = copy.deepcopy(doc)
    for op in ops:
        if not isinstance(op, dict):
            raise PatchError("operation is not an object")
        kind = op.get("op")
        path = op.get("path")
        if not isinstance(path, str):
            raise PatchError("operation has no path")
        if kind == "add":
            doc = _add(doc, path, op.get("value"))
        elif kind == "remove":
            doc = _remove(doc, path)
        elif kind == "replace":
            _get(doc, path)
            doc = _remove(doc, path) if _tokens(path) else doc
            doc = _add(doc, path, op.get("value"))
        elif kind == "move":
            value = _get(doc, str(op.get("from")))
            doc = _remove(doc, str(op.get("from")))
            doc = _add(doc, path, value)
        elif kind == "copy":
            doc = _add(doc, path, _get(doc, str(op.get("from"))))
        elif kind == "test":
            if _get(doc, path) != op.get("value") or json.dumps(_get(doc, path), sort_keys=True) != json.dumps(
                op.get("value"), sort_keys=True
            ):
                raise PatchError(f"testing value {path} failed")
        else:
            raise PatchError(f"Unexpected kind: {kind}")
    return doc
