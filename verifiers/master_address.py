"""The `master` address of a distributed load profile, parsed on its own.

Apart from verifiers.load so that checking a `--release-var` (plugins/release_vars.py, in every pytest process
of a release) does not import the load runner, which only processes that run a load need.
"""

from __future__ import annotations

from releasegate.core.errors import ConfigError


def parse_master(text: str) -> tuple[str, int]:
    """`host:port` (`[::1]:5557` for IPv6) of a LoadProfile's `master`; ConfigError naming the fix otherwise."""
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"load profile: master {text!r} is not host:port; give the address this machine's "
                          "locust master listens on for its workers, e.g. '0.0.0.0:5557' (all interfaces) or "
                          "'10.0.0.5:5557'")
    return host, int(port)
