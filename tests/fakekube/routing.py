"""Request paths to request attributes, like the apiserver's ``RequestInfoFactory``.

Authorization needs the attributes (verb, group, resource, subresource, namespace, name) before anything
else is looked at, even for paths that will 404 later, so this is computed first.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qs


@dataclass(frozen=True)
class RequestInfo:
    is_resource: bool
    path: str
    verb: str  # RBAC verb for resources, the lower-case HTTP method for non-resource paths
    api_prefix: str = ""  # "api" or "apis"
    group: str = ""
    version: str = ""
    namespace: str = ""
    resource: str = ""
    name: str = ""
    subresource: str = ""
    parts: tuple[str, ...] = ()


def truthy(values: dict[str, list[str]], key: str) -> bool:
    return (values.get(key) or [""])[-1].lower() in ("true", "1")


def parse(method: str, path: str, query: str) -> RequestInfo:
    params = parse_qs(query, keep_blank_values=True)
    segments = tuple(s for s in path.strip("/").split("/") if s)
    lower = method.lower()
    if not segments or segments[0] not in ("api", "apis"):
        return RequestInfo(False, path, lower)
    prefix = segments[0]
    rest = segments[1:]
    if prefix == "api":
        if len(rest) < 2:
            return RequestInfo(False, path, lower)
        group, version, rest = "", rest[0], rest[1:]
    else:
        if len(rest) < 3:
            return RequestInfo(False, path, lower)
        group, version, rest = rest[0], rest[1], rest[2:]
    namespace = ""
    if rest and rest[0] == "namespaces" and len(rest) >= 3 and rest[2] not in ("status", "finalize"):
        namespace = rest[1]
        rest = rest[2:]
    resource = rest[0]
    name = rest[1] if len(rest) > 1 else ""
    subresource = rest[2] if len(rest) > 2 else ""
    if resource == "namespaces" and name and not namespace:
        namespace = name
    verb = {
        "post": "create",
        "put": "update",
        "patch": "patch",
        "delete": "delete" if name else "deletecollection",
    }.get(lower, "get" if name else "list")
    if lower == "get" and truthy(params, "watch"):
        verb = "watch"
    return RequestInfo(
        True,
        path,
        verb,
        prefix,
        group,
        version,
        namespace,
        resource,
        name,
        subresource,
        segments,
    )
