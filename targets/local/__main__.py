"""`python -m releasegate.targets.local up|status|down`: a local cluster that outlives one release run.

    python -m releasegate.targets.local up [--config releasegate.toml] [--version v1]
    python -m releasegate.targets.local status
    python -m releasegate.targets.local down

Bad input (malformed config, taken port, missing Prometheus) prints one line and exits with code 4.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from releasegate.core.config import Config, load_config
from releasegate.core.errors import ConfigError, ExitCode, ReleasegateError
from releasegate.core.redact import redact_url
from releasegate.core.versions import validate_version
from releasegate.targets.local.client import LocalClusterClient, run_dir_of, start_cluster, stop_cluster


def _config(args: argparse.Namespace) -> Config:
    config = load_config(args.config)
    updates: dict[str, Any] = {}
    if getattr(args, "empty", False):
        updates["initial_version"] = ""
    elif getattr(args, "version", None):
        updates["initial_version"] = validate_version(args.version, source="--version")
    if args.run_dir:
        updates["run_dir"] = str(Path(args.run_dir).resolve())
    return config.model_copy(update={"local": config.local.model_copy(update=updates)}) if updates else config


def _describe(state: dict[str, Any]) -> str:
    lines = [f"local cluster of {state['app']} (pid {state['pid']}, "
             f"{'persistent' if state['persistent'] else 'ephemeral'})",
             f"  service     {state['service_url']}  traffic: "
             + ", ".join(f"{slot} {w}%" for slot, w in sorted(state["traffic"].items())),
             f"  prometheus  {redact_url(state['prometheus_url'])}"]
    for slot, slot_state in sorted(state["slots"].items()):
        version = slot_state["version"] or "-"
        lines.append(f"  {slot:<6} {version:<16} {slot_state['ready_replicas']}/{len(slot_state['pods'])} ready"
                     f"  preview {state['previews'][slot]}")
        for pod in slot_state["pods"]:
            lines.append(f"    {pod['name']:<28} {pod['phase']:<16} restarts={pod['restarts']}")
    for pod in state.get("terminating", []):  # out of their slot, their processes still ending
        lines.append(f"  terminating {pod['name']:<28} {pod['phase']:<16} pid={pod['pid']}")
    spares = state.get("spares", [])
    if spares:  # warm processes the next deploy's pods start from (targets/local/spares.py): not pods
        warm = sum(spare["ready"] for spare in spares)
        lines.append(f"  spares      {warm} warm, {len(spares) - warm} importing (for the next deploy's pods)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m releasegate.targets.local", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="config file (default: ./releasegate.toml if present)")
    parser.add_argument("--run-dir", help="override local.run_dir")
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="start a persistent local cluster in the background")
    first = up.add_mutually_exclusive_group()
    first.add_argument("--version", help="the version to run first (default: local.initial_version)")
    first.add_argument("--empty", action="store_true",
                       help="run no version: the next release is a first deploy")
    status = commands.add_parser("status", help="show the running cluster")
    status.add_argument("--json", action="store_true")
    commands.add_parser("down", help="stop the running cluster and everything it started")
    args = parser.parse_args(argv)
    try:
        config = _config(args)
        run_dir = run_dir_of(config)
        if args.command == "up":
            running = LocalClusterClient.find_running(run_dir)
            if running is not None:  # `up` twice is not an error: the cluster is up
                print("already running: " + _describe(running.state()))
                return 0
            client, _ = start_cluster(config, persistent=True)
            print(_describe(client.state()))
            return 0
        if args.command == "status":
            found = LocalClusterClient.find_running(run_dir)
            if found is None:
                print(f"no local cluster runs in {run_dir}")
                return 1
            state = found.state()
            print(json.dumps(state, indent=2) if args.json else _describe(state))
            return 0
        stopped = stop_cluster(run_dir)
        print(f"stopped the local cluster in {run_dir}" if stopped else f"no local cluster runs in {run_dir}")
        return 0
    except ConfigError as exc:
        print(f"releasegate: {exc}", file=sys.stderr)
        return int(ExitCode.USAGE_ERROR)
    except ReleasegateError as exc:
        print(f"releasegate: {exc}", file=sys.stderr)
        return int(exc.exit_code)


if __name__ == "__main__":
    sys.exit(main())
