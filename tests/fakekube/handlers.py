"""Verb handlers: what each REST call does, given the parsed request (no socket code here)."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from . import crds, discovery, status
from .registry import PATCH_TYPES, Registry, WriteOptions, WriteResult
from .resources import ResourceType, lookup
from .routing import RequestInfo, truthy
from .selectors import parse_field_selector, parse_label_selector
from .store import jcopy

JsonObj = dict[str, Any]


@dataclass
class Response:
    code: int
    body: JsonObj | str
    content_type: str = "application/json"
    warnings: list[str] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class WatchRequest:
    res: ResourceType
    namespace: str
    params: dict[str, list[str]]
    name: str = ""


@dataclass
class ApiRequest:
    method: str
    info: RequestInfo
    query: str
    headers: dict[str, str]
    body: bytes
    server_address: str

    @property
    def params(self) -> dict[str, list[str]]:
        return parse_qs(self.query, keep_blank_values=True)

    def param(self, key: str, default: str | None = None) -> str | None:
        values = self.params.get(key)
        return values[-1] if values else default


def _field_manager(req: ApiRequest) -> str:
    manager = req.param("fieldManager")
    if manager:
        if len(manager) > 128:
            cause = {
                "reason": "FieldValueTooLong",
                "message": "Too long: may not be more than 128 bytes",
                "field": "fieldManager",
            }
            raise status.invalid("PatchOptions", "meta.k8s.io", "", [cause])
        return manager
    agent = req.headers.get("User-Agent") or ""
    return agent.split("/", 1)[0][:128]


def _write_options(req: ApiRequest) -> WriteOptions:
    dry = req.params.get("dryRun") or []
    for value in dry:
        if value != "All":
            cause = {
                "reason": "FieldValueNotSupported",
                "message": f'Unsupported value: "{value}": supported values: "All"',
                "field": "dryRun",
            }
            raise status.invalid("CreateOptions", "meta.k8s.io", "", [cause])
    validation = req.param("fieldValidation") or "Warn"
    if validation not in ("Ignore", "Warn", "Strict"):
        raise status.bad_request(
            f'fieldValidation: Unsupported value: "{validation}": supported values: "Ignore", "Strict", "Warn"'
        )
    return WriteOptions(
        manager=_field_manager(req),
        dry_run=bool(dry),
        field_validation=validation,
        force=truthy(req.params, "force"),
    )


class Handlers:
    def __init__(self, registry: Registry, watch: Callable[[WatchRequest], Response]) -> None:
        self.registry = registry
        self._watch = watch

    # -- discovery -------------------------------------------------------------------------------------------

    def discovery(self, req: ApiRequest) -> Response | None:
        """Non-resource GETs; None when the path is not one of them."""
        path = req.info.path.rstrip("/") or "/"
        if req.method != "GET":
            return None
        if path == "/version":
            return Response(200, dict(discovery.VERSION_INFO))
        if path in ("/healthz", "/livez", "/readyz"):
            return Response(200, "ok", "text/plain; charset=utf-8")
        if path == "/api":
            return Response(200, discovery.api_versions(req.server_address))
        if path == "/api/v1":
            return Response(200, discovery.core_resource_list())
        if path == "/apis":
            return Response(200, crds.with_groups(discovery.group_list(), self.registry.crds))
        parts = path.strip("/").split("/")
        if len(parts) == 2 and parts[0] == "apis":
            group = discovery.group(parts[1]) or crds.group(self.registry.crds, parts[1])
            return Response(200, group) if group else None
        if len(parts) == 3 and parts[0] == "apis":
            listing = discovery.resource_list(parts[1], parts[2]) or crds.resource_list(
                self.registry.crds, parts[1], parts[2]
            )
            return Response(200, listing) if listing else None
        return None

    # -- resources -------------------------------------------------------------------------------------------

    def resource(self, req: ApiRequest) -> Response:
        info = req.info
        if info.api_prefix == "apis" and not (
            discovery.known_group_version(info.group, info.version)
            or crds.known_group_version(self.registry.crds, info.group, info.version)
        ):
            raise status.page_not_found()
        if info.api_prefix == "api" and info.version != "v1":
            raise status.page_not_found()
        res = lookup(info.group, info.version, info.resource)
        if res is None or (res.custom and res.key not in self.registry.crds):
            raise status.resource_not_found()
        if info.subresource and info.subresource not in res.subresources:
            raise status.resource_not_found()
        namespace = info.namespace if res.namespaced else ""
        if res.kind == "Namespace":
            namespace = ""
        method = req.method
        if not info.name:
            if method == "GET":
                if truthy(req.params, "watch"):
                    return self._watch(WatchRequest(res, namespace, req.params))
                return self._list(res, namespace, req)
            if method == "POST":
                return self._create(res, namespace, req)
            if method == "DELETE":
                return self._delete_collection(res, namespace, req)
            raise status.method_not_allowed()
        name = info.name
        sub = info.subresource
        if method == "GET":
            if truthy(req.params, "watch") and not sub:
                return self._watch(WatchRequest(res, namespace, req.params, name=name))
            if sub == "scale":
                return Response(200, self.registry.get_scale(res, namespace, name))
            if sub == "finalize":
                raise status.method_not_allowed()
            return Response(200, self.registry.get(res, namespace, name))
        if method == "PUT":
            return self._update(res, namespace, name, sub, req)
        if method == "PATCH":
            if sub == "finalize":
                raise status.method_not_allowed()
            return self._patch(res, namespace, name, sub, req)
        if method == "DELETE" and not sub:
            return self._delete(res, namespace, name, req)
        raise status.method_not_allowed()

    def _list(self, res: ResourceType, namespace: str, req: ApiRequest) -> Response:
        labels = parse_label_selector(req.param("labelSelector"))
        fields = parse_field_selector(req.param("fieldSelector"), res.supports_field)
        items, rv = self.registry.list(res, namespace or None, labels, fields)
        meta: JsonObj = {"resourceVersion": rv}
        token = req.param("continue")
        if token:
            try:
                decoded = json.loads(base64.b64decode(token + "=" * (-len(token) % 4)))
                start = str(decoded["start"])
            except (ValueError, KeyError, TypeError):
                raise status.bad_request("continue key is not valid: illegal base64 data") from None
            items = [i for i in items if _key(i) >= start]
        limit_text = req.param("limit")
        if limit_text and limit_text.isdigit() and int(limit_text) > 0 and len(items) > int(limit_text):
            limit = int(limit_text)
            rest = items[limit:]
            items = items[:limit]
            cont = {"v": "meta.k8s.io/v1", "rv": int(rv), "start": _key(rest[0])}
            meta["continue"] = base64.b64encode(json.dumps(cont, separators=(",", ":")).encode()).decode().rstrip("=")
            meta["remainingItemCount"] = len(rest)
        return Response(200, {"kind": res.list_kind, "apiVersion": res.group_version, "metadata": meta, "items": items})

    def _body(self, res: ResourceType, req: ApiRequest, kind: str | None = None) -> Any:
        return self.registry.parse_body(kind or res.kind, req.body)

    def _create(self, res: ResourceType, namespace: str, req: ApiRequest) -> Response:
        opts = _write_options(req)
        result = self.registry.create(res, namespace, self._body(res, req), opts)
        return _result(result)

    def _update(self, res: ResourceType, namespace: str, name: str, sub: str, req: ApiRequest) -> Response:
        opts = _write_options(req)
        if sub == "scale":
            return _result(self.registry.update_scale(res, namespace, name, self._body(res, req, "Scale"), opts))
        result = self.registry.update(res, namespace, name, self._body(res, req), opts, subresource=sub)
        return _result(result)

    def _patch(self, res: ResourceType, namespace: str, name: str, sub: str, req: ApiRequest) -> Response:
        content_type = (req.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        patch_type = PATCH_TYPES.get(content_type)
        if patch_type is None:
            raise status.unsupported_media_type()
        if patch_type == "strategic" and res.custom:
            raise status.unsupported_patch_for_custom_resource()
        opts = _write_options(req)
        if patch_type == "apply" and not req.param("fieldManager"):
            cause = {
                "reason": "FieldValueRequired",
                "message": "Required value: is required for apply patch",
                "field": "fieldManager",
            }
            raise status.invalid("PatchOptions", "meta.k8s.io", "", [cause])
        if patch_type != "apply" and opts.force:
            cause = {
                "reason": "FieldValueForbidden",
                "message": "Forbidden: may not be specified for non-apply patch",
                "field": "force",
            }
            raise status.invalid("PatchOptions", "meta.k8s.io", "", [cause])
        doc = self.registry.decode_patch(patch_type, req.body)
        if sub == "scale":
            return _result(self.registry.patch_scale(res, namespace, name, patch_type, doc, opts))
        return _result(self.registry.patch(res, namespace, name, patch_type, doc, opts, subresource=sub))

    def _delete_options(self, req: ApiRequest) -> JsonObj:
        options: JsonObj = {}
        if req.body.strip():
            parsed = self.registry.parse_body("DeleteOptions", req.body)
            if not isinstance(parsed, dict):
                raise status.bad_request("the object provided is unrecognized (must be of type DeleteOptions)")
            options.update(parsed)
        policy = req.param("propagationPolicy")
        if policy:
            options["propagationPolicy"] = policy
        grace = req.param("gracePeriodSeconds")
        if grace is not None and grace.lstrip("-").isdigit():
            options["gracePeriodSeconds"] = int(grace)
        orphan = req.param("orphanDependents")
        if orphan is not None:
            options["orphanDependents"] = orphan.lower() == "true"
        if req.params.get("dryRun"):
            options["dryRun"] = req.params["dryRun"]
        return options

    def _delete(self, res: ResourceType, namespace: str, name: str, req: ApiRequest) -> Response:
        options = self._delete_options(req)
        dry_run = bool(options.get("dryRun"))
        result = self.registry.delete(res, namespace, name, options, dry_run=dry_run)
        return _result(result)

    def _delete_collection(self, res: ResourceType, namespace: str, req: ApiRequest) -> Response:
        options = self._delete_options(req)
        labels = parse_label_selector(req.param("labelSelector"))
        fields = parse_field_selector(req.param("fieldSelector"), res.supports_field)
        items, rv = self.registry.list(res, namespace or None, labels, fields)
        deleted = []
        for item in items:
            meta = item["metadata"]
            try:
                result = self.registry.delete(
                    res, meta.get("namespace", ""), meta["name"], options, dry_run=bool(options.get("dryRun"))
                )
            except status.ApiError as err:
                if err.code == 404:
                    continue
                raise
            body = result.obj if result.obj.get("kind") != "Status" else item
            deleted.append({k: v for k, v in jcopy(body).items() if k not in ("kind", "apiVersion")})
        return Response(
            200,
            {
                "kind": res.list_kind,
                "apiVersion": res.group_version,
                "metadata": {"resourceVersion": rv},
                "items": deleted,
            },
        )


def _key(item: JsonObj) -> str:
    meta = item["metadata"]
    return f"{meta.get('namespace', '')}/{meta['name']}"


def _result(result: WriteResult) -> Response:
    return Response(result.code, result.obj, warnings=result.warnings)
