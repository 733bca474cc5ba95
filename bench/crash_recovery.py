"""SIGKILL a `pytest --release v2` runner in each phase, then run the same release again. Prints a table.

    python bench/crash_recovery.py [--targets local,kubernetes] [--phases preflight,smoke,...]

For each phase x target: a fresh persistent local cluster (or a fresh fake API server with real pod
processes, tests/kube_cluster.py) at v1, a release of v2 killed with SIGKILL once the target's recorded
phase shows it (tests/test_crash_recovery.py holds the run at a gate where a phase passes in a blink), then
the same release again. The rerun must roll the dead release back first, take the dead runner's lock at
once, and promote v2. Columns: the rerun's exit code, the live version after it, the leftovers (pods of a
slot that does not serve, a held lock, demo processes beyond the pods, processes the killed runner left in
its session), the seconds the recovery took and the phase the killed run had recorded.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.figures import Figure, emit
from tests.test_crash_recovery import (
    BLUE_GREEN_KILLS,
    CANARY_KILLS,
    Kill,
    LocalCrash,
    kube_crash,
    kube_crash_and_rerun,
)


def recovery_seconds(line: str) -> str:
    return line.rsplit(" in ", 1)[1].split("s", 1)[0] if " in " in line else "-"


def row(target: str, kill: Kill, code: int, live: str | None, leftovers: list[str], recovered: str,
        took_over: str, wall_s: float) -> str:
    proof = "pid gone" if took_over.endswith("is gone") else (took_over or "none")
    return (f"| {target:<10} | {kill.name:<11} | {kill.phase.value:<12} | {code:^4} | {live or '-':<4} | "
            f"{'; '.join(leftovers) or 'none':<10} | {recovery_seconds(recovered):>6} | {proof:<8} | "
            f"{wall_s:6.1f} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--targets", default="local,kubernetes")
    parser.add_argument("--phases", default="", help="comma-separated kill names (default: all)")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON line last")
    args = parser.parse_args()
    scenarios: list[float | None] = []  # each scenario's undo seconds (None: not measured)
    wanted = set(filter(None, args.phases.split(",")))
    print("| target     | killed in   | recorded     | exit | live | leftovers  | undo s | lock     | wall s |")
    print("|------------|-------------|--------------|------|------|------------|--------|----------|--------|")
    failures = 0
    for target in args.targets.split(","):
        kills = BLUE_GREEN_KILLS + CANARY_KILLS
        for kill in kills:
            if wanted and kill.name not in wanted:
                continue
            started = time.monotonic()
            strategy = "canary" if kill in CANARY_KILLS else "blue-green"
            with tempfile.TemporaryDirectory(prefix="rg-crash-") as workdir:
                try:
                    if target == "local":
                        with LocalCrash(Path(workdir) / "project", kill, strategy=strategy) as crash:
                            outcome = crash.crash_and_rerun()
                        result = (outcome.exit_code, outcome.live_version, outcome.leftovers, outcome.recovered,
                                  outcome.took_over)
                    else:
                        with kube_crash(Path(workdir), kill, strategy=strategy) as (cluster, project):
                            kube = kube_crash_and_rerun(cluster, project, kill, strategy=strategy)
                        result = (kube.exit_code, kube.live_version, kube.leftovers, kube.recovered, kube.took_over)
                except AssertionError as exc:
                    failures += 1
                    scenarios.append(None)
                    print(f"| {target:<10} | {kill.name:<11} | FAILED: {str(exc).splitlines()[0][:150]}", flush=True)
                    continue
            code, live, leftovers, recovered, took_over = result
            failures += code != 0 or live != "v2" or bool(leftovers) or not recovered
            undo = recovery_seconds(recovered)
            scenarios.append(float(undo) if undo != "-" else None)
            print(row(target, kill, code, live, leftovers, recovered, took_over, time.monotonic() - started),
                  flush=True)
    print(f"\n{failures} scenario(s) not as expected (exit 0, v2 live, nothing left, a recovery line)")
    if args.json:
        undone = sorted(seconds for seconds in scenarios if seconds is not None)
        emit("crash_recovery", [
            Figure("scenarios not as expected", failures, "of " + str(len(scenarios)),
                   note="exit 0, v2 live, nothing left, a recovery line"),
            Figure("undo of the dead release, median", undone[len(undone) // 2] if undone else None, "s"),
        ], note=f"targets {args.targets}, kills {args.phases or 'all'}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
