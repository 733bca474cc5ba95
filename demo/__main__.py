"""`python -m demo --host H --port P --version V [--profiles PATH] [--pod NAME] [--seed N]`

Exit codes: 4 for a usage or configuration error (bad arguments, profile file or version), printed as
one line on stderr before any port is bound; 1 for a simulated crash (profile crash_after_s) or a port
that cannot be bound. On SIGTERM uvicorn finishes in-flight requests and then re-raises the signal, so a
graceful stop ends with the process killed by SIGTERM (returncode -15 from subprocess), as for most
servers.

Reproducible runs: `--seed` (or `$RELEASEGATE_DEMO_SEED`) seeds the instance's latency and error draws, so
the Nth request to a pod fails, or not, in every run. SIGUSR1 moves the profile's clock a day ahead:
`errors_after_s` and `startup_delay_s` are over at once, so a test starts a late failure at the moment it
chooses instead of racing a timer (crash_after_s is a real timer and does not move).
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Sequence
from typing import NoReturn

from .profiles import ConfigError, load_profiles, resolve_profiles_path, validate_version

USAGE_ERROR = 4  # the project's exit code for usage and configuration errors (core.errors.ExitCode)
CRASH = 1
SEED_ENV_VAR = "RELEASEGATE_DEMO_SEED"
FAST_FORWARD_S = 86_400.0  # what one SIGUSR1 adds to the profile's clock: beyond any errors_after_s in use


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
    parser.add_argument(
        "--seed",
        type=int,
        default=None,
        help=f"seed for reproducible latency/error draws (default: ${SEED_ENV_VAR}, else unseeded)",
    )
    return parser


def seed_from_environment(explicit: int | None) -> int | None:
    """`--seed` if given, else $RELEASEGATE_DEMO_SEED (so a test run seeds every pod it starts), else None."""
    if explicit is not None:
        return explicit
    text = os.environ.get(SEED_ENV_VAR, "").strip()
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        raise ConfigError(
            f"${SEED_ENV_VAR} = {text!r} is not an integer; set a whole number such as 7, or unset it"
        ) from None


class FastForwardClock:
    """time.monotonic, plus FAST_FORWARD_S for every skip_ahead() (SIGUSR1 calls it)."""

    def __init__(self) -> None:
        self.skipped_s = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.skipped_s

    def skip_ahead(self, signum: int = 0, frame: object = None) -> None:
        self.skipped_s += FAST_FORWARD_S


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
        seed = seed_from_environment(args.seed)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return USAGE_ERROR

    # Imported only now: a configuration error is reported without paying for FastAPI's import.
    import uvicorn

    from .app import create_app
    from .serving import PromptExitServer

    clock = FastForwardClock()
    try:
        app = create_app(version, profile, pod, seed=seed, clock=clock)
    except ValueError as exc:  # a pod name that cannot go into a header
        print(f"--pod: {exc}", file=sys.stderr)
        return USAGE_ERROR
    signal.signal(signal.SIGUSR1, clock.skip_ahead)

    if profile.crash_after_s is not None:
        schedule_crash(version, profile.crash_after_s)
    print(
        f"demo {version} (pod {pod}): profile {profile.name!r} from {path}; "
        + ("" if seed is None else f"seed {seed}; ")
        + f"serving http://{args.host}:{args.port}",
        file=sys.stderr,
        flush=True,
    )
    server = PromptExitServer(
        uvicorn.Config(app, host=args.host, port=args.port, log_level="warning", access_log=False)
    )
    server.run()  # returns after a graceful shutdown; exits with 1 itself if the port cannot be bound
    return 0


if __name__ == "__main__":
    sys.exit(main())
