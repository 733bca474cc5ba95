"""Opening the target a release runs on, by name."""

from __future__ import annotations

from releasegate.core.config import Config
from releasegate.core.errors import ConfigError
from releasegate.core.target import Target


def open_target(config: Config, kind: str) -> Target:
    """Connect to (or, for the local target, start) the target. Raises ConfigError on bad input."""
    if kind == "local":
        from releasegate.targets.local.target import LocalTarget

        return LocalTarget.open(config)
    if kind == "kubernetes":
        from releasegate.targets.kubernetes.target import KubernetesTarget  # type: ignore[import-not-found,unused-ignore]

        return KubernetesTarget.open(config)  # type: ignore[no-any-return,unused-ignore]
    if kind == "kind":
        from releasegate.targets.kind.target import open_kind_target  # type: ignore[import-not-found,unused-ignore]

        return open_kind_target(config)  # type: ignore[no-any-return,unused-ignore]
    raise ConfigError(f"--target {kind!r} is not a target; use local, kubernetes or kind")
