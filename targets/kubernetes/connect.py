"""Building an API client from a kubeconfig, a context, or the pod's service account.

The kubeconfig's bearer token is a secret: it is remembered for redaction (core/redact.py) as soon as it is
loaded, and a kubeconfig error is redacted before it becomes a message (the loader quotes the file's values).
"""

from __future__ import annotations

import os
from pathlib import Path

from kubernetes import config as kube_config
from kubernetes.client import ApiClient, Configuration
from kubernetes.config.config_exception import ConfigException

from releasegate.core.config import Config
from releasegate.core.errors import ConfigError
from releasegate.core.redact import redact, remember_secret
from releasegate.core.types import check_label_key


def kubeconfig_path(config: Config) -> Path | None:
    """The kubeconfig to read: the configured one, else $KUBECONFIG, else ~/.kube/config (if present)."""
    configured = config.kubernetes.kubeconfig
    if configured:
        return config.resolve_path(configured)
    env = os.environ.get("KUBECONFIG", "").split(os.pathsep)[0]
    if env:
        return Path(env).expanduser()
    default = Path("~/.kube/config").expanduser()
    return default if default.exists() else None


def check_label_settings(config: Config) -> None:
    """The configured label keys go into label selectors (`app=demo,slot=blue`): each must be one key, so
    that none can add a term of its own (`slot,app!=`). App and version values are checked by the config."""
    kube = config.kubernetes
    for key, value in (("kubernetes.slot_label", kube.slot_label), ("kubernetes.version_label", kube.version_label)):
        check_label_key(value, source=key)


def api_client(config: Config) -> ApiClient:
    """An ApiClient for the configured context; every problem is one ConfigError saying what to fix."""
    check_label_settings(config)
    path = kubeconfig_path(config)
    context = config.kubernetes.context or None
    if path is None:
        if os.environ.get("KUBERNETES_SERVICE_HOST"):
            configuration = Configuration()
            kube_config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
            return _remembering_token(configuration)
        raise ConfigError("no kubeconfig found (kubernetes.kubeconfig is empty, $KUBECONFIG is unset and "
                          "~/.kube/config does not exist); point kubernetes.kubeconfig at one, or run in a pod")
    if not path.exists():
        raise ConfigError(f"the kubeconfig {path} does not exist; fix kubernetes.kubeconfig or $KUBECONFIG")
    try:
        contexts, current = kube_config.list_kube_config_contexts(  # type: ignore[no-untyped-call]
            config_file=str(path))
    except (ConfigException, OSError, ValueError) as exc:
        raise ConfigError(f"the kubeconfig {path} cannot be read ({redact(str(exc))}); fix the file") from None
    names = [c["name"] for c in contexts]
    if context is not None and context not in names:
        raise ConfigError(f"kubernetes.context {context!r} is not in {path}; contexts there: "
                          + (", ".join(names) or "none"))
    if context is None and not current:
        raise ConfigError(f"{path} has no current context; set kubernetes.context to one of: {', '.join(names)}")
    configuration = Configuration()
    try:
        kube_config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=str(path), context=context,
                                     client_configuration=configuration, persist_config=False)
    except (ConfigException, OSError, ValueError) as exc:
        raise ConfigError(f"context {context or current['name']!r} of {path} is unusable ({redact(str(exc))}); "
                          "fix it or pick another context") from None
    return _remembering_token(configuration)


def _remembering_token(configuration: Configuration) -> ApiClient:
    """The client, once its credentials are known to `redact`: a message that quotes one shows *** instead."""
    for value in (configuration.api_key or {}).values():
        remember_secret(str(value).removeprefix("Bearer ").strip())
    remember_secret(configuration.password)
    return ApiClient(configuration)
