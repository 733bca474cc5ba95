"""`releasegate status|rollback|switch|promote|abort`: the command line of the operator commands.

    releasegate status [--json]              live version, slot, weights, unfinished release, lock holder
    releasegate rollback [--force]           traffic back on the previous version (no Prometheus, no suites)
    releasegate switch [--to SLOT] [--force] all traffic to a slot that runs a ready version
    releasegate promote [--force]            finish an unfinished release forward, by hand
    releasegate abort [--force]              undo an unfinished release and record it as aborted

Every command takes --config (default ./releasegate.toml), --target and --strategy (default: the config's,
as `pytest --release` chooses them) and, for the local target, --run-dir. The local target attaches to the
running local cluster (`python -m releasegate.targets.local up`) and never starts one.

Exit codes: 0 done (or nothing to do), 1 the target failed while acting, 4 bad input or a live release holds
the lock (nothing changed), 3 an internal error.
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from pathlib import Path
from typing import Any, NoReturn

from releasegate.core.config import Config, load_config
from releasegate.core.errors import ConfigError, ExitCode, ReleasegateError
from releasegate.core.target import Target

STRATEGIES = ("blue-green", "canary")
TARGETS = ("local", "kubernetes", "kind")


class _Parser(argparse.ArgumentParser):
    """argparse that reports bad input as one line and exit 4 (the project's usage error), not exit 2."""

    def error(self, message: str) -> NoReturn:
        raise ConfigError(f"{message}; see `{self.prog} --help`")


def _parser() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    common.add_argument("--config", help="config file (default: ./releasegate.toml if present)")
    common.add_argument("--target", choices=TARGETS, help="default: release.target in the config")
    common.add_argument("--strategy", choices=STRATEGIES, help="default: release.strategy in the config")
    common.add_argument("--run-dir", help="the local target: override local.run_dir")
    parser = _Parser(prog="releasegate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                     parents=[common])
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    status = commands.add_parser("status", parents=[common], help="what serves, what is unfinished, who holds the lock")
    status.add_argument("--json", action="store_true", help="machine-readable")
    force_help = "take the lock from a release that is not proven dead (it stops at its next lock renewal)"
    for name, what in (("rollback", "traffic back on the previous version"),
                       ("switch", "all traffic to one slot"), ("promote", "finish an unfinished release forward"),
                       ("abort", "undo an unfinished release")):
        command = commands.add_parser(name, parents=[common], help=what)
        command.add_argument("--force", action="store_true", help=force_help)
        if name == "switch":
            command.add_argument("--to", dest="to_slot", metavar="SLOT",
                                 help="the slot to switch to (default: the one that does not serve)")
    return parser


def _config(args: argparse.Namespace) -> Config:
    config = load_config(args.config)
    release = config.release.model_copy(update={key: value for key, value in
                                                 (("target", args.target), ("strategy", args.strategy)) if value})
    if release.strategy == "canary" and release.target == "kind":
        raise ConfigError("the canary strategy runs on the local and kubernetes targets; use --strategy blue-green "
                          "with the kind target")
    local = config.local
    if args.run_dir:
        local = local.model_copy(update={"run_dir": str(Path(args.run_dir).resolve())})
    return config.model_copy(update={"release": release, "local": local})


def open_operator_target(config: Config) -> Target:
    """The plugin's target for `config.release.target`, except that the local one never starts a cluster."""
    if config.release.target == "local":
        from releasegate.targets.local.target import LocalTarget

        try:
            return LocalTarget.open(config, start_if_missing=False)
        except ReleasegateError as exc:
            raise ConfigError(f"{exc}; start it with `python -m releasegate.targets.local up`, or pass --run-dir "
                              "or --config to name the project's") from None
    from releasegate.plugins.targets import open_target

    return open_target(config, config.release.target)


def run(args: argparse.Namespace) -> list[str]:
    from releasegate.commands.operations import Operator, describe_status, status

    config = _config(args)
    target = open_operator_target(config)
    try:
        if args.command == "status":
            found = status(target)
            return [json.dumps(found, indent=2)] if args.json else describe_status(found)
        operator = Operator(target, command=args.command, force=args.force,
                            ready_timeout_s=config.stages.provision)
        try:
            actions: dict[str, Any] = {"rollback": operator.rollback, "abort": operator.abort,
                                       "promote": operator.promote,
                                       "switch": lambda: operator.switch(args.to_slot)}
            return list(actions[args.command]().lines)
        finally:
            operator.unlock()
    finally:
        target.close()


def main(argv: list[str] | None = None) -> int:
    try:
        args = _parser().parse_args(argv)
        lines = run(args)
    except ReleasegateError as exc:
        print(f"releasegate: {exc}", file=sys.stderr)
        return int(exc.exit_code)
    except Exception:  # a bug of ours: the traceback is the report, and the exit code says so
        traceback.print_exc()
        return int(ExitCode.INTERNAL_ERROR)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
