"""Entry point of the local cluster process: `python -m releasegate.targets.local.daemon --run-dir DIR`.

The starter writes the validated config to DIR/cluster-config.json first. A configuration problem found
here (a taken port, no Prometheus binary) ends the process with exit code 4 and one line on stderr,
which the starter turns back into a ConfigError.

The sockets and Prometheus come first (targets/local/head_start.py), from the config file's values as
written, before the imports of the config model and the cluster: Prometheus's first scrape, which a release
on a fresh cluster waits for, comes a fixed time after its start.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

from releasegate.core.errors import ConfigError, ReleasegateError
from releasegate.targets.local.head_start import open_head_start
from releasegate.targets.local.run_files import CONFIG_FILE


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m releasegate.targets.local.daemon")
    parser.add_argument("--run-dir", required=True, type=Path)
    parser.add_argument("--persistent", action="store_true")
    args = parser.parse_args(argv)
    data = json.loads((args.run_dir / CONFIG_FILE).read_text(encoding="utf-8"))
    try:
        return asyncio.run(_serve(data, args.run_dir, persistent=args.persistent))
    except ReleasegateError as exc:
        print(f"releasegate: {exc}", file=sys.stderr, flush=True)
        return int(exc.exit_code) if isinstance(exc, ConfigError) else 3


async def _serve(data: dict[str, Any], run_dir: Path, *, persistent: bool) -> int:
    # The file is Config.model_dump of a validated config: its values are checked already.
    raw, local = data["config"], data["config"]["local"]
    head = await open_head_start(
        run_dir, app=raw["app"]["name"], service_port=int(local["service_port"]),
        prometheus_binary=None if raw["prometheus"]["url"] else str(local["prometheus_binary"]),
        scrape_interval_s=float(local["scrape_interval_s"]))
    try:
        from releasegate.core.config import Config
        from releasegate.targets.local.cluster import run_cluster

        config = Config.model_validate({**raw, "base_dir": Path(data["base_dir"]),
                                        "project_root": Path(data["project_root"])})
    except BaseException:
        await head.close()
        raise
    return await run_cluster(config, run_dir, persistent=persistent, head_start=head)


def exit_at_once(code: int) -> None:
    """End the process without the interpreter's own teardown (about 60 ms of collecting and unloading the
    cluster's modules), which a release stopping an ephemeral cluster waits for. Safe once main() returned:
    every pod, spare and Prometheus has been stopped and reaped, every file written is closed; only stdout
    and stderr (the cluster's log) may hold buffered lines."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    exit_at_once(main())
