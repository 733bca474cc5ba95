"""Kubernetes ``Status`` bodies and the exception that carries them out of a handler.

The shapes follow the recorded v1.32 server exactly (see ``tests/k8s_golden/README.md``):

* ``details.kind`` is the plural *resource* for NotFound/AlreadyExists/Conflict/Forbidden and the *Kind*
  for 422 Invalid and for uid-precondition conflicts;
* the core group never appears as ``details.group``;
* 400 and 401 bodies have no ``details`` key at all, 405/415/generic 422 have ``details: {}``.
"""

from __future__ import annotations

from typing import Any

JsonObj = dict[str, Any]


class ApiError(Exception):
    """Raised anywhere below the HTTP layer; the server turns it into a response."""

    def __init__(
        self,
        code: int,
        body: JsonObj | str,
        *,
        content_type: str = "application/json",
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(body["message"] if isinstance(body, dict) and "message" in body else str(body))
        self.code = code
        self.body = body
        self.content_type = content_type
        self.headers = headers or {}


def qualified_resource(resource: str, group: str) -> str:
    """``deployments.apps`` for a group, bare ``services`` for the core group."""
    return f"{resource}.{group}" if group else resource


def qualified_kind(kind: str, group: str) -> str:
    """``Deployment.apps`` for a group, bare ``Service`` for the core group."""
    return f"{kind}.{group}" if group else kind


def failure(code: int, reason: str, message: str, details: JsonObj | None = None) -> JsonObj:
    body: JsonObj = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
    }
    if details is not None:
        body["details"] = details
    body["code"] = code
    return body


def _details(name: str | None, group: str, kind: str) -> JsonObj:
    details: JsonObj = {}
    if name:
        details["name"] = name
    if group:
        details["group"] = group
    details["kind"] = kind
    return details


def not_found(resource: str, group: str, name: str) -> ApiError:
    msg = f'{qualified_resource(resource, group)} "{name}" not found'
    return ApiError(404, failure(404, "NotFound", msg, _details(name, group, resource)))


def already_exists(resource: str, group: str, name: str) -> ApiError:
    msg = f'{qualified_resource(resource, group)} "{name}" already exists'
    return ApiError(409, failure(409, "AlreadyExists", msg, _details(name, group, resource)))


def conflict(resource: str, group: str, name: str) -> ApiError:
    msg = (
        f'Operation cannot be fulfilled on {qualified_resource(resource, group)} "{name}": the object has '
        "been modified; please apply your changes to the latest version and try again"
    )
    return ApiError(409, failure(409, "Conflict", msg, _details(name, group, resource)))


def precondition_uid_conflict(kind: str, group: str, name: str, wanted: str, actual: str) -> ApiError:
    msg = (
        f'Operation cannot be fulfilled on {qualified_kind(kind, group)} "{name}": the UID in the '
        f"precondition ({wanted}) does not match the UID in record ({actual}). The object might have been "
        "deleted and then recreated"
    )
    return ApiError(409, failure(409, "Conflict", msg, _details(name, group, kind)))


def precondition_rv_conflict(kind: str, group: str, name: str, wanted: str, actual: str) -> ApiError:
    msg = (
        f'Operation cannot be fulfilled on {qualified_kind(kind, group)} "{name}": '
        "the ResourceVersion in the "
        f"precondition ({wanted}) does not match the ResourceVersion in record ({actual}). The object might "
        "have been modified"
    )
    return ApiError(409, failure(409, "Conflict", msg, _details(name, group, kind)))


def field_error_text(cause: JsonObj) -> str:
    return f"{cause['field']}: {cause['message']}" if cause.get("field") else str(cause["message"])


def invalid(kind: str, group: str, name: str, causes: list[JsonObj]) -> ApiError:
    """422 with the aggregate message format of ``field.ErrorList.ToAggregate()``."""
    texts = list(dict.fromkeys(field_error_text(c) for c in causes))  # ToAggregate drops repeated messages
    joined = texts[0] if len(texts) == 1 else "[" + ", ".join(texts) + "]"
    msg = f'{qualified_kind(kind, group)} "{name}" is invalid: {joined}'
    details = _details(name, group, kind)
    details["causes"] = causes
    return ApiError(422, failure(422, "Invalid", msg, details))


