"""The REST semantics of the fake: create/update/patch/delete with the upstream registry strategies.

Everything that writes goes through here: HTTP handlers, the controllers and the ``FakeKube`` helpers. All
read-modify-write operations hold the store lock, so each one is atomic like an etcd transaction.
"""

from __future__ import annotations

import ipaddress
import json
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import yaml

from . import defaults, patch, schema, status, validation
from .gotime import format_time
from .managed import FieldOwnership, Manager, conflict_message, delete_path, leaves
from .resources import BY_KIND, ResourceType
from .selectors import FieldSelector, LabelSelector, selector_string
from .store import Store, jcopy

JsonObj = dict[str, Any]

NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"

PATCH_TYPES = {
    "application/json-patch+json": "json",
    "application/merge-patch+json": "merge",
    "application/strategic-merge-patch+json": "strategic",
    "application/apply-patch+yaml": "apply",
}


@dataclass
class WriteResult:
    obj: JsonObj
    code: int = 200
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class WriteOptions:
    manager: str = ""
    dry_run: bool = False
    field_validation: str = "Warn"  # Ignore | Warn | Strict
    force: bool = False


class Registry:
    def __init__(self, store: Store, *, now: Callable[[], datetime], seed: int = 0) -> None:
        self.store = store
        self.now = now
        self.rng = random.Random(seed)
        self.ownership = FieldOwnership()
        self._service_ips: set[str] = set()
        self._node_ports: set[int] = set()
        # Keys of the custom resources whose CRD is installed (crds.py); the others answer 404.
        self.crds: set[str] = set()

    # ---------------------------------------------------------------------------------------------------
    # helpers
    # ---------------------------------------------------------------------------------------------------

    def random_suffix(self, n: int = 5) -> str:
        return "".join(self.rng.choice(NAME_ALPHABET) for _ in range(n))

    def new_uid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def timestamp(self) -> str:
        return format_time(self.now())

    @staticmethod
    def _served(res: ResourceType, obj: JsonObj) -> JsonObj:
        """The wire form of a stored object: kind and apiVersion first."""
        body = {"kind": res.kind, "apiVersion": res.group_version}
        stored = {k: v for k, v in obj.items() if k not in ("kind", "apiVersion")}
        body.update(res.outbound(stored) if res.outbound else stored)
        return body

    @staticmethod
    def parse_body(res_kind: str, raw: bytes) -> Any:
        """JSON body of a POST/PUT, with the decoder's 400 text for broken JSON."""
        try:
            return json.loads(raw.decode("utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            text = raw.decode("utf-8", errors="replace")
            quoted = text if len(text) <= 30 else text[:30] + " ..."
            raise status.bad_request(
                f"the object provided is unrecognized (must be of type {res_kind}): "
                "couldn't get version/kind; "
                f"json parse error: {go_json_error(raw, err)} ({quoted})"
            ) from None

    def _decode(self, res: ResourceType, body: Any, opts: WriteOptions) -> tuple[JsonObj, list[str]]:
        kind = res.kind
        try:
            result = schema.decode(body, res.schema_key)
        except schema.DecodeError as err:
            raise status.bad_request(
                f'{kind} in version "{res.version}" cannot be handled as a {kind}: {err}'
            ) from None
        warnings: list[str] = []
        if result.unknown:
            if opts.field_validation == "Strict":
                listed = ", ".join(f'unknown field "{u}"' for u in result.unknown)
                raise status.bad_request(
                    f'{kind} in version "{res.version}" cannot be handled as a {kind}: strict decoding error: {listed}'
                )
            if opts.field_validation != "Ignore":
                warnings = [f'unknown field "{u}"' for u in result.unknown]
        obj = result.obj
        api_version = obj.pop("apiVersion", None)
        if api_version and api_version != res.group_version:
            raise status.bad_request(
                f"the API version in the data ({api_version}) does not match the expected API version "
                f"({res.group_version})"
            )
        body_kind = obj.pop("kind", None)
        if body_kind and body_kind != kind:
            raise status.bad_request(f"the kind in the data ({body_kind}) does not match the expected kind ({kind})")
        if res.inbound is not None:
            obj = res.inbound(obj)
        return obj, warnings

    def _validate(self, res: ResourceType, obj: JsonObj, old: JsonObj | None) -> None:
        causes = validation.validate(res.validator or res.kind, obj, old)
        if causes:
            name = str(obj.get("metadata", {}).get("name") or "")
            raise status.invalid(res.kind, res.group, name, causes)

    def _owner_leaves(self, res: ResourceType, obj: JsonObj | None, subresource: str) -> dict[tuple[str, ...], str]:
        if obj is None:
            return {}
        root = schema.root_type(res.storage_schema_key or res.schema_key)
        return leaves(obj, root, include_status=subresource == "status")

    def _manager(self, res: ResourceType, name: str, subresource: str, operation: str = "Update") -> Manager:
        return Manager(name, operation, res.group_version, subresource if subresource == "status" else "")

    def namespace_exists(self, namespace: str) -> bool:
        return self.store.peek("/namespaces", "", namespace) is not None

    # ---------------------------------------------------------------------------------------------------
    # reads
    # ---------------------------------------------------------------------------------------------------

    def get(self, res: ResourceType, namespace: str, name: str) -> JsonObj:
        obj = self.store.get(res.key, namespace if res.namespaced else "", name)
        if obj is None:
            raise status.not_found(res.plural, res.group, name)
        return self._served(res, obj)

    def list(
        self,
        res: ResourceType,
        namespace: str | None,
        labels: LabelSelector,
        fields: FieldSelector,
    ) -> tuple[list[JsonObj], str]:
        with self.store.lock:
            rv = str(self.store.resource_version)
            items = [
                obj
                for obj in self.store.list(res.key, namespace if res.namespaced else None, copy=False)
                if labels.matches(obj.get("metadata", {}).get("labels")) and fields.matches(res.fields(obj))
            ]
            if res.outbound is not None:
                return [res.outbound(jcopy(o)) for o in items], rv
            return [jcopy(o) for o in items], rv

    # ---------------------------------------------------------------------------------------------------
    # create
    # ---------------------------------------------------------------------------------------------------

    def create(self, res: ResourceType, namespace: str, body: Any, opts: WriteOptions) -> WriteResult:
        if res.custom and res.key not in self.crds:
            raise status.page_not_found()
        obj, warnings = self._decode(res, body, opts)
        with self.store.lock:
            meta = obj.setdefault("metadata", {})
            if res.namespaced:
                if meta.get("namespace") and meta["namespace"] != namespace:
                    raise status.bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request"
                    )
                meta["namespace"] = namespace
            else:
                meta.pop("namespace", None)
            if meta.get("resourceVersion"):
                raise status.bad_request("resourceVersion should not be set on objects to be created")
            if not meta.get("name") and meta.get("generateName"):
                meta["name"] = f"{meta['generateName']}{self.random_suffix()}"
            obj = self._prepare_create(res, obj)
            self._validate(res, obj, None)
            warnings = warnings + validation.warnings_on_create(res.kind, obj)
            if res.namespaced:
                ns_obj = self.store.peek("/namespaces", "", namespace)
                if ns_obj is None:
                    raise status.not_found("namespaces", "", namespace)
                if ns_obj.get("metadata", {}).get("deletionTimestamp"):
                    raise self._namespace_terminating(res, namespace, meta.get("name", ""))
            if self.store.peek(res.key, meta.get("namespace", ""), meta["name"]) is not None:
                raise status.already_exists(res.plural, res.group, meta["name"])
            self._allocate(res, obj, None, opts.dry_run)
            meta["uid"] = meta.get("uid") or self.new_uid()  # a Job has its uid already (_prepare_create)
            meta["creationTimestamp"] = self.timestamp()
            if res.generation != "none":
                meta["generation"] = 1
            if not opts.dry_run:
                meta["resourceVersion"] = ""  # keeps the wire order; the store fills the value
            obj = self._ordered_meta(obj)
            if opts.dry_run:
                return WriteResult(self._served(res, obj), 201, warnings)
            stored = self.store.put(res.key, obj)
            self.ownership.record_update(
                meta["uid"], self._manager(res, opts.manager, ""), {}, self._owner_leaves(res, stored, "")
            )
            return WriteResult(self._served(res, stored), 201, warnings)

    def _namespace_terminating(self, res: ResourceType, namespace: str, name: str) -> status.ApiError:
        msg = f"unable to create new content in namespace {namespace} because it is being terminated"
        details: JsonObj = {"name": name} if name else {}
        if res.group:
            details["group"] = res.group
        details["kind"] = res.plural
        details["causes"] = [{"reason": "NamespaceTerminating", "message": msg, "field": "metadata.namespace"}]
        return status.ApiError(403, status.failure(403, "Forbidden", msg, details))

    def _prepare_create(self, res: ResourceType, obj: JsonObj) -> JsonObj:
        meta = obj["metadata"]
        for key in (
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
            "managedFields",
            "selfLink",
        ):
            meta.pop(key, None)
        if res.custom:
            obj.pop("status", None)  # apiextensions customResourceStrategy.PrepareForCreate (status subresource)
        elif res.has_status:
            obj["status"] = {}
        defaults.apply_defaults(res.kind, obj)
        if res.kind == "Job":
            # The create handler fills the uid before the strategy's PrepareForCreate generates the selector.
            meta["uid"] = self.new_uid()
            defaults.generate_job_selector(obj)
        if res.kind == "Pod":
            defaults.admit_pod(obj, self.random_suffix())
        if res.kind == "Namespace":
            defaults.create_namespace(obj)
        return obj

    @staticmethod
    def _ordered_meta(obj: JsonObj) -> JsonObj:
        order = (
            "name",
            "generateName",
            "namespace",
            "uid",
            "resourceVersion",
            "generation",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "labels",
            "annotations",
            "ownerReferences",
            "finalizers",
        )
        meta = obj.get("metadata", {})
        ordered = {k: meta[k] for k in order if k in meta}
        ordered.update({k: v for k, v in meta.items() if k not in ordered})
        if ordered.get("creationTimestamp", "") is None:
            ordered.pop("creationTimestamp")
        obj["metadata"] = ordered
        return obj

    # ---------------------------------------------------------------------------------------------------
    # allocation (Service cluster IPs and node ports)
    # ---------------------------------------------------------------------------------------------------

    def _allocate(self, res: ResourceType, obj: JsonObj, old: JsonObj | None, dry_run: bool) -> None:
        if res.kind != "Service":
            return
        spec = obj.setdefault("spec", {})
        old_spec = (old or {}).get("spec") or {}
        if spec.get("type") == "ExternalName":
            return
        if old is not None and not spec.get("clusterIP"):
            # ``patchAllocatedValues``: an update without clusterIP keeps the allocated one.
            for key in ("clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"):
                if key in old_spec:
                    spec[key] = jcopy(old_spec[key])
        if spec.get("clusterIP") == "None":
            spec["clusterIPs"] = ["None"]
        elif not spec.get("clusterIP"):
            spec["clusterIP"] = self._allocate_ip(dry_run)
            spec["clusterIPs"] = [spec["clusterIP"]]
        elif old is None:
            ip = spec["clusterIP"]
            try:
                in_range = ipaddress.ip_address(ip) in ipaddress.ip_network("10.0.0.0/24")
            except ValueError:
                in_range = False
            if not in_range or ip in self._service_ips:
                reason = "provided IP is already allocated" if in_range else "the provided IP is not in the valid range"
                cause = validation.invalid(
                    "spec.clusterIPs", f'[]string{{"{ip}"}}', f"failed to allocate IP {ip}: {reason}"
                )
                raise status.invalid("Service", "", obj["metadata"].get("name", ""), [cause])
            if not dry_run:
                self._service_ips.add(ip)
            spec["clusterIPs"] = [ip]
        spec.setdefault("ipFamilies", ["IPv4"])
        spec.setdefault("ipFamilyPolicy", "SingleStack")
        if spec.get("type") in ("NodePort", "LoadBalancer"):
            old_ports = {(p.get("port"), p.get("protocol")): p.get("nodePort") for p in old_spec.get("ports") or []}
            for port in spec.get("ports") or []:
                if not port.get("nodePort"):
                    kept = old_ports.get((port.get("port"), port.get("protocol")))
                    port["nodePort"] = kept or self._allocate_node_port(dry_run)
        # Keep the wire order of the recorded server: allocated fields follow selector.
        order = (
            "ports",
            "selector",
            "clusterIP",
            "clusterIPs",
            "type",
            "sessionAffinity",
            "ipFamilies",
            "ipFamilyPolicy",
            "internalTrafficPolicy",
        )
        obj["spec"] = {
            **{k: spec[k] for k in order if k in spec},
            **{k: v for k, v in spec.items() if k not in order},
        }

    def _allocate_ip(self, dry_run: bool) -> str:
        free = [f"10.0.0.{i}" for i in range(2, 255) if f"10.0.0.{i}" not in self._service_ips]
        if not free:
            raise status.internal_error("failed to allocate a serviceIP: range is full")
        ip = self.rng.choice(free)
        if not dry_run:
            self._service_ips.add(ip)
        return ip

    def _allocate_node_port(self, dry_run: bool) -> int:
        while True:
            port = self.rng.randint(30000, 32767)
            if port not in self._node_ports:
                if not dry_run:
                    self._node_ports.add(port)
                return port

    def _release(self, res: ResourceType, obj: JsonObj) -> None:
        if res.kind == "Service":
            spec = obj.get("spec") or {}
            self._service_ips.discard(spec.get("clusterIP", ""))
            for port in spec.get("ports") or []:
                self._node_ports.discard(port.get("nodePort", 0))

    # ---------------------------------------------------------------------------------------------------
    # update (PUT) and the shared commit path
    # ---------------------------------------------------------------------------------------------------

    def update(
        self,
        res: ResourceType,
        namespace: str,
        name: str,
        body: Any,
        opts: WriteOptions,
        *,
        subresource: str = "",
    ) -> WriteResult:
        obj, warnings = self._decode(res, body, opts)
        with self.store.lock:
            meta = obj.setdefault("metadata", {})
            if meta.get("name") and meta["name"] != name:
                raise status.bad_request(
                    f"the name of the object ({meta['name']}) does not match the name on the URL ({name})"
                )
            meta["name"] = name
            if res.namespaced:
                if meta.get("namespace") and meta["namespace"] != namespace:
                    raise status.bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request"
                    )
                meta["namespace"] = namespace
            current = self.store.get(res.key, namespace if res.namespaced else "", name)
            if current is None:
                if res.allow_create_on_update and not subresource:
                    meta.pop("resourceVersion", None)
                    return self.create(res, namespace, self._served(res, obj), opts)
                raise status.not_found(res.plural, res.group, name)
            wanted_rv = meta.get("resourceVersion")
            if wanted_rv and wanted_rv != current["metadata"]["resourceVersion"]:
                raise status.conflict(res.plural, res.group, name)
            result = self.commit_update(res, current, obj, opts, subresource=subresource)
            result.warnings = warnings + result.warnings
            return result

    def commit_update(
        self,
        res: ResourceType,
        current: JsonObj,
        new: JsonObj,
        opts: WriteOptions,
        *,
        subresource: str = "",
        operation: str = "Update",
    ) -> WriteResult:
        """Apply strategy, defaults and validation to ``new`` (based on ``current``) and store it."""
        with self.store.lock:
            new = jcopy(new)
            new.pop("kind", None)
            new.pop("apiVersion", None)
            old_meta = current["metadata"]
            meta = new.setdefault("metadata", {})
            if subresource == "status":
                kept = jcopy(current)
                kept["status"] = new.get("status", {})
                if res.custom and "status" not in new:
                    kept.pop("status")  # apiextensions statusStrategy: a status-less update removes it
                if res.kind == "Deployment":
                    # deploymentStatusStrategy resets spec and labels only: annotations written through
                    # /status stick (that is how the controller stores the revision annotation).
                    if "annotations" in meta:
                        kept["metadata"]["annotations"] = meta["annotations"]
                    else:
                        kept["metadata"].pop("annotations", None)
                new = kept
                meta = new["metadata"]
            elif res.custom:
                new.pop("status", None)
                if "status" in current:
                    new["status"] = jcopy(current["status"])
            elif res.has_status:
                new["status"] = jcopy(current.get("status", {}))
            for key in (
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
                "namespace",
                "name",
            ):
                if key in old_meta:
                    meta[key] = old_meta[key]
                else:
                    meta.pop(key, None)
            meta.pop("managedFields", None)
            meta.pop("selfLink", None)
            meta["resourceVersion"] = old_meta["resourceVersion"]
            if res.kind == "Pod":
                defaults.default_pod_spec(new.setdefault("spec", {}))
            else:
                defaults.apply_defaults(res.kind, new)
            if res.kind == "Namespace" and subresource != "finalize":
                new["spec"] = jcopy(current.get("spec", {}))
            self._allocate(res, new, current, opts.dry_run)
            self._validate(res, new, current)
            if res.generation != "none":
                gen = int(old_meta.get("generation", 1))
                if subresource != "status" and self._generation_changed(res, current, new):
                    gen += 1
                meta["generation"] = gen
            new = self._ordered_meta(new)
            uid = old_meta["uid"]
            manager = self._manager(res, opts.manager, subresource, operation)
            old_leaves = self._owner_leaves(res, current, subresource)
            new_leaves = self._owner_leaves(res, new, subresource)
            before = self.ownership.snapshot(uid)
            if opts.dry_run:
                return WriteResult(self._served(res, new), 200)
            if operation == "Update":
                self.ownership.record_update(uid, manager, old_leaves, new_leaves)
            ownership_moved = self.ownership.snapshot(uid) != before
            if new == current and not ownership_moved:
                return WriteResult(self._served(res, current), 200)
            if meta.get("deletionTimestamp") and not self._deletion_blocked(res, new):
                final = self.store.remove(res.key, meta.get("namespace", ""), meta["name"])
                self._forget(res, final or new)
                return WriteResult(self._served(res, new), 200)
            stored = self.store.put(res.key, new)
            return WriteResult(self._served(res, stored), 200)

    @staticmethod
    def _deletion_blocked(res: ResourceType, obj: JsonObj) -> bool:
        """Whether an object being deleted must stay: finalizers left, or a pod awaiting its kubelet."""
        if obj["metadata"].get("finalizers"):
            return True
        if res.kind == "Namespace" and (obj.get("spec") or {}).get("finalizers"):
            return True
        return res.kind == "Pod" and int(obj["metadata"].get("deletionGracePeriodSeconds", 0) or 0) > 0

    @staticmethod
    def _generation_changed(res: ResourceType, old: JsonObj, new: JsonObj) -> bool:
        if res.generation == "spec+annotations":
            return old.get("spec") != new.get("spec") or old["metadata"].get("annotations") != new["metadata"].get(
                "annotations"
            )
        if res.generation == "spec":
            return old.get("spec") != new.get("spec")
        if res.generation == "always":
            strip = lambda o: {k: v for k, v in o.items() if k != "metadata"}  # noqa: E731
            return strip(old) != strip(new) or old["metadata"].get("labels") != new["metadata"].get("labels")
        return False

    def _forget(self, res: ResourceType, obj: JsonObj) -> None:
        self.ownership.forget(obj["metadata"].get("uid", ""))
        self._release(res, obj)

    # ---------------------------------------------------------------------------------------------------
    # patch
    # ---------------------------------------------------------------------------------------------------

    @staticmethod
    def decode_patch(patch_type: str, raw: bytes) -> Any:
        """Parse a patch body, with the apiserver's 400 messages for the wrong shape."""
        if patch_type == "apply":
            try:
                return yaml.safe_load(raw.decode("utf-8") or "{}")
            except yaml.YAMLError as err:
                raise status.bad_request(f"error decoding YAML: {err}") from None
        try:
            doc = json.loads(raw.decode("utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            message = go_json_error(raw, err)
            prefix = "" if patch_type == "strategic" else "error decoding patch: "
            raise status.bad_request(prefix + message) from None
        if patch_type == "json":
            if not isinstance(doc, list):
                raise status.bad_request(
                    f"error decoding patch: json: cannot unmarshal {_json_kind(doc)} into Go value of type "
                    "[]handlers.jsonPatchOp"
                )
        elif not isinstance(doc, dict):
            message = f"json: cannot unmarshal {_json_kind(doc)} into Go value of type map[string]interface {{}}"
            prefix = "" if patch_type == "strategic" else "error decoding patch: "
            raise status.bad_request(prefix + message)
        return doc

    def apply_patch(self, res: ResourceType, patch_type: str, current: JsonObj, doc: Any) -> JsonObj:
        try:
            if patch_type == "json":
                merged = patch.json_patch(current, doc)
            elif patch_type == "merge":
                merged = patch.merge_patch(current, doc)
            else:
                merged = patch.strategic_merge(current, doc, schema.root_type(res.schema_key))
        except patch.PatchError:
            raise status.generic_invalid() from None
        if not isinstance(merged, dict):
            raise status.generic_invalid()
        return merged

    def patch(
        self,
        res: ResourceType,
        namespace: str,
        name: str,
        patch_type: str,
        doc: Any,
        opts: WriteOptions,
        *,
        subresource: str = "",
    ) -> WriteResult:
        with self.store.lock:
            current = self.store.get(res.key, namespace if res.namespaced else "", name)
            if patch_type == "apply":
                return self._apply(res, namespace, name, current, doc, opts, subresource)
            if current is None:
                raise status.not_found(res.plural, res.group, name)
            served = self._served(res, current)
            merged = self.apply_patch(res, patch_type, served, doc)
            obj, warnings = self._decode(res, merged, opts)
            wanted_rv = obj.get("metadata", {}).get("resourceVersion")
            if wanted_rv and wanted_rv != current["metadata"]["resourceVersion"]:
                raise status.conflict(res.plural, res.group, name)
            if obj.get("metadata", {}).get("name", name) != name:
                raise status.bad_request(
                    f"the name of the object ({obj['metadata']['name']}) does not match the name on the URL ({name})"
                )
            result = self.commit_update(res, current, obj, opts, subresource=subresource)
            result.warnings = warnings + result.warnings
            return result

    def _apply(
        self,
        res: ResourceType,
        namespace: str,
        name: str,
        current: JsonObj | None,
        doc: Any,
        opts: WriteOptions,
        subresource: str,
    ) -> WriteResult:
        if not isinstance(doc, dict):
            raise status.bad_request("error decoding YAML: the applied configuration must be an object")
        config, warnings = self._decode(res, doc, opts)
        config_meta = config.get("metadata") or {}
        if config_meta.get("name") and config_meta["name"] != name:
            raise status.bad_request(
                f"the name of the object ({config_meta['name']}) does not match the name on the URL ({name})"
            )
        manager = self._manager(res, opts.manager, subresource, "Apply")
        root = schema.root_type(res.schema_key)
        # Fields the configuration sets: strip the zero-fill the decoder added for Go structs.
        raw_config = {k: v for k, v in doc.items() if k not in ("apiVersion", "kind")}
        applied = leaves(raw_config, root, include_status=subresource == "status")
        if current is None:
            body = {**raw_config, "metadata": {**(raw_config.get("metadata") or {}), "name": name}}
            result = self.create(res, namespace, self._served(res, body), opts)
            uid = result.obj["metadata"].get("uid", "")
            if uid and not opts.dry_run:
                self.ownership.record_apply(uid, manager, set(applied), force=True)
            return result
        uid = current["metadata"]["uid"]
        current_leaves = leaves(current, root, include_status=subresource == "status")
        conflicts = self.ownership.conflicts(uid, manager, current_leaves, applied)
        if conflicts and not opts.force:
            causes = [
                {
                    "reason": "FieldManagerConflict",
                    "message": f"conflict with {m.describe()}",
                    "field": "".join(s if s.startswith("[") else f".{s}" for s in p),
                }
                for m, p in conflicts
            ]
            raise status.ApiError(409, status.failure(409, "Conflict", conflict_message(conflicts), {"causes": causes}))
        merged = patch.strategic_merge(jcopy(current), raw_config, root)
        stale = (
            self.ownership.previously_applied(uid, manager)
            - set(applied)
            - self.ownership.owned_by_others(uid, manager)
        )
        for path in stale:
            delete_path(merged, path)
        before = self.ownership.snapshot(uid)
        obj, _ = self._decode(res, self._served(res, merged), opts)
        if opts.dry_run:
            return self.commit_update(res, current, obj, opts, subresource=subresource, operation="Apply")
        self.ownership.record_apply(uid, manager, set(applied), force=opts.force)
        moved = self.ownership.snapshot(uid) != before
        result = self.commit_update(res, current, obj, opts, subresource=subresource, operation="Apply")
        if moved and result.obj["metadata"].get("resourceVersion") == current["metadata"]["resourceVersion"]:
            # Only managedFields changed: the real server still writes (new resourceVersion, MODIFIED event).
            stored = self.store.put(res.key, jcopy(current))
            result = WriteResult(self._served(res, stored), 200)
        result.warnings = warnings + result.warnings
        return result

    # ---------------------------------------------------------------------------------------------------
    # scale subresource (autoscaling/v1 Scale over Deployments and ReplicaSets)
    # ---------------------------------------------------------------------------------------------------

    @staticmethod
    def scale_of(obj: JsonObj) -> JsonObj:
        meta = obj["metadata"]
        spec: JsonObj = {}
        replicas = int((obj.get("spec") or {}).get("replicas", 0) or 0)
        if replicas:
            spec["replicas"] = replicas
        return {
            "kind": "Scale",
            "apiVersion": "autoscaling/v1",
            "metadata": {
                "name": meta["name"],
                "namespace": meta.get("namespace", ""),
                "uid": meta["uid"],
                "resourceVersion": meta["resourceVersion"],
                "creationTimestamp": meta["creationTimestamp"],
            },
            "spec": spec,
            "status": {
                "replicas": int((obj.get("status") or {}).get("replicas", 0) or 0),
                "selector": selector_string((obj.get("spec") or {}).get("selector")),
            },
        }

    def get_scale(self, res: ResourceType, namespace: str, name: str) -> JsonObj:
        return self.scale_of(self.get(res, namespace, name))

    def update_scale(self, res: ResourceType, namespace: str, name: str, body: Any, opts: WriteOptions) -> WriteResult:
        scale_res = ResourceType("autoscaling", "v1", "scale", "Scale", schema_key="Scale")
        scale, warnings = self._decode(scale_res, body, opts)
        with self.store.lock:
            current = self.store.get(res.key, namespace, name)
            if current is None:
                raise status.not_found(res.plural, res.group, name)
            meta = scale.get("metadata") or {}
            if meta.get("name") and meta["name"] != name:
                raise status.bad_request(
                    f"the name of the object ({meta['name']}) does not match the name on the URL ({name})"
                )
            if meta.get("resourceVersion") and meta["resourceVersion"] != current["metadata"]["resourceVersion"]:
                raise status.conflict(res.plural, res.group, name)
            replicas = int((scale.get("spec") or {}).get("replicas", 0) or 0)
            if replicas < 0:
                cause = validation.invalid("spec.replicas", str(replicas), "must be greater than or equal to 0")
                raise status.invalid("Scale", "autoscaling", name, [cause])
            new = jcopy(current)
            new["spec"]["replicas"] = replicas
            result = self.commit_update(res, current, new, opts)
            return WriteResult(self.scale_of(result.obj), 200, warnings)

    def patch_scale(
        self, res: ResourceType, namespace: str, name: str, patch_type: str, doc: Any, opts: WriteOptions
    ) -> WriteResult:
        with self.store.lock:
            current_scale = self.get_scale(res, namespace, name)
            if patch_type in ("apply", "strategic"):
                merged = patch.strategic_merge(current_scale, doc, "V1Scale")
            else:
                merged = self.apply_patch(res, patch_type, current_scale, doc)
            return self.update_scale(res, namespace, name, merged, opts)

    # ---------------------------------------------------------------------------------------------------
    # delete
    # ---------------------------------------------------------------------------------------------------

    def delete(
        self, res: ResourceType, namespace: str, name: str, options: JsonObj, dry_run: bool = False
    ) -> WriteResult:
        with self.store.lock:
            ns = namespace if res.namespaced else ""
            current = self.store.get(res.key, ns, name)
            if current is None:
                raise status.not_found(res.plural, res.group, name)
            meta = current["metadata"]
            pre = options.get("preconditions") or {}
            if pre.get("uid") and pre["uid"] != meta["uid"]:
                raise status.precondition_uid_conflict(res.kind, res.group, name, pre["uid"], meta["uid"])
            if pre.get("resourceVersion") and pre["resourceVersion"] != meta["resourceVersion"]:
                raise status.precondition_rv_conflict(
                    res.kind, res.group, name, pre["resourceVersion"], meta["resourceVersion"]
                )
            policy = options.get("propagationPolicy")
            if policy is None and options.get("orphanDependents") is not None:
                policy = "Orphan" if options["orphanDependents"] else "Background"
            if policy is None and res.kind == "Job":
                policy = "Orphan"  # the Job strategy's DefaultGarbageCollectionPolicy for batch/v1
            if policy not in (None, "Foreground", "Background", "Orphan"):
                cause = validation.unsupported(
                    "propagationPolicy", str(policy), ["Foreground", "Background", "Orphan", "nil"]
                )
                raise status.invalid("DeleteOptions", "meta.k8s.io", "", [cause])
            finalizers = list(meta.get("finalizers") or [])
            finalizers_pending = res.kind == "Namespace"
            if policy == "Foreground" and "foregroundDeletion" not in finalizers:
                finalizers.append("foregroundDeletion")
            if policy == "Orphan" and "orphan" not in finalizers:
                finalizers.append("orphan")
            grace = 0
            if res.kind == "Pod":
                default_grace = int((current.get("spec") or {}).get("terminationGracePeriodSeconds", 30))
                grace = int(options.get("gracePeriodSeconds", default_grace))
                if not (current.get("spec") or {}).get("nodeName"):
                    grace = 0
            if meta.get("deletionTimestamp"):
                # Already being deleted: a second DELETE may only add finalizers or shorten the grace period.
                if finalizers != list(meta.get("finalizers") or []) or (res.kind == "Pod" and grace == 0):
                    new = jcopy(current)
                    new["metadata"]["finalizers"] = finalizers
                    if res.kind == "Pod" and grace == 0:
                        new["metadata"]["deletionGracePeriodSeconds"] = 0
                    if not dry_run:
                        if res.kind == "Pod" and grace == 0 and not finalizers:
                            self.store.remove(res.key, ns, name)
                            self._forget(res, current)
                        else:
                            current = self.store.put(res.key, new)
                return WriteResult(self._served(res, current), 200)
            if finalizers or grace > 0 or finalizers_pending:
                new = jcopy(current)
                nmeta = new["metadata"]
                when = self.now() + timedelta(seconds=grace)
                nmeta["deletionTimestamp"] = format_time(when)
                nmeta["deletionGracePeriodSeconds"] = grace
                if finalizers:
                    nmeta["finalizers"] = finalizers
                if "generation" in nmeta:
                    nmeta["generation"] = int(nmeta["generation"]) + 1
                if res.kind == "Namespace":
                    new["status"]["phase"] = "Terminating"
                new = self._ordered_meta(new)
                if dry_run:
                    return WriteResult(self._served(res, new), 200)
                stored = self.store.put(res.key, new)
                return WriteResult(self._served(res, stored), 200)
            if dry_run:
                body = (
                    self._served(res, current)
                    if res.return_deleted_object
                    else status.success(name, res.group, res.plural, meta["uid"])
                )
                return WriteResult(body, 200)
            self.store.remove(res.key, ns, name)
            self._forget(res, current)
            if res.return_deleted_object:
                return WriteResult(self._served(res, current), 200)
            return WriteResult(status.success(name, res.group, res.plural, meta["uid"]), 200)

    def finalize_delete(self, res: ResourceType, obj: JsonObj) -> None:
        """Remove an object whose deletion is complete (kubelet confirmed, finalizers done)."""
        meta = obj["metadata"]
        removed = self.store.remove(res.key, meta.get("namespace", "") if res.namespaced else "", meta["name"])
        if removed is not None:
            self._forget(res, obj)

    # ---------------------------------------------------------------------------------------------------
    # direct helpers for controllers
    # ---------------------------------------------------------------------------------------------------

    def controller_create(self, kind: str, namespace: str, obj: JsonObj, manager: str) -> JsonObj:
        res = BY_KIND[kind]
        return self.create(res, namespace, obj, WriteOptions(manager=manager, field_validation="Ignore")).obj

    def controller_update(
        self, kind: str, current: JsonObj, new: JsonObj, manager: str, *, subresource: str = ""
    ) -> JsonObj:
        res = BY_KIND[kind]
        with self.store.lock:
            meta = current["metadata"]
            live = self.store.get(res.key, meta.get("namespace", "") if res.namespaced else "", meta["name"])
            if live is None or live["metadata"]["resourceVersion"] != meta["resourceVersion"]:
                raise status.conflict(res.plural, res.group, meta["name"])
            return self.commit_update(res, live, new, WriteOptions(manager=manager), subresource=subresource).obj

    def controller_replace(self, kind: str, current: JsonObj, new: JsonObj, manager: str) -> JsonObj:
        """Store ``new`` as one write without the update strategy (the scheduler's pods/binding)."""
        res = BY_KIND[kind]
        with self.store.lock:
            meta = current["metadata"]
            ns = meta.get("namespace", "") if res.namespaced else ""
            live = self.store.get(res.key, ns, meta["name"])
            if live is None or live["metadata"]["resourceVersion"] != meta["resourceVersion"]:
                raise status.conflict(res.plural, res.group, meta["name"])
            body = jcopy(new)
            body.pop("kind", None)
            body.pop("apiVersion", None)
            if body == live:
                return self._served(res, live)
            old_leaves = self._owner_leaves(res, live, "status")
            stored = self.store.put(res.key, body)
            self.ownership.record_update(
                meta["uid"],
                Manager(manager, "Update", res.group_version),
                old_leaves,
                self._owner_leaves(res, stored, "status"),
            )
            return self._served(res, stored)


def _json_kind(value: Any) -> str:
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "bool"
    if value is None:
        return "null"
    return "number"


def go_json_error(raw: bytes, err: Exception) -> str:
    """Go's encoding/json error for a syntactically broken body."""
    text = raw.decode("utf-8", errors="replace")
    if isinstance(err, json.JSONDecodeError):
        if err.pos >= len(text.rstrip()):
            return "unexpected end of JSON input"
        ch = text[err.pos]
        if "Expecting ',' delimiter" in err.msg:
            return f"invalid character '{ch}' after object key:value pair"
        if "Expecting ':' delimiter" in err.msg:
            return f"invalid character '{ch}' after object key"
        if "Expecting property name" in err.msg:
            return f"invalid character '{ch}' looking for beginning of object key string"
        return f"invalid character '{ch}' looking for beginning of value"
    return str(err)
