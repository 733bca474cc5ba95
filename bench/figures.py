"""The machine-readable figures of a bench: one JSON object on the last line of its output with `--json`.

    {"bench": "router_bench", "figures": [{"name": "...", "value": 0.83, "unit": "ratio", "target": ">= 0.9"}],
     "note": "..."}

Every bench in bench/ prints its prose as before and, given `--json`, this line last, so `bench/run` reads
figures without scraping prose. `target` is optional (`>= 0.95`, `<= 1`, `== 0`): where an issue gives one.
A value may be a number, a string or null (not measured: the note or the figure's own note says why).
"""

from __future__ import annotations

import json
import operator
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

Value = float | int | str | None

_OPERATORS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt, "==": operator.eq,
}


@dataclass(frozen=True)
class Figure:
    name: str
    value: Value
    unit: str = ""
    target: str | None = None  # "<op> <number>", e.g. ">= 0.95"
    note: str = ""

    def meets_target(self) -> bool | None:
        """True or False against the target; None without a target or without a numeric value."""
        if self.target is None or not isinstance(self.value, int | float) or isinstance(self.value, bool):
            return None
        op, bound = parse_target(self.target)
        return _OPERATORS[op](float(self.value), bound)


@dataclass(frozen=True)
class BenchFigures:
    bench: str
    figures: tuple[Figure, ...]
    note: str = ""


def parse_target(target: str) -> tuple[str, float]:
    """(">=", 0.95) from ">= 0.95"; ValueError naming the accepted form otherwise."""
    parts = target.split()
    if len(parts) != 2 or parts[0] not in _OPERATORS:
        raise ValueError(f"target {target!r} is not '<op> <number>' with op one of {', '.join(_OPERATORS)}")
    return parts[0], float(parts[1])


def json_line(bench: str, figures: Sequence[Figure], note: str = "") -> str:
    """The one line a bench prints last with --json."""
    for figure in figures:
        if figure.target is not None:
            parse_target(figure.target)  # a malformed target is the bench's bug: fail where it is written
    return json.dumps({"bench": bench, "figures": [asdict(figure) for figure in figures], "note": note})


def emit(bench: str, figures: Sequence[Figure], note: str = "") -> None:
    print(json_line(bench, figures, note), flush=True)


def parse_output(stdout: str) -> BenchFigures:
    """The figures from a bench's whole stdout: its last non-empty line. ValueError when it is not the object."""
    lines = [line for line in stdout.splitlines() if line.strip()]
    if not lines:
        raise ValueError("the bench printed nothing")
    try:
        data: Any = json.loads(lines[-1])
    except json.JSONDecodeError as exc:
        raise ValueError(f"the last line is not JSON ({exc.msg}): {lines[-1][:120]!r}") from None
    if not isinstance(data, dict) or "bench" not in data:
        raise ValueError(f"the last line is JSON but not a figures object: {lines[-1][:120]!r}")
    if not isinstance(data.get("figures"), list):
        return _flat(data)
    figures = []
    for entry in data["figures"]:
        if not isinstance(entry, dict) or "name" not in entry or "value" not in entry:
            raise ValueError(f"a figure without name or value: {entry!r}")
        target = entry.get("target")
        if target is not None:
            parse_target(str(target))
        figures.append(Figure(name=str(entry["name"]), value=entry["value"], unit=str(entry.get("unit", "")),
                              target=None if target is None else str(target), note=str(entry.get("note", ""))))
    return BenchFigures(bench=str(data["bench"]), figures=tuple(figures), note=str(data.get("note", "")))


def _flat(data: dict[str, Any]) -> BenchFigures:
    """A bench's object without a `figures` list: each top-level number is a figure (a name ending in `_s` is
    seconds), `goals_s`, if there, maps such names to upper bounds, and `repeat` (runs behind each figure) goes
    to the note. Nested values are not figures. (bench/release_bench.py prints this form.)"""
    found = data.get("goals_s")
    goals: dict[str, Any] = found if isinstance(found, dict) else {}
    figures = tuple(
        Figure(name=name, value=value, unit="s" if name.endswith("_s") else "",
               target=f"<= {goals[name]}" if isinstance(goals.get(name), int | float) else None)
        for name, value in data.items()
        if isinstance(value, int | float) and not isinstance(value, bool) and name != "repeat")
    return BenchFigures(bench=str(data["bench"]), figures=figures,
                        note=f"repeat {data['repeat']}" if "repeat" in data else "")
