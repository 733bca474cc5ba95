"""`python -m demo --host H --port P --version V [--profiles PATH] [--pod NAME] [--seed N]`

Exit codes: 4 for a usage or configuration error (bad arguments, profile file or version), printed as
one line on stderr before any port is bound; 1 for a simulated crash (profile crash_after_s) or a port
that cannot be bound. On SIGTERM uvicorn finishes in-flight requests and then re-raises the signal, so a
graceful stop ends with the process killed by SIGTERM (returncode -15 from subprocess), as for most
servers.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import threading
from collections.abc import Sequence
from typing import NoReturn

from .profiles import ConfigError, load_profiles, resolve_profiles_path, validate_version

USAGE_ERROR = 4  # the project's exit code for usage and configuration errors (core.errors.ExitCode)
CRASH = 1


class _Parser(argparse.ArgumentParser):
    """argparse exits with 2 on bad arguments; the project's usage error code is 4."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(USAGE_ERROR, f"{self.prog}: error: {message}\n")


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    # Port 0 would pick a random port that nobody learns about: the caller must choose one.
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is outside 1..65535")
    return port


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=f"python -m {__package__}", description="The releasegate demo service.")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=_port, default=8000, help="port to bind (default 8000)")
    parser.add_argument("--version", required=True, help="version this instance reports, e.g. v2")
    parser.add_argument(
        "--profiles",
        default=None,
        help="behaviour profile file (default: $RELEASEGATE_PROFILES, else the shipped demo/profiles.toml)",
    )
    parser.add_argument(
        "--pod", default=None, help="pod name for X-Pod and /version (default: $POD_NAME, else the hostname)"
    )
    parser.add_argument("--seed", type=int, default=None, help="seed for reproducible latency/error draws")
    return parser


def schedule_crash(version: str, after_s: float) -> threading.Timer:
    """Exit the whole process with code 1 after `after_s` seconds, whatever it is doing.

    A daemon thread and os._exit rather than an exception in the event loop: a crash must not wait for
    in-flight requests or shutdown hooks, exactly like a process killed by a bug.
    """

    def crash() -> None:
        print(
            f"demo {version}: simulated crash after {after_s}s (profile crash_after_s)",
            file=sys.stderr,
            flush=True,
        )
        sys.stdout.flush()
        os._exit(CRASH)

    timer = threading.Timer(after_s, crash)
    timer.daemon = True
    timer.start()
    return timer


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    pod: str = args.pod or os.environ.get("POD_NAME") or socket.gethostname()
    try:
        version = validate_version(args.version)
        path = resolve_profiles_path(args.profiles)
        profile = load_profiles(path).for_version(version)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return USAGE_ERROR

    # Imported only now: a configuration error is reported without paying for FastAPI's import.
    import uvicorn

    from .app import create_app

    try:
        app = create_app(version, profile, pod, seed=args.seed)
    except ValueError as exc:  # a pod name that cannot go into a header
        print(f"--pod: {exc}", file=sys.stderr)
        return USAGE_ERROR

    if profile.crash_after_s is not None:
        schedule_crash(version, profile.crash_after_s)
    print(
        f"demo {version} (pod {pod}): profile {profile.name!r} from {path}; "
        f"serving http://{args.host}:{args.port}",
        file=sys.stderr,
        flush=True,
    )
    server = uvicorn.Server(
        uvicorn.Config(app, host=args.host, port=args.port, log_level="warning", access_log=False)
    )
    server.run()  # returns after a graceful shutdown; exits with 1 itself if the port cannot be bound
    return 0


if __name__ == "__main__":
    sys.exit(main())
