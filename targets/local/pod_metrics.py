"""Every pod's /metrics as one Prometheus text exposition, each sample labelled with its pod's labels.

Why: Prometheus 2.42 hands newly discovered targets to its scrapers only every 5 seconds (its discovery and
scrape managers tick on a fixed cycle; a reload does not shorten it), so a pod registered by file-based
discovery waited up to 5 s for its first scrape, and every release waited with it. The local cluster's
Prometheus scrapes instead one target that exists from the cluster's start, the admin API's
PODS_METRICS_PATH, which fetches each pod's /metrics at every scrape: a new pod is in the next scrape.

What Prometheus did for a pod target, this does for the pod's samples:
- the target's labels (app, slot, version, pod) go on every sample. A sample that has one of them already
  keeps it once when the values agree; when they differ the target's value wins and the sample's own moves
  to `exported_<name>`, as Prometheus renames a scraped label that clashes with a target label.
- `up` becomes POD_UP_METRIC: 1 for a pod whose /metrics answered with a valid exposition in this scrape, 0
  for one that did not (starting, crashed, or garbled output: such a pod's samples are all left out, as
  Prometheus drops a whole scrape it cannot parse, so one pod never spoils the others').

The text format (https://prometheus.io/docs/instrumenting/exposition_formats/): `# HELP name doc`,
`# TYPE name type`, other `#` lines are comments; samples are `name{a="b",...} value [timestamp]` or
`name value [timestamp]`. A metric family's HELP and TYPE may appear once in an exposition, before its
samples, so the families of all pods are merged: each one's HELP and TYPE once, then every pod's samples.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

PODS_METRICS_PATH = "/pods/metrics"
POD_UP_METRIC = "releasegate_pod_up"
POD_UP_HELP = "1 when the pod's /metrics answered in this scrape of the local cluster's pods, 0 when not."
# The sample names of one family (as in the text format's TYPE line) besides the family's own name.
_FAMILY_SUFFIXES = ("_total", "_created", "_bucket", "_sum", "_count", "_info", "_gcount", "_gsum")
_METRIC_NAME = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
# The types of the text format's TYPE line (version 0.0.4, which Prometheus 2.42 reads).
_TYPES = frozenset({"counter", "gauge", "histogram", "summary", "untyped"})
_TIMESTAMP = re.compile(r"-?[0-9]+")  # milliseconds since the epoch
# One `name="value"` pair of a label set and what ends it. The value is scanned as a quoted string with
# backslash escapes, so a `}`, `,` or escaped quote inside it is part of the value, never the set's end.
_LABEL_PAIR = re.compile(r'[ \t]*([A-Za-z_][A-Za-z0-9_]*)[ \t]*=[ \t]*"((?:[^"\\\n]|\\.)*)"[ \t]*([,}])')
_LABEL_SET_END = re.compile(r"[ \t]*}")
# Escapes of label values, as Prometheus's parser undoes them; any other backslash pair is kept as it is.
_UNESCAPES = {"\\\\": "\\", '\\"': '"', "\\n": "\n"}
_UNESCAPE = re.compile(r"\\[\\\"n]")


class PodScrape(NamedTuple):
    """One pod's part of a scrape: its target labels, and its /metrics text (None when it did not answer)."""

    labels: Mapping[str, str]
    text: str | None


class ExpositionError(ValueError):
    """A pod's /metrics is not the Prometheus text format."""


@dataclass
class _Family:
    help_line: str | None = None
    type: str | None = None
    samples: list[str] = field(default_factory=list)


def merge_expositions(scrapes: Iterable[PodScrape]) -> str:
    """One valid text exposition of every pod's samples, labelled, with each family's HELP and TYPE once.

    A family whose TYPE differs between pods keeps the first pod's type, and the samples of the pods that
    say otherwise are left out: two types for one name would make the whole exposition invalid.
    """
    families: dict[str, _Family] = {POD_UP_METRIC: _Family(f"# HELP {POD_UP_METRIC} {POD_UP_HELP}", "gauge")}
    up = families[POD_UP_METRIC].samples
    for scrape in scrapes:
        parsed = _pod_families(scrape)
        up.append(f"{POD_UP_METRIC}{{{_label_text(_with_target_labels([], scrape.labels))}}} "
                  f"{0 if parsed is None else 1}")
        for name, family in (parsed or {}).items():
            if name == POD_UP_METRIC:
                continue  # ours: a pod's own series of that name would make two of one pod's
            merged = families.setdefault(name, _Family())
            if merged.type is not None and family.type is not None and family.type != merged.type:
                continue
            merged.help_line = merged.help_line or family.help_line
            merged.type = merged.type or family.type
            merged.samples += family.samples
    lines: list[str] = []
    for name, family in families.items():
        if family.help_line is not None:
            lines.append(family.help_line)
        if family.type is not None:
            lines.append(f"# TYPE {name} {family.type}")
        lines += family.samples
    return "\n".join(lines) + "\n"


