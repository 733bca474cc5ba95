"""HTTP/1.1 plumbing: keep-alive connections, chunked watch streams, auth, faults and the request log."""

from __future__ import annotations

import base64
import contextlib
import json
import select
import socket
import sys
import threading
import time
import traceback
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from . import routing, schema, status
from .auth import Authorizer
from .faults import FaultInjector, FaultRule, Headers, RecordedRequest, RequestLog
from .handlers import ApiRequest, Handlers, Response, WatchRequest
from .registry import Registry
from .resources import ResourceType
from .selectors import FieldRequirement, FieldSelector, parse_field_selector, parse_label_selector
from .store import StoreEvent

JsonObj = dict[str, Any]

FLOWSCHEMA_UID = "7153b9dd-d4f7-46a9-b902-bf7ac6cac054"
PRIORITY_LEVEL_UID = "4591ee55-e3b7-450d-8dac-9fab2ae2ecbb"
DEFAULT_WATCH_TIMEOUT_S = 1800
BOOKMARK_INTERVAL_S = 60.0


class _Streamed(Response):
    """Marker: the handler already wrote the whole response (a watch)."""


def _compact(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def warning_header(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return f'299 - "{escaped}"'


class ApiServer:
    def __init__(
        self,
        registry: Registry,
        authorizer: Authorizer,
        faults: FaultInjector,
        log: RequestLog,
        stopping: threading.Event,
    ) -> None:
        self.registry = registry
        self.authorizer = authorizer
        self.faults = faults
        self.log = log
        self.stopping = stopping
        self.errors: list[str] = []
        self.server_address = "127.0.0.1:0"

    # -- entry ---------------------------------------------------------------------------------------------

    def handle(self, h: _Handler) -> None:
        method = h.command
        raw_path = h.path
        path, _, query = raw_path.partition("?")
        body = h.read_body()
        headers = Headers(h.headers.items())
        info = routing.parse(method, path, query)
        record = RecordedRequest(method, raw_path, headers, body, watch=info.verb == "watch")
        self.log.add(record)
        pf_headers = True
        try:
            rule = self.faults.take(method, raw_path)
            if rule is not None:
                if rule.latency_s:
                    time.sleep(rule.latency_s)
                if rule.status:
                    record.fault = True
                    raise self._fault_error(rule, info)
            user = self.authorizer.authenticate(h.headers.get("Authorization"))
            if user is None:
                pf_headers = False
                raise status.unauthorized()
            record.user = user.name
            if info.is_resource:
                if not self.authorizer.allowed(
                    user, info.verb, info.group, info.resource, info.subresource, info.namespace, info.name
                ):
                    raise status.forbidden(
                        user=user.name,
                        verb=info.verb,
                        resource=info.resource,
                        subresource=info.subresource,
                        group=info.group,
                        namespace=info.namespace,
                        name=info.name,
                    )
            elif not self.authorizer.allowed_path(user, path):
                raise status.forbidden_path(user.name, method.lower(), path)
            req = ApiRequest(method, info, query, headers, body, self.server_address)
            handlers = Handlers(self.registry, lambda w: self._watch(h, record, w))
            if info.is_resource:
                response = handlers.resource(req)
            else:
                found = handlers.discovery(req)
                if found is None:
                    raise status.page_not_found()
                response = found
        except status.ApiError as err:
            response = Response(err.code, err.body, err.content_type, headers=dict(err.headers))
        except Exception:
            self.errors.append(traceback.format_exc())
            bug = status.internal_error("fake API server bug (see FakeKube.errors)")
            response = Response(bug.code, bug.body)
        if isinstance(response, _Streamed):
            return
        record.status = response.code
        h.send_api_response(response, pf_headers=pf_headers)

    def _fault_error(self, rule: FaultRule, info: routing.RequestInfo) -> status.ApiError:
        code = int(rule.status or 500)
        if code == 429:
            err = status.too_many_requests(rule.retry_after or 1)
        elif code == 503:
            err = status.service_unavailable()
        elif code == 504:
            err = status.gateway_timeout()
        elif code == 409 and info.is_resource:
            err = status.conflict(info.resource, info.group, info.name or info.resource)
        elif code == 500:
            err = status.internal_error(rule.message)
        else:
            err = status.ApiError(code, status.failure(code, "InternalError", rule.message, {}))
        if rule.retry_after is not None:
            err.headers["Retry-After"] = str(rule.retry_after)
        return err

    # -- watch ----------------------------------------------------------------------------------------------

    def _watch(self, h: _Handler, record: RecordedRequest, w: WatchRequest) -> Response:
        res = w.res
        params = w.params

        def param(key: str) -> str | None:
            values = params.get(key)
            return values[-1] if values else None

        labels = parse_label_selector(param("labelSelector"))
        fields = parse_field_selector(param("fieldSelector"), res.supports_field)
        if w.name:
            fields = FieldSelector((*fields.requirements, FieldRequirement("metadata.name", "=", w.name)))
        timeout_text = param("timeoutSeconds")
        timeout = int(timeout_text) if timeout_text and timeout_text.isdigit() else DEFAULT_WATCH_TIMEOUT_S
        bookmarks = routing.truthy(params, "allowWatchBookmarks")
        send_initial = param("sendInitialEvents")
        rv_text = param("resourceVersion")
        if send_initial is not None:
            causes = []
            if param("resourceVersionMatch") != "NotOlderThan":
                causes.append(
                    {
                        "reason": "FieldValueForbidden",
                        "field": "sendInitialEvents",
                        "message": "Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
                    }
                )
            if not bookmarks:
                causes.append(
                    {
                        "reason": "FieldValueForbidden",
                        "field": "allowWatchBookmarks",
                        "message": "Forbidden: allowWatchBookmarks required when sendInitialEvents is true",
                    }
                )
            if causes:
                raise status.invalid("ListOptions", "meta.k8s.io", "", causes)
        if rv_text not in (None, "", "0") and not str(rv_text).isdigit():
            raise status.bad_request(f'resourceVersion: Invalid value: "{rv_text}": must be a number')

        def visible(obj: JsonObj | None) -> bool:
            if obj is None:
                return False
            meta = obj.get("metadata") or {}
            if w.namespace and meta.get("namespace", "") != w.namespace:
                return False
            return labels.matches(meta.get("labels")) and fields.matches(res.fields(obj))

        store = self.registry.store
        expired_msg = ""
        initial: list[JsonObj] = []
        with store.lock:
            current = store.resource_version
            if send_initial == "true" or (send_initial is None and rv_text in (None, "", "0")):
                initial = [o for o in store.list(res.key, w.namespace or None) if visible(o)]
                cursor = current
            elif rv_text in (None, "", "0"):
                cursor = current
            else:
                cursor = int(str(rv_text))
                if cursor < store.oldest_resource_version:
                    expired_msg = f"too old resource version: {cursor} ({store.oldest_resource_version})"
        record.status = 200
        if not h.start_stream():
            return _Streamed(200, "")
        try:
            if expired_msg:
                h.write_chunk(_compact({"type": "ERROR", "object": status.expired_status(expired_msg)}) + b"\n")
                h.end_stream()
                return _Streamed(200, "")
            for obj in initial:
                h.write_chunk(_compact({"type": "ADDED", "object": self.registry._served(res, obj)}) + b"\n")
            if send_initial == "true" and bookmarks:
                blueprint = (
                    _compact(
                        {
                            "kind": res.list_kind,
                            "apiVersion": res.group_version,
                            "metadata": {},
                            "items": None,
                        }
                    )
                    + b"\n"
                )
                annotations = {
                    "k8s.io/initial-events-end": "true",
                    "kubernetes.io/initial-events-list-blueprint": base64.b64encode(blueprint).decode(),
                }
                h.write_chunk(
                    _compact({"type": "BOOKMARK", "object": bookmark_object(res, cursor, annotations)}) + b"\n"
                )
            started = time.monotonic()
            deadline = started + timeout
            next_bookmark = started + min(BOOKMARK_INTERVAL_S, timeout - 2) if bookmarks and timeout > 2 else None
            writes = store.writes
            while not self.stopping.is_set() and not h.client_gone():
                now = time.monotonic()
                if now >= deadline:
                    break
                with store.lock:
                    events = store.events_after(cursor, res.key)
                    latest = store.resource_version
                    writes = store.writes
                for event in events:
                    cursor = event.rv
                    line = self._translate(res, event, visible)
                    if line is not None:
                        h.write_chunk(line)
                if next_bookmark is not None and time.monotonic() >= next_bookmark:
                    cursor = max(cursor, latest)
                    h.write_chunk(_compact({"type": "BOOKMARK", "object": bookmark_object(res, cursor)}) + b"\n")
                    next_bookmark = time.monotonic() + BOOKMARK_INTERVAL_S
                wait = min(0.2, max(deadline - time.monotonic(), 0))
                if next_bookmark is not None:
                    wait = min(wait, max(next_bookmark - time.monotonic(), 0))
                store.wait_for_change(writes, wait)
            h.end_stream()
        except (BrokenPipeError, ConnectionResetError, OSError):
            h.close_connection = True
        return _Streamed(200, "")

    def _translate(self, res: ResourceType, event: StoreEvent, visible: Any) -> bytes | None:
        new_ok = visible(event.obj)
        old_ok = visible(event.old)
        if event.type == "ADDED":
            kind = "ADDED" if new_ok else None
        elif event.type == "DELETED":
            kind = "DELETED" if old_ok else None
        elif new_ok and old_ok:
            kind = "MODIFIED"
        elif new_ok:
            kind = "ADDED"
        elif old_ok:
            kind = "DELETED"
        else:
            kind = None
        if kind is None:
            return None
        return _compact({"type": kind, "object": self.registry._served(res, event.obj)}) + b"\n"


def bookmark_object(res: ResourceType, rv: int, annotations: dict[str, str] | None = None) -> JsonObj:
    """An empty object of the watched kind with Go zero values; only the resourceVersion matters."""
    obj = schema.zero_object(res.schema_key)
    meta: JsonObj = {"resourceVersion": str(rv), "creationTimestamp": None}
    if annotations:
        meta["annotations"] = annotations
    body: JsonObj = {"kind": res.kind, "apiVersion": res.group_version, "metadata": meta}
    for key, value in obj.items():
        if key != "metadata":
            body[key] = value
    if res.kind in ("Deployment", "ReplicaSet"):
        body["spec"] = {"replicas": 0, **body["spec"]}
    return body


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes; without TCP_NODELAY, Nagle + delayed ACK add ~40 ms.
    disable_nagle_algorithm = True
    server: FakeKubeHTTPServer

    def do_GET(self) -> None:
        self.server.app.handle(self)

    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = do_GET

    def log_message(self, format: str, *args: Any) -> None:
        return

    def read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _common_headers(self, content_type: str, pf_headers: bool) -> None:
        self.send_header("Audit-Id", str(uuid.uuid4()))
        self.send_header("Cache-Control", "no-cache, private")
        self.send_header("Content-Type", content_type)
        if pf_headers:
            self.send_header("X-Kubernetes-Pf-Flowschema-Uid", FLOWSCHEMA_UID)
            self.send_header("X-Kubernetes-Pf-Prioritylevel-Uid", PRIORITY_LEVEL_UID)
        self.send_header("Date", self.date_time_string())

    def send_api_response(self, response: Response, *, pf_headers: bool = True) -> None:
        payload = response.body.encode() if isinstance(response.body, str) else _compact(response.body)
        try:
            self.send_response_only(response.code)
            self._common_headers(response.content_type, pf_headers)
            for key, value in response.headers.items():
                self.send_header(key, value)
            for warning in response.warnings:
                self.send_header("Warning", warning_header(warning))
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, OSError):
            self.close_connection = True

    def start_stream(self) -> bool:
        try:
            self.send_response_only(200)
            self._common_headers("application/json", True)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.flush()
            return True
        except (BrokenPipeError, ConnectionResetError, OSError):
            self.close_connection = True
            return False

    def write_chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def end_stream(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def client_gone(self) -> bool:
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            if readable:
                return self.connection.recv(1, socket.MSG_PEEK) == b""
        except (OSError, ValueError):
            return True
        return False


class FakeKubeHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = True
    allow_reuse_address = True

    def __init__(self, app: ApiServer) -> None:
        self.app = app
        self._connections: set[socket.socket] = set()
        self._conn_lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._conn_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._conn_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients hanging up (a stopped watch, a stopped server) are normal; anything else is a fake bug."""
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, OSError, ValueError)):
            return
        self.app.errors.append(traceback.format_exc())

    def close_all_connections(self) -> None:
        with self._conn_lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
