"""bench/run: the figures line every bench prints with --json, and the command's plan (nothing is measured)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from bench.figures import Figure, json_line, parse_output
from bench.run_all import BENCH_DIR, discovered


def test_a_figures_line_round_trips_and_is_judged_against_its_target() -> None:
    line = json_line("demo", [Figure("ratio", 0.93, "ratio", ">= 0.95"), Figure("speed-up", 3.2, "x", ">= 3"),
                              Figure("not measured", None, "s", ">= 1"), Figure("plain", 12, "s")])
    parsed = parse_output(f"prose first\n{line}\n")
    assert parsed.bench == "demo"
    assert [figure.meets_target() for figure in parsed.figures] == [False, True, None, None]


def test_a_flat_object_gives_its_numbers_as_figures_with_goals_as_upper_bounds() -> None:
    line = json.dumps({"bench": "release", "repeat": 2, "overhead_persistent_s": 4.5, "wall_persistent_s": 40.0,
                       "goals_s": {"overhead_persistent_s": 4.0}, "persistent": {"nested": 1.0}})
    parsed = parse_output(line)
    assert [(f.name, f.unit, f.target, f.meets_target()) for f in parsed.figures] == [
        ("overhead_persistent_s", "s", "<= 4.0", False), ("wall_persistent_s", "s", None, None)]
    assert parsed.note == "repeat 2"


@pytest.mark.parametrize("stdout", ["", "only prose\n", '{"figures": []}\n',
                                    '{"bench": "x", "figures": [{"name": "a", "value": 1, "target": "about 3"}]}'])
def test_output_without_a_valid_figures_line_is_refused(stdout: str) -> None:
    with pytest.raises(ValueError):
        parse_output(stdout)


def test_every_bench_takes_json() -> None:
    """bench/run runs every script with --json and reads only its last line: a bench without it has no row."""
    missing = [name for name in discovered() if '"--json"' not in (BENCH_DIR / f"{name}.py").read_text()]
    assert not missing, f"add --json (bench/figures.py) to: {', '.join(missing)}"


def test_bench_run_lists_every_bench_and_refuses_an_unknown_one() -> None:
    listed = subprocess.run([str(BENCH_DIR / "run"), "--list"], capture_output=True, text=True, timeout=30)
    assert listed.returncode == 0, listed.stderr
    assert [line.split()[0] for line in listed.stdout.splitlines()][:4] == [
        "load_vs_locust", "router_bench", "release_bench", "xdist_io"]
    assert {line.split()[0] for line in listed.stdout.splitlines()} == set(discovered())
    assert "decisions" in listed.stdout and "quick:" in listed.stdout
    unknown = subprocess.run([sys.executable, str(BENCH_DIR / "run_all.py"), "--only", "nope"], capture_output=True,
                             text=True, timeout=30)
    assert unknown.returncode == 4
    assert "unknown bench nope" in unknown.stderr