def _pod_families(scrape: PodScrape) -> dict[str, _Family] | None:
    """The pod's labelled families; None when it did not answer, or answered what is not an exposition."""
    if scrape.text is None:
        return None
    try:
        return _labelled_families(scrape.text, scrape.labels)
    except ExpositionError:
        return None  # down, as a target whose answer Prometheus cannot parse


def _labelled_families(text: str, labels: Mapping[str, str]) -> dict[str, _Family]:
    """The families of one pod's exposition, in its order, each sample with `labels` added."""
    families: dict[str, _Family] = {}
    current: str | None = None  # the family of the last HELP or TYPE line
    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw.rstrip("\r")
        if not line.strip():
            continue
        if line.startswith("#"):
            parts = line.split(None, 3)
            if len(parts) < 3 or parts[0] != "#" or parts[1] not in ("HELP", "TYPE"):
                continue  # a comment (or OpenMetrics' `# EOF`)
            current = _name(parts[2], number)
            family = families.setdefault(current, _Family())
            if parts[1] == "HELP":
                family.help_line = family.help_line or line
            elif len(parts) != 4 or parts[3].strip() not in _TYPES or family.type is not None:
                raise ExpositionError(f"line {number}: a TYPE line needs one known type, once per family: "
                                      f"{line!r}")
            else:
                family.type = parts[3].strip()
            continue
        name, sample = _labelled_sample(line, labels, number)
        family_name = current if current is not None and _belongs(name, current) else name
        families.setdefault(family_name, _Family()).samples.append(sample)
    return families


def _belongs(sample_name: str, family: str) -> bool:
    """Whether a sample of that name is one of the family's (`x_bucket` of the histogram `x`, say)."""
    return sample_name == family or (sample_name.startswith(family) and
                                     sample_name[len(family):] in _FAMILY_SUFFIXES)


def _labelled_sample(line: str, labels: Mapping[str, str], number: int) -> tuple[str, str]:
    """The sample's metric name, and the sample with `labels` added (see the module's docstring)."""
    match = _METRIC_NAME.match(line)
    if match is None:
        raise ExpositionError(f"line {number}: not a sample: {line!r}")
    name, position = match.group(), match.end()
    own: list[tuple[str, str]] = []  # (name, escaped value) as the pod wrote them
    if line.startswith("{", position):
        position += 1
        end = _LABEL_SET_END.match(line, position)
        while end is None:
            pair = _LABEL_PAIR.match(line, position)
            if pair is None:
                raise ExpositionError(f"line {number}: a label set that does not parse: {line!r}")
            own.append((pair.group(1), pair.group(2)))
            position = pair.end()
            # `}` ends the set; after `,` another pair, or the `}` of a set written with a trailing comma.
            end = pair if pair.group(3) == "}" else _LABEL_SET_END.match(line, position)
        position = end.end()
        if len({label for label, _ in own}) != len(own):  # Prometheus would fail the scrape of every pod
            raise ExpositionError(f"line {number}: a label twice in one sample: {line!r}")
    elif not line[position:position + 1].isspace():
        raise ExpositionError(f"line {number}: {line!r} is not a metric name and a value")
    value_and_time = line[position:].split()
    if not _is_value_and_time(value_and_time):
        raise ExpositionError(f"line {number}: a sample needs a number and at most a timestamp: {line!r}")
    return name, f"{name}{{{_label_text(_with_target_labels(own, labels))}}} {' '.join(value_and_time)}"


def _is_value_and_time(fields: list[str]) -> bool:
    """Whether `fields` are a sample's value (a float, `NaN` and `+Inf` included) and optional timestamp."""
    if not 1 <= len(fields) <= 2 or (len(fields) == 2 and not _TIMESTAMP.fullmatch(fields[1])):
        return False
    try:
        float(fields[0])
    except ValueError:
        return False
    return True


def _with_target_labels(own: list[tuple[str, str]], labels: Mapping[str, str]) -> list[tuple[str, str]]:
    """The sample's labels (escaped values) with the target's added: the target's value wins a clash."""
    taken = {name for name, _ in own}
    result: list[tuple[str, str]] = []
    for name, escaped in own:
        if name in labels and _unescape(escaped) != labels[name]:
            exported = f"exported_{name}"
            while exported in taken or exported in labels:
                exported = f"exported_{exported}"
            taken.add(exported)
            result.append((exported, escaped))
        elif name not in labels:
            result.append((name, escaped))
    return result + [(name, escape_label_value(value)) for name, value in labels.items()]


def _label_text(pairs: Iterable[tuple[str, str]]) -> str:
    """`a="x",b="y"` from names and values that are escaped already (escape_label_value)."""
    return ",".join(f'{name}="{value}"' for name, value in pairs)


def escape_label_value(value: str) -> str:
    """A label value as the text format writes it: backslash, double quote and newline escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _unescape(escaped: str) -> str:
    return _UNESCAPE.sub(lambda match: _UNESCAPES[match.group()], escaped)


def _name(name: str, number: int) -> str:
    if not _METRIC_NAME.fullmatch(name):
        raise ExpositionError(f"line {number}: {name!r} is not a metric name")
    return name
