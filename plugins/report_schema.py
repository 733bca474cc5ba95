"""The JSON Schema of release-report.json, shipped in the package, and the fields that point a report at it.

The schema (plugins/schemas/release-report.schema.json, draft 2020-12) is the documented contract for tools
that read the report; README "Reports" says how it is versioned. A report names its schema in `$schema` (the
schema's `$id`) and `schema_version`, so a reader knows what it holds before reading further. Nothing here
validates at run time: the writer is the code in plugins/reporting.py, and the tests check it against this.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

SCHEMA_VERSION = "1.1"
"""major.minor: a new key or allowed value bumps the minor version, a removed or changed key the major one."""

SCHEMA_ID = f"urn:releasegate:release-report:{SCHEMA_VERSION}"

SCHEMA_RESOURCE = ("schemas", "release-report.schema.json")
"""Inside the package releasegate.plugins (package data, so an installed releasegate has it too)."""


def schema_fields() -> dict[str, str]:
    """The first keys of every report: which schema, which version."""
    return {"$schema": SCHEMA_ID, "schema_version": SCHEMA_VERSION}


def report_schema() -> dict[str, Any]:
    """The schema as a dict, from the installed package (for jsonschema, or any other validator)."""
    schema: dict[str, Any] = json.loads(
        resources.files("releasegate.plugins").joinpath(*SCHEMA_RESOURCE).read_text(encoding="utf-8"))
    return schema
