"""Which Kubernetes API requests the kubernetes target sends, read from its source with `ast`.

The runner's RBAC (charts/bluegreen-app/files/runner-rules.yaml) must grant exactly these. Rather than a
second hand-written list, the set comes from the code: every request goes through
`KubeApi.call(verb, resource, client_method, ...)`, and the client method is what decides the request.

For each such call the HTTP method and path are read from the generated `kubernetes` client method
(e.g. `AppsV1Api.patch_namespaced_deployment_scale` -> PATCH
/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale), which gives the API group, the resource,
the subresource and the RBAC verb as the API server authorizes them. The `verb` and `resource` strings
written in the call (used in error messages) must agree with that, and a client method used outside
`api.call` is an error, so a request cannot escape the check.
"""

from __future__ import annotations

import ast
import inspect
import re
from dataclasses import dataclass
from pathlib import Path

import kubernetes.client

ROOT = Path(__file__).resolve().parent.parent
TARGET_DIR = ROOT / "targets" / "kubernetes"

# The non-core groups we know the target uses: only a cross-check of what the client paths say (the path is
# the authority; a resource missing here is not an error).
EXPECTED_GROUPS = {"deployments": "apps", "deployments/scale": "apps", "leases": "coordination.k8s.io",
                   "endpointslices": "discovery.k8s.io", "ingresses": "networking.k8s.io",
                   "horizontalpodautoscalers": "autoscaling"}

_HTTP_VERBS = {"POST": "create", "PUT": "update", "PATCH": "patch"}
# kubernetes>=35 (new generator): `method='PATCH', resource_path='/apis/...'` in `_<name>_serialize`.
_NEW_STYLE = re.compile(r"method='(GET|POST|PUT|PATCH|DELETE)',\s*resource_path='([^']+)'")
# Older clients: `self.api_client.call_api('/apis/...', 'PATCH', ...)` in `<name>_with_http_info`.
_OLD_STYLE = re.compile(r"call_api\(\s*'([^']+)',\s*'(GET|POST|PUT|PATCH|DELETE)'")


@dataclass(frozen=True)
class ApiCall:
    """One `api.call(...)` in the target's source and the request it sends."""

    where: str  # file:line, for error messages
    method: str  # the client method, e.g. "read_namespaced_deployment"
    api_group: str  # "" for the core group
    resource: str  # "deployments" or "deployments/scale"
    verb: str  # the RBAC verb: get, list, create, update, patch, delete, deletecollection
    namespaced: bool


def request_of(api_class: type, method: str) -> tuple[str, str]:
    """(HTTP method, path template) of one generated client method."""
    sources = []
    for name in (f"_{method}_serialize", f"{method}_with_http_info", method):
        function = getattr(api_class, name, None)
        if function is not None:
            sources.append(inspect.getsource(function))
    text = "\n".join(sources)
    if match := _NEW_STYLE.search(text):
        return match.group(1), match.group(2)
    if match := _OLD_STYLE.search(text):
        return match.group(2), match.group(1)
    raise ValueError(f"cannot find the HTTP request of {api_class.__name__}.{method} in kubernetes client "
                     f"{kubernetes.__version__}; update tests/k8s_verbs.py for its code layout")


def describe_path(http_method: str, path: str) -> tuple[str, str, str, bool]:
    """(apiGroup, resource[/subresource], RBAC verb, namespaced) of one API path template."""
    parts = path.strip("/").split("/")
    if parts[0] == "api":  # /api/v1/...
        group, rest = "", parts[2:]
    elif parts[0] == "apis":  # /apis/<group>/<version>/...
        group, rest = parts[1], parts[3:]
    else:
        raise ValueError(f"{path} is not a resource path")
    namespaced = len(rest) >= 3 and rest[0] == "namespaces" and rest[1] == "{namespace}"
    if namespaced:
        rest = rest[2:]
    resource = rest[0]
    named = len(rest) >= 2 and rest[1] == "{name}"
    if len(rest) >= 3:
        resource = f"{resource}/{rest[2]}"
    if http_method == "GET":
        verb = "get" if named else "list"
    elif http_method == "DELETE":
        verb = "delete" if named else "deletecollection"
    else:
        verb = _HTTP_VERBS[http_method]
    return group, resource, verb, namespaced


_OWN_PACKAGE = "releasegate.targets.kubernetes."


def _client_classes(tree: ast.Module, *, inherited: bool = True) -> list[type]:
    """The generated API classes a module imports from kubernetes.client (AppsV1Api, CoreV1Api...), and those of
    the target modules it imports from (a subclass of base.KubernetesBase calls `self.apps`, made there)."""
    classes = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module in ("kubernetes.client", "kubernetes.client.api"):
            for alias in node.names:
                if alias.name.endswith("Api") and alias.name != "ApiClient":
                    classes.append(getattr(kubernetes.client, alias.name))
        elif inherited and isinstance(node, ast.ImportFrom) and (node.module or "").startswith(_OWN_PACKAGE):
            source = TARGET_DIR / f"{(node.module or '')[len(_OWN_PACKAGE):]}.py"
            if source.exists():
                classes += _client_classes(ast.parse(source.read_text(encoding="utf-8")), inherited=False)
    return list(dict.fromkeys(classes))


