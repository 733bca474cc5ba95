"""The demo service of releasegate: a FastAPI app whose per-version behaviour comes from a TOML profile."""

from __future__ import annotations

from .profiles import (
    ConfigError,
    EndpointBehaviour,
    EndpointProfile,
    Profile,
    ProfileError,
    ProfileSet,
    VersionError,
    load_profiles,
    resolve_profiles_path,
    validate_version,
)

__all__ = [
    "ConfigError",
    "EndpointBehaviour",
    "EndpointProfile",
    "Profile",
    "ProfileError",
    "ProfileSet",
    "VersionError",
    "load_profiles",
    "resolve_profiles_path",
    "validate_version",
]
