"""Where the time of a release goes: configured waits versus the framework's own overhead.

    python bench/release_bench.py [--load-s 10] [--compare-s 5] [--post-switch-s 5] [--keep-warm-s 5]

Runs `pytest --release v2` with the shipped suites on an ephemeral local cluster in a temporary
directory, then splits the wall time into
- configured waits: the load durations (load, comparison, post-switch) and the keep-warm delay, which a
  user chose and which would take as long with any tool, and
- overhead: everything else (pytest start-up, starting the local cluster, provisioning and waiting for
  readiness and the first Prometheus scrape, locust start-up, queries, switching, reporting).
Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CONFIG = """
[release]
keep_warm_s = {keep_warm_s}
required_stages = ["smoke", "load", "analysis"]

[local]
run_dir = "run"
replicas = 2

[vars]
load_duration_s = {load_s}
compare_duration_s = {compare_s}
post_switch_duration_s = {post_switch_s}
analysis_window_s = 60
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--load-s", type=float, default=10)
    parser.add_argument("--compare-s", type=float, default=5)
    parser.add_argument("--post-switch-s", type=float, default=5)
    parser.add_argument("--keep-warm-s", type=float, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp)
        shutil.copytree(ROOT / "suites", project / "suites", ignore=shutil.ignore_patterns("__pycache__"))
        (project / "conftest.py").write_text("")
        (project / "pytest.ini").write_text("[pytest]\naddopts = -p no:locust -p no:cacheprovider\n")
        (project / "releasegate.toml").write_text(CONFIG.format(
            keep_warm_s=args.keep_warm_s, load_s=args.load_s, compare_s=args.compare_s,
            post_switch_s=args.post_switch_s))
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        started = time.perf_counter()
        result = subprocess.run([sys.executable, "-m", "pytest", "--release", "v2", "-q"], cwd=project, env=env,
                                capture_output=True, text=True)
        wall = time.perf_counter() - started
        if result.returncode != 0:
            print(result.stdout[-3000:], result.stderr[-2000:])
            raise SystemExit(f"the release did not promote (exit {result.returncode})")
        report = json.loads((project / "reports" / "latest" / "release-report.json").read_text())
    waits = {"load stage": args.load_s, "baseline comparison": args.compare_s,
             "post-switch load": args.post_switch_s, "keep-warm delay": args.keep_warm_s}
    configured = sum(waits.values())
    phases = report["phase_times_s"]
    print(f"release of v2 over v1, shipped suites, 2 pods per slot: wall time {wall:.1f}s")
    print(f"  configured waits   {configured:6.1f}s  ({', '.join(f'{k} {v:g}s' for k, v in waits.items())})")
    print(f"  overhead           {wall - configured:6.1f}s  ({(wall - configured) / wall:.0%} of the wall time)")
    in_stages = sum(phases.values())
    print(f"    outside stages   {wall - in_stages:6.1f}s  (pytest start-up, collection, reporting, cluster stop)")
    for stage, seconds in phases.items():
        wait = {"load": args.load_s, "analysis": args.compare_s, "post_switch": args.post_switch_s,
                "finalize": args.keep_warm_s}.get(stage, 0.0)
        print(f"    {stage:<14} {seconds:6.2f}s in stage, {seconds - wait:6.2f}s beyond its configured wait")


if __name__ == "__main__":
    main()