def _owner(classes: list[type], method: str, where: str) -> type | None:
    # An API operation has a `<name>_with_http_info` twin; generic helpers such as `close` have none.
    owners = [cls for cls in classes if not method.startswith("_") and not method.endswith("_with_http_info")
              and callable(getattr(cls, method, None)) and hasattr(cls, f"{method}_with_http_info")]
    if len(owners) > 1:
        raise ValueError(f"{where}: {method} exists on several client classes "
                         f"({', '.join(c.__name__ for c in owners)}); cannot tell which is called")
    return owners[0] if owners else None


def _shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def _is_api_call(node: ast.Call) -> bool:
    """`api.call(...)` or `self.api.call(...)`: the KubeApi entry point every request goes through."""
    func = node.func
    if not (isinstance(func, ast.Attribute) and func.attr == "call"):
        return False
    receiver = func.value
    return (isinstance(receiver, ast.Name) and receiver.id == "api") or \
        (isinstance(receiver, ast.Attribute) and receiver.attr == "api")


def api_calls_in(path: Path) -> list[ApiCall]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    classes = _client_classes(tree)
    calls: list[ApiCall] = []
    passed_to_call: set[int] = set()
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and _is_api_call(node)):
            continue
        where = f"{_shown(path)}:{node.lineno}"
        if len(node.args) < 3 or not all(isinstance(a, ast.Constant) and isinstance(a.value, str)
                                         for a in node.args[:2]):
            raise ValueError(f"{where}: api.call needs literal verb and resource strings and a client method")
        label_verb, label_resource = node.args[0].value, node.args[1].value  # type: ignore[attr-defined]
        function = node.args[2]
        if not isinstance(function, ast.Attribute):
            raise ValueError(f"{where}: the client method must be written as <client>.<method>")
        owner = _owner(classes, function.attr, where)
        if owner is None:
            raise ValueError(f"{where}: {function.attr} is not a method of {[c.__name__ for c in classes]}")
        passed_to_call.add(id(function))
        group, resource, verb, namespaced = describe_path(*request_of(owner, function.attr))
        if (label_verb, label_resource) != (verb, resource):
            raise ValueError(f"{where}: api.call says {label_verb} {label_resource} but {owner.__name__}."
                             f"{function.attr} sends {verb} {resource}; fix the label (RBAC errors quote it)")
        calls.append(ApiCall(where, function.attr, group, resource, verb, namespaced))
    # A client method referenced anywhere else would send a request that this module cannot see.
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and id(node) not in passed_to_call and \
                _owner(classes, node.attr, f"{_shown(path)}:{node.lineno}") is not None:
            raise ValueError(f"{_shown(path)}:{node.lineno}: {node.attr} is used outside api.call; "
                             "route the request through KubeApi.call so RBAC and retries cover it")
    return sorted(calls, key=lambda call: int(call.where.rsplit(":", 1)[1]))


# Modules of targets/kubernetes that the blue-green runner's Role does not cover: the Argo Rollouts driver
# is another workload mode (kubernetes.workload = "rollout"), whose rules belong to its own chart; the canary
# layout (canary.py) is charts/canary-app's.
OTHER_MODES = frozenset({"argo.py", "argo_target.py", "canary.py"})
# The canary layout's target is canary.py and what it shares; not the blue-green layout or the Argo driver.
NOT_CANARY = frozenset({"argo.py", "argo_target.py", "target.py"})


def blue_green_modules(directory: Path = TARGET_DIR) -> list[Path]:
    return [path for path in sorted(directory.glob("*.py")) if path.name not in OTHER_MODES]


def canary_modules(directory: Path = TARGET_DIR) -> list[Path]:
    return [path for path in sorted(directory.glob("*.py")) if path.name not in NOT_CANARY]


def api_calls_of_target(directory: Path = TARGET_DIR, modules: list[Path] | None = None) -> list[ApiCall]:
    calls: list[ApiCall] = []
    for path in blue_green_modules(directory) if modules is None else modules:
        calls += api_calls_in(path)
    for call in calls:
        expected = EXPECTED_GROUPS.get(call.resource)
        if expected is not None and call.api_group != expected:
            raise ValueError(f"{call.where}: {call.resource} is in API group {call.api_group!r}, "
                             f"expected {expected!r}")
    return calls


def verbs_used_by_target(directory: Path = TARGET_DIR) -> set[tuple[str, str, str]]:
    """Every (apiGroup, resource, verb) the kubernetes target requests."""
    return {(c.api_group, c.resource, c.verb) for c in api_calls_of_target(directory)}


def verbs_used_by_canary_target(directory: Path = TARGET_DIR) -> set[tuple[str, str, str]]:
    """Every (apiGroup, resource, verb) the kubernetes canary target (canary.py and what it shares) requests."""
    return {(c.api_group, c.resource, c.verb) for c in api_calls_of_target(directory, canary_modules(directory))}


def cluster_scoped_resources(directory: Path = TARGET_DIR) -> set[str]:
    """The resources the target requests outside a namespace (a Role cannot grant them)."""
    return {c.resource for c in api_calls_of_target(directory) if not c.namespaced}
