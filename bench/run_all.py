"""Run every benchmark in bench/ and print one table of figures. Started by `bench/run`.

    bench/run [--quick | --full] [--only NAME,...] [--skip NAME,...] [--list] [--logs DIR] [--json]

Each bench runs in a subprocess with `--json` and prints its prose as usual and one JSON object last
(bench/figures.py); this script reads only that line. `--quick` (the default) runs the long benches with
small sizes (their arguments are in BENCHES and in the table's notes); `--full` runs each at its own defaults.
A script in bench/ that is not in BENCHES still runs, at its defaults, so a new bench is never left out.
Every bench's whole output goes to a log file of its own (`--logs`, default a new folder under /tmp).

Exit code: 0 when every bench ran and every figure with a target met it; 1 otherwise; 4 on bad arguments.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
sys.path.insert(0, str(ROOT))

from bench.figures import Figure, parse_output  # noqa: E402

NOT_BENCHES = frozenset({"figures.py", "run_all.py"})
USAGE_ERROR = 4


@dataclass(frozen=True)
class Bench:
    name: str
    quick: tuple[str, ...] | None = ()  # None: not run in quick mode
    full: tuple[str, ...] = ()
    quick_note: str = ""  # what the quick sizes leave out


QUICK_TIMEOUT_S = 900.0
FULL_TIMEOUT_S = 4 * 3600.0  # decisions.py and signals.py at their defaults run for an hour or more


# In the order of the table: issue 12's figures first, then the older benches.
BENCHES: tuple[Bench, ...] = (
    Bench("load_vs_locust", ("--seconds", "10", "--rounds", "3"), ("--seconds", "20", "--rounds", "5")),
    Bench("router_bench", ("--seconds", "2", "--switches", "50")),
    # Its own waits: shorter comparisons end inconclusive on a busy machine, and the waits are subtracted anyway.
    Bench("release_bench", ("--cluster", "persistent"), quick_note="persistent cluster only"),
    # A median of 3 at least: one run of each worker count lands on either side of a 3x target by chance.
    Bench("xdist_io", ("--repeat", "3"), ("--repeat", "6")),
    Bench("locust_startup", ("--runs", "4"), quick_note="4 cold and 4 warm start-ups"),
    Bench("probe_switches", ("--cycles", "5")),
    Bench("rollback_command", ("--runs", "3", "--targets", "local"), quick_note="local target only"),
    Bench("crash_recovery", ("--targets", "local", "--phases", "switch"),
          quick_note="one kill (switch) on the local target"),
    Bench("signals", ("--targets", "local", "--phases", "load", "--signals", "SIGTERM"),
          quick_note="SIGTERM in the load stage on the local target"),
    Bench("faults", ("--only", "Prometheus down"), quick_note="one fault: Prometheus killed"),
    Bench("decisions", ("--scenarios", "healthy,errors-5pct", "--runs", "1", "--strategies", "blue-green"),
          quick_note="2 of 19 scenarios, blue-green only"),
    Bench("sequential_sim", ("--runs", "40"), quick_note="40 runs per scenario instead of 1,000"),
)


@dataclass
class Outcome:
    bench: str
    argv: tuple[str, ...]
    seconds: float = 0.0
    exit_code: int | None = None
    figures: tuple[Figure, ...] = ()
    note: str = ""
    problem: str = ""  # why there are no figures (or why they may be partial)
    skipped: str = ""
    log: Path | None = None
    sizes: str = ""

    @property
    def missed(self) -> list[Figure]:
        return [figure for figure in self.figures if figure.meets_target() is False]


Plan = list[tuple[Bench, tuple[str, ...] | None, str]]
"""Each bench to show, its arguments (None: skipped) and a note on its sizes."""


def discovered() -> list[str]:
    """Every bench script in bench/, by name (without .py): a file that runs as a script (a `__main__` guard);
    helpers such as a conftest a bench copies into its project are not benches."""
    return sorted(path.stem for path in BENCH_DIR.glob("*.py")
                  if path.name not in NOT_BENCHES and 'if __name__ == "__main__":' in path.read_text())


def make_plan(full: bool, only: Sequence[str], skip: Sequence[str]) -> Plan:
    scripts = discovered()
    known = {bench.name: bench for bench in BENCHES if bench.name in scripts}
    ordered = list(known.values()) + [Bench(name) for name in scripts if name not in known]
    plan: Plan = []
    for bench in ordered:
        if (only and bench.name not in only) or bench.name in skip:
            continue
        if full:
            plan.append((bench, bench.full, "full: " + (" ".join(bench.full) or "its defaults")))
        elif bench.quick is None:
            plan.append((bench, None, "skipped in --quick (--full runs it)"))
        else:
            sizes = " ".join(bench.quick) or "its defaults"
            plan.append((bench, bench.quick,
                                 f"quick: {sizes}" + (f" ({bench.quick_note})" if bench.quick_note else "")))
    return plan


def run_bench(bench: Bench, argv: tuple[str, ...], logs: Path, timeout_s: float) -> Outcome:
    outcome = Outcome(bench.name, argv)
    outcome.log = logs / f"{bench.name}.log"
    command = [sys.executable, str(BENCH_DIR / f"{bench.name}.py"), *argv, "--json"]
    started = time.monotonic()
    with outcome.log.open("w") as log:
        log.write(f"$ {' '.join(command)}\n")
        log.flush()
        try:
            result = subprocess.run(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=log, text=True,
                                    timeout=timeout_s)
        except subprocess.TimeoutExpired as exc:
            outcome.seconds = time.monotonic() - started
            stdout = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
            log.write(stdout)
            outcome.problem = f"timed out after {timeout_s:.0f}s"
            return outcome
        log.write(result.stdout)
    outcome.seconds = time.monotonic() - started
    outcome.exit_code = result.returncode
    try:
        parsed = parse_output(result.stdout)
    except ValueError as exc:
        outcome.problem = f"exit {result.returncode}, no figures: {exc}"
        return outcome
    outcome.figures, outcome.note = parsed.figures, parsed.note
    if result.returncode != 0:
        outcome.problem = f"exit {result.returncode} (its figures are shown; see the log)"
    return outcome


def format_value(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3f}".rstrip("0").rstrip(".") if abs(value) < 100 else f"{value:.0f}"
    return "-" if value is None else str(value)


def table(outcomes: Sequence[Outcome]) -> list[str]:
    lines = ["| bench | figure | value | unit | target | result |", "|---|---|---:|---|---|---|"]
    for outcome in outcomes:
        if outcome.skipped:
            lines.append(f"| {outcome.bench} | {outcome.skipped} | | | | skipped |")
            continue
        for figure in outcome.figures:
            verdict = {True: "pass", False: "FAIL", None: ""}[figure.meets_target()]
            name = figure.name + (f" ({figure.note})" if figure.note else "")
            lines.append(f"| {outcome.bench} | {name.replace('|', '/')} | {format_value(figure.value)} | "
                         f"{figure.unit} | {figure.target or ''} | {verdict} |")
        if outcome.problem:
            lines.append(f"| {outcome.bench} | {outcome.problem.replace('|', '/')} | | | | ERROR |")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="small sizes for the long benches (the default)")
    mode.add_argument("--full", action="store_true", help="every bench at its own defaults (an hour or more)")
    parser.add_argument("--only", default="", help="comma-separated bench names to run (default: all)")
    parser.add_argument("--skip", default="", help="comma-separated bench names not to run")
    parser.add_argument("--list", action="store_true", help="list the benches and their arguments, run nothing")
    parser.add_argument("--logs", type=Path, help="folder for each bench's output (default: a new one in /tmp)")
    parser.add_argument("--timeout-scale", type=float, default=1.0, help="multiply every bench's timeout")
    parser.add_argument("--json", action="store_true", help="also print the whole table as one JSON line last")
    args = parser.parse_args(argv)
    only = [name for name in args.only.split(",") if name]
    skip = [name for name in args.skip.split(",") if name]
    unknown = sorted(set(only + skip) - set(discovered()))
    if unknown:
        print(f"bench/run: unknown bench {', '.join(unknown)}; the benches are {', '.join(discovered())} "
              "(bench/run --list)", file=sys.stderr)
        return USAGE_ERROR
    plan = make_plan(args.full, only, skip)
    if args.list:
        for bench, _, sizes in plan:
            print(f"{bench.name:<18} {sizes}")
        return 0
    logs = args.logs or Path(tempfile.mkdtemp(prefix="releasegate-bench-"))
    logs.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()[0]
    started = time.monotonic()
    outcomes: list[Outcome] = []
    for number, (bench, bench_argv, sizes) in enumerate(plan, start=1):
        if bench_argv is None:
            outcomes.append(Outcome(bench.name, (), skipped=sizes, sizes=sizes))
            print(f"[{number}/{len(plan)}] {bench.name}: {sizes}", file=sys.stderr, flush=True)
            continue
        print(f"[{number}/{len(plan)}] {bench.name} {' '.join(bench_argv)} ...", file=sys.stderr, flush=True)
        timeout_s = (FULL_TIMEOUT_S if args.full else QUICK_TIMEOUT_S) * args.timeout_scale
        outcome = run_bench(bench, bench_argv, logs, timeout_s)
        outcome.sizes = sizes
        outcomes.append(outcome)
        state = outcome.problem or f"{len(outcome.figures)} figures"
        print(f"    {outcome.seconds:.0f}s, {state}", file=sys.stderr, flush=True)
    elapsed = time.monotonic() - started
    print(f"\nbench/run {'--full' if args.full else '--quick'}: {len(outcomes)} benches in {elapsed / 60:.1f} min on "
          f"{os.cpu_count()} cores, load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after; "
          f"logs in {logs}\n")
    for line in table(outcomes):
        print(line)
    print("\nSizes and notes:")
    for outcome in outcomes:
        details = "; ".join(part for part in (outcome.sizes, outcome.note) if part)
        print(f"- {outcome.bench} ({outcome.seconds:.0f}s): {details}")
    missed = [(o.bench, f.name) for o in outcomes for f in o.missed]
    broken = [o.bench for o in outcomes if o.problem]
    print(f"\n{len(missed)} figure(s) missed their target"
          + (f" ({'; '.join(f'{b}: {n}' for b, n in missed)})" if missed else "")
          + f", {len(broken)} bench(es) with a problem" + (f" ({', '.join(broken)})" if broken else ""))
    if args.json:
        print(json.dumps({"mode": "full" if args.full else "quick", "benches": [
            {"bench": o.bench, "seconds": round(o.seconds, 1), "exit_code": o.exit_code, "skipped": o.skipped,
             "problem": o.problem, "sizes": o.sizes, "note": o.note,
             "figures": [{**asdict(f), "met": f.meets_target()} for f in o.figures]} for o in outcomes]}))
    return 1 if missed or broken else 0


if __name__ == "__main__":
    sys.exit(main())
