"""Opening the target a release runs on, by name."""

from __future__ import annotations

from core.config import Config
from core.errors import ConfigError
from core.target import Target


def open_target(config: Config, kind: str) -> Target:
    """Connect to (or, for the local target, start) the target. Raises ConfigError on bad input."""
    if kind == "local":
        from targets.local.target import LocalTarget

        return LocalTarget.open(config)
    if kind == "kubernetes":
        from targets.kubernetes.target import KubernetesTarget  # type: ignore[import-not-found,unused-ignore]

        return KubernetesTarget.open(config)  # type: ignore[no-any-return,unused-ignore]
    if kind == "kind":
        from targets.kind.target import open_kind_target  # type: ignore[import-not-found,unused-ignore]

        return open_kind_target(config)  # type: ignore[no-any-return,unused-ignore]
    raise ConfigError(f"--target {kind!r} is not a target; use local, kubernetes or kind")
