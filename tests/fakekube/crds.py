"""CustomResourceDefinitions the fake can install, and the discovery documents an installed CRD adds.

A real cluster serves a custom resource only once its CRD is installed: before that, the group is unknown
(``GET /apis/argoproj.io/v1alpha1`` and every path below it answer the plain-text ``404 page not found``).
``FakeKube.install_crd("rollouts.argoproj.io")`` does what ``kubectl apply`` of the CRD does for the API:
the group appears at the end of ``/apis`` (CRD groups have the lowest priority), with the resource list the
apiextensions-apiserver publishes (its verbs in its own order; one ``<plural>/status`` entry for the status
subresource). The object strategies are in registry.py (``ResourceType.custom``): status dropped on create and
only written through ``/status``, generation moved by spec changes, no strategic merge patch (415).

Not modelled: the OpenAPI schema of the CRD (no pruning of unknown fields, no validation, no defaulting) and
the ``/scale`` subresource the Rollout CRD also declares.
"""

from __future__ import annotations

from typing import Any

from .resources import CUSTOM_RESOURCES, ResourceType

JsonObj = dict[str, Any]

# apiextensions-apiserver pkg/apiserver/customresource_discovery_controller.go lists these, in this order.
CRD_VERBS = ("delete", "deletecollection", "get", "list", "patch", "create", "update", "watch")
STATUS_VERBS = ("get", "patch", "update")

CRDS: dict[str, ResourceType] = {f"{r.plural}.{r.group}": r for r in CUSTOM_RESOURCES}


def crd(name: str) -> ResourceType:
    """The custom resource of a CRD name such as ``rollouts.argoproj.io``."""
    try:
        return CRDS[name]
    except KeyError:
        raise KeyError(f"unknown CRD {name!r}; the fake knows {sorted(CRDS)}") from None


def _installed(keys: set[str]) -> list[ResourceType]:
    return [r for r in CUSTOM_RESOURCES if r.key in keys]


def known_group_version(keys: set[str], group: str, version: str) -> bool:
    return any(r.group == group and r.version == version for r in _installed(keys))


def _group(name: str, versions: list[str]) -> JsonObj:
    return {
        "name": name,
        "versions": [{"groupVersion": f"{name}/{v}", "version": v} for v in versions],
        "preferredVersion": {"groupVersion": f"{name}/{versions[0]}", "version": versions[0]},
    }


def _groups(keys: set[str]) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for res in _installed(keys):
        versions = groups.setdefault(res.group, [])
        if res.version not in versions:
            versions.append(res.version)
    return groups


def with_groups(group_list: JsonObj, keys: set[str]) -> JsonObj:
    """``/apis`` with the installed CRD groups appended."""
    extra = [_group(name, versions) for name, versions in _groups(keys).items()]
    return {**group_list, "groups": [*group_list["groups"], *extra]} if extra else group_list


def group(keys: set[str], name: str) -> JsonObj | None:
    versions = _groups(keys).get(name)
    if versions is None:
        return None
    return {"kind": "APIGroup", "apiVersion": "v1", **_group(name, versions)}


def resource_list(keys: set[str], group_name: str, version: str) -> JsonObj | None:
    resources: list[JsonObj] = []
    for res in _installed(keys):
        if res.group != group_name or res.version != version:
            continue
        entry: JsonObj = {"name": res.plural, "singularName": res.singular, "namespaced": res.namespaced,
                          "kind": res.kind, "verbs": list(CRD_VERBS)}
        if res.short_names:
            entry["shortNames"] = list(res.short_names)
        if res.categories:
            entry["categories"] = list(res.categories)
        entry["storageVersionHash"] = res.storage_hash
        resources.append(entry)
        if "status" in res.subresources:
            resources.append({"name": f"{res.plural}/status", "singularName": "", "namespaced": res.namespaced,
                              "kind": res.kind, "verbs": list(STATUS_VERBS)})
    if not resources:
        return None
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": f"{group_name}/{version}",
            "resources": resources}
