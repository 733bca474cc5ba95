"""Bearer-token authentication and an optional RBAC authorizer.

Tokens map to users; ``system:masters`` members may do anything. Without RBAC the fake authorizes like
``--authorization-mode=AlwaysAllow`` (anonymous requests included). With RBAC, each user (or group) gets
rules shaped like a ``rbac.authorization.k8s.io/v1`` Role's ``rules``; anything else is 403 with the
apiserver's message, discovery stays readable for authenticated users, and a request without a token is
``system:anonymous`` (403, not 401), as recorded in ``05-errors.json``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

DEFAULT_TOKENS = {"admin-token": "admin", "norights-token": "releasegate-norights"}
DEFAULT_GROUPS = {"admin": ["system:masters"]}


@dataclass(frozen=True)
class User:
    name: str
    groups: tuple[str, ...] = ()


ANONYMOUS = User("system:anonymous", ("system:unauthenticated",))


@dataclass(frozen=True)
class Rule:
    api_groups: frozenset[str]
    resources: frozenset[str]
    verbs: frozenset[str]
    resource_names: frozenset[str] = frozenset()
    namespace: str | None = None  # a Role's namespace; None for ClusterRole-style rules

    def allows(self, verb: str, group: str, resource: str, subresource: str, namespace: str, name: str) -> bool:
        if self.namespace is not None and namespace != self.namespace:
            return False
        if "*" not in self.verbs and verb not in self.verbs:
            return False
        if "*" not in self.api_groups and group not in self.api_groups:
            return False
        full = f"{resource}/{subresource}" if subresource else resource
        if not (
            "*" in self.resources or full in self.resources or (subresource and f"*/{subresource}" in self.resources)
        ):
            return False
        if self.resource_names:
            return bool(name) and name in self.resource_names
        return True


def parse_rules(spec: Any) -> list[Rule]:
    """Accept a Role/ClusterRole object, a ``rules`` list, or a list of Roles."""
    if isinstance(spec, Mapping) and "rules" in spec:
        namespace = None
        if spec.get("kind", "Role") == "Role":
            namespace = (spec.get("metadata") or {}).get("namespace")
        return [_rule(r, namespace) for r in spec.get("rules") or []]
    if isinstance(spec, list):
        out: list[Rule] = []
        for item in spec:
            if isinstance(item, Mapping) and "rules" in item:
                out.extend(parse_rules(item))
            elif isinstance(item, Mapping):
                out.append(_rule(item, None))
        return out
    raise TypeError(f"cannot read RBAC rules from {type(spec).__name__}")


def _rule(raw: Mapping[str, Any], namespace: str | None) -> Rule:
    return Rule(
        api_groups=frozenset(raw.get("apiGroups") or []),
        resources=frozenset(raw.get("resources") or []),
        verbs=frozenset(raw.get("verbs") or []),
        resource_names=frozenset(raw.get("resourceNames") or []),
        namespace=namespace,
    )


@dataclass
class Authorizer:
    """``rbac=None`` means AlwaysAllow; otherwise subject (user or group name) -> rules."""

    rbac: dict[str, list[Rule]] | None = None
    tokens: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_TOKENS))
    groups: dict[str, list[str]] = field(default_factory=lambda: dict(DEFAULT_GROUPS))

    def authenticate(self, authorization: str | None) -> User | None:
        """The user for an Authorization header; ANONYMOUS if absent; None for a bad token (401)."""
        if not authorization:
            return ANONYMOUS
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or token.strip() not in self.tokens:
            return None
        name = self.tokens[token.strip()]
        return User(name, (*self.groups.get(name, []), "system:authenticated"))

    def set_rbac(self, rbac: Mapping[str, Any] | None) -> None:
        self.rbac = None if rbac is None else {subject: parse_rules(spec) for subject, spec in rbac.items()}

    def allowed(
        self, user: User, verb: str, group: str, resource: str, subresource: str, namespace: str, name: str
    ) -> bool:
        if self.rbac is None or "system:masters" in user.groups:
            return True
        for subject in (user.name, *user.groups):
            for rule in self.rbac.get(subject, []):
                if rule.allows(verb, group, resource, subresource, namespace, name):
                    return True
        return False

    def allowed_path(self, user: User, path: str) -> bool:
        """Non-resource URLs: discovery for authenticated users, /version and /healthz for everyone."""
        if self.rbac is None or "system:masters" in user.groups:
            return True
        if path in ("/version", "/healthz", "/livez", "/readyz"):
            return True
        return "system:authenticated" in user.groups
