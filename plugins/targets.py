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
        return _open_kubernetes(config)
    if kind == "kind":
        from releasegate.targets.kind.target import open_kind_target  # type: ignore[import-not-found,unused-ignore]

        return open_kind_target(config)  # type: ignore[no-any-return,unused-ignore]
    raise ConfigError(f"--release-target {kind!r} is not a target; use local, kubernetes or kind")


def _open_kubernetes(config: Config) -> Target:
    """The kubernetes target for the layout the config names: blue-green, canary (replicas or ALB) or an
    Argo Rollouts Rollout. `config.release.strategy` holds the run's strategy (the command line's, if given)."""
    if config.kubernetes.workload == "rollout":
        from releasegate.targets.kubernetes.argo_target import ArgoRolloutTarget

        return ArgoRolloutTarget.open(config)
    if config.release.strategy == "canary":
        from releasegate.targets.kubernetes.canary import KubernetesCanaryTarget

        return KubernetesCanaryTarget.open(config)
    from releasegate.targets.kubernetes.target import KubernetesTarget

    return KubernetesTarget.open(config)
