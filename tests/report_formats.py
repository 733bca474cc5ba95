"""The reports of a release checked against their published formats: release-report.json against its JSON
Schema (plugins/schemas/release-report.schema.json), junit.xml against the JUnit schema CI servers read.

junit-10.xsd is not in the repository: scripts/setup.sh fetches it from pytest's source distribution into
.releasegate/cache/ (checksum-pinned), so the tests read it offline. The end-to-end tests check every report
they read through tests/release_project.py's JUnit.read.
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import xmlschema

from releasegate.plugins.report_schema import report_schema
from tests.local_cluster import PROJECT_ROOT

JUNIT_XSD = PROJECT_ROOT / ".releasegate" / "cache" / "junit-10.xsd"


@functools.cache
def junit_schema() -> xmlschema.XMLSchema:
    if not JUNIT_XSD.is_file():
        pytest.fail(f"the JUnit schema {JUNIT_XSD} is missing: run scripts/setup.sh, which fetches it from "
                    "pytest's source distribution", pytrace=False)
    return xmlschema.XMLSchema(str(JUNIT_XSD))


def junit_errors(path: Path) -> list[str]:
    """Each way the file breaks the JUnit schema, one line each: [] for a valid file."""
    return [f"{error.path}: {error.reason}" for error in junit_schema().iter_errors(str(path))]


def assert_valid_junit(path: Path) -> None:
    errors = junit_errors(path)
    assert not errors, f"{path} is not valid against {JUNIT_XSD.name}:\n" + "\n".join(errors[:10])


@functools.cache
def report_validator() -> jsonschema.Draft202012Validator:
    schema = report_schema()
    jsonschema.Draft202012Validator.check_schema(schema)  # the schema itself is a valid 2020-12 schema
    return jsonschema.Draft202012Validator(schema)


def report_errors(report: dict[str, Any]) -> list[str]:
    """Each way the report breaks its schema, one line each (where, then what): [] for a valid report."""
    return [f"{'/'.join(map(str, error.absolute_path)) or '(top)'}: {error.message}"
            for error in sorted(report_validator().iter_errors(report), key=lambda e: list(map(str, e.path)))]


def assert_valid_report(path: Path) -> None:
    errors = report_errors(json.loads(path.read_text()))
    assert not errors, f"{path} does not follow its JSON Schema:\n" + "\n".join(errors[:10])


# The JUnit property names (README "Property names"): dotted lowercase, `<area>.<subject>.<field>`, a stage
# label's step in brackets (`release.phase.analysis[10%]_s`); a check's or a watched SLO's expression as
# written, with its scope in brackets (`check.p(95) < 300ms [/api/checkout].verdict`); no name both a value and
# the prefix of other names.
_SEGMENT = r"[a-z][a-z0-9_]*(\[[0-9]+%\])?(_s)?"
_PROPERTY_NAME = re.compile(
    rf"(?!check\.){_SEGMENT}(\.{_SEGMENT})+"
    r"|check\.[^\n]+\.(verdict|value|threshold|subject|source|window|samples|bound|looks|decided_after_s|message"
    r"|interval|limits|arms)"
    r"|release\.finalize\.watch\.slo\.[^\n]+")


def property_convention_breaks(names: list[str]) -> list[str]:
    """The names of one testcase or suite that break the convention, each with why: [] when all follow it."""
    breaks = [f"{name!r}: not <area>.<subject>.<field> in dotted lowercase" for name in names
              if not _PROPERTY_NAME.fullmatch(name)]
    distinct = set(names)
    breaks += [f"{name!r}: both a value and the prefix of {other!r}" for name in sorted(distinct)
               for other in sorted(distinct) if other.startswith(name + ".")][:1]
    return breaks


def assert_property_names(names: list[str], where: str) -> None:
    breaks = property_convention_breaks(names)
    assert not breaks, f"property names of {where} break the convention: " + "; ".join(breaks)
