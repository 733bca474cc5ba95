"""Entry point of the local cluster process: `python -m releasegate.targets.local.daemon --run-dir DIR`.

The starter writes the validated config to DIR/cluster-config.json first. A configuration problem found
here (a taken port, no Prometheus binary) ends the process with exit code 4 and one line on stderr,
which the starter turns back into a ConfigError.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from releasegate.core.config import Config
from releasegate.core.errors import ConfigError, ReleasegateError
from releasegate.targets.local.cluster import run_cluster
from releasegate.targets.local.run_files import CONFIG_FILE


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m releasegate.targets.local.daemon")
    parser.add_argument("--run-dir", required=True, type=Path)
    parser.add_argument("--persistent", action="store_true")
    args = parser.parse_args(argv)
    data = json.loads((args.run_dir / CONFIG_FILE).read_text(encoding="utf-8"))
    config = Config.model_validate({**data["config"], "base_dir": Path(data["base_dir"]),
                                    "project_root": Path(data["project_root"])})
    try:
        return asyncio.run(run_cluster(config, args.run_dir, persistent=args.persistent))
    except ReleasegateError as exc:
        print(f"releasegate: {exc}", file=sys.stderr, flush=True)
        return int(exc.exit_code) if isinstance(exc, ConfigError) else 3


if __name__ == "__main__":
    sys.exit(main())