def generic_invalid() -> ApiError:
    """What a failed JSON-patch op (``test`` mismatch, missing parent) returns: no hint, ``details: {}``."""
    msg = "the server rejected our request due to an error in our request"
    return ApiError(422, failure(422, "Invalid", msg, {}))


def bad_request(message: str) -> ApiError:
    return ApiError(400, failure(400, "BadRequest", message))


def unauthorized() -> ApiError:
    return ApiError(401, failure(401, "Unauthorized", "Unauthorized"))


def method_not_allowed() -> ApiError:
    msg = "the server does not allow this method on the requested resource"
    return ApiError(405, failure(405, "MethodNotAllowed", msg, {}))


def unsupported_media_type() -> ApiError:
    return ApiError(415, failure(415, "UnsupportedMediaType", "415: Unsupported Media Type", {}))


def unsupported_patch_for_custom_resource() -> ApiError:
    """A strategic merge patch on a custom resource (negotiation.NewUnsupportedMediaTypeError; no details)."""
    msg = (
        "the body of the request was in an unknown format - accepted media types include: "
        "application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml"
    )
    return ApiError(415, failure(415, "UnsupportedMediaType", msg))


def resource_not_found() -> ApiError:
    """Unknown resource inside a known group/version: a JSON Status (unlike an unknown group)."""
    msg = "the server could not find the requested resource"
    return ApiError(404, failure(404, "NotFound", msg, {}))


def page_not_found() -> ApiError:
    """Path outside every registered group: the plain-text mux 404, not a Status."""
    return ApiError(
        404,
        "404 page not found\n",
        content_type="text/plain; charset=utf-8",
        headers={"X-Content-Type-Options": "nosniff"},
    )


def forbidden(
    *,
    user: str,
    verb: str,
    resource: str,
    subresource: str,
    group: str,
    namespace: str,
    name: str,
) -> ApiError:
    subject = qualified_resource(resource, group)
    subject = f'{subject} "{name}"' if name else subject
    res = f"{resource}/{subresource}" if subresource else resource
    scope = f'in the namespace "{namespace}"' if namespace else "at the cluster scope"
    msg = f'{subject} is forbidden: User "{user}" cannot {verb} resource "{res}" in API group "{group}" {scope}'
    return ApiError(
        403,
        failure(403, "Forbidden", msg, _details(name, group, resource)),
        headers={"X-Content-Type-Options": "nosniff"},
    )


def forbidden_path(user: str, verb: str, path: str) -> ApiError:
    msg = f'forbidden: User "{user}" cannot {verb} path "{path}"'
    return ApiError(403, failure(403, "Forbidden", msg, {}), headers={"X-Content-Type-Options": "nosniff"})


def expired_status(message: str) -> JsonObj:
    """The object of the ERROR watch event for a too-old resourceVersion (no details key)."""
    return failure(410, "Expired", message)


def internal_error(message: str) -> ApiError:
    msg = f"Internal error occurred: {message}"
    return ApiError(500, failure(500, "InternalError", msg, {"causes": [{"message": message}]}))


def service_unavailable() -> ApiError:
    msg = "the server is currently unable to handle the request"
    return ApiError(503, failure(503, "ServiceUnavailable", msg, {}))


def too_many_requests(retry_after: int) -> ApiError:
    return ApiError(
        429,
        failure(
            429,
            "TooManyRequests",
            "Too many requests, please try again later.",
            {"retryAfterSeconds": retry_after},
        ),
        headers={"Retry-After": str(retry_after)},
    )


def gateway_timeout() -> ApiError:
    msg = "the server was unable to return a response in the time allotted, but may still be processing the request"
    return ApiError(504, failure(504, "Timeout", msg, {}))


def success(name: str, group: str, resource: str, uid: str) -> JsonObj:
    """Body of a DELETE that removed the object at once (no code, reason or message)."""
    details = _details(name, group, resource)
    details["uid"] = uid
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details}
