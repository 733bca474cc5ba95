"""The demo workload's profile file, checked before anything starts.

Apart from the cluster client (httpx and the rest) because every pytest process of a local release checks
it at configure time, the xdist controller and workers too, and those need nothing else of the client.
"""

from __future__ import annotations

from releasegate.core.config import Config
from releasegate.core.errors import ConfigError


def check_demo_profiles(config: Config) -> None:
    """The demo service would reject a bad profile file in every pod; say so once, before starting."""
    from releasegate.demo.profiles import ConfigError as DemoConfigError  # the default workload; imported only for it
    from releasegate.demo.profiles import load_profiles

    if not config.local.profiles:
        return
    path = config.resolve_path(config.local.profiles)
    try:
        load_profiles(path)
    except DemoConfigError as exc:
        raise ConfigError(f"local.profiles: {exc}") from None
