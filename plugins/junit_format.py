"""junit.xml in the JUnit schema CI servers validate against: a testcase's properties go into its <system-out>.

pytest writes a test's user properties (every check's verdict, value, threshold, ...) as <properties> inside
its <testcase>. The JUnit schema of Jenkins' xUnit plugin (junit-10.xsd, which pytest validates its own
`junit_family = xunit2` output against) allows <properties> only on <testsuite>: the xUnit plugin skips a
file that does not validate, GitLab ignores the element, and Jenkins' JUnit plugin keeps it only with
`keepProperties`. No `junit_family` changes that (xunit1/legacy only adds the `file` and `line` attributes),
so after pytest wrote the file, each testcase's properties become the first lines of its <system-out>,
which all of them read and show: a header line, then one `name<TAB>value` line per property, in order.

    ------------------------------- releasegate properties --------------------------------
    release.stage<TAB>load
    check.p(95) < 300ms.verdict<TAB>pass

The suite's own properties (release.decision, ...) stay in the suite's <properties>. `case_properties`
reads a testcase's properties back, whichever of the two ways they were written.
"""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree
from pathlib import Path

from releasegate.core.files import write_atomically

HEADER = " releasegate properties ".center(80, "-")
"""The first line of the block, in the style of pytest's own `Captured Out` sections in <system-out>."""

_ESCAPES = (("\\", "\\\\"), ("\t", "\\t"), ("\n", "\\n"), ("\r", "\\r"))
"""So that a name or value never splits a line or the tab between them, and reads back exactly."""


def _escape(text: str) -> str:
    for raw, escaped in _ESCAPES:
        text = text.replace(raw, escaped)
    return text


def _unescape(text: str) -> str:
    out, chars = [], iter(text)
    for char in chars:
        if char == "\\":
            following = next(chars, "")
            out.append({"\\": "\\", "t": "\t", "n": "\n", "r": "\r"}.get(following, "\\" + following))
        else:
            out.append(char)
    return "".join(out)


def format_properties(properties: list[tuple[str, str]]) -> str:
    """The <system-out> block of one testcase's properties, ending in an empty line."""
    return "\n".join([HEADER, *(f"{_escape(name)}\t{_escape(value)}" for name, value in properties), "", ""])


def parse_properties(output: str) -> list[tuple[str, str]]:
    """The properties of the block in a testcase's <system-out> text; [] without one."""
    lines = output.split("\n")
    if HEADER not in lines:
        return []
    found = []
    for line in lines[lines.index(HEADER) + 1:]:
        if "\t" not in line:  # the empty line that ends the block (pytest's sections may follow)
            break
        name, _, value = line.partition("\t")
        found.append((_unescape(name), _unescape(value)))
    return found


def case_properties(testcase: ElementTree.Element) -> list[tuple[str, str]]:
    """A testcase's properties, from its <system-out> block, or from <properties> in a file pytest wrote alone."""
    properties = [(p.get("name", ""), p.get("value", "")) for p in testcase.findall("properties/property")]
    for output in testcase.findall("system-out"):
        properties += parse_properties(output.text or "")
    return properties


def move_case_properties_to_output(path: Path, *, mode: int) -> None:
    """Rewrite the junit.xml pytest wrote at `path` so that no <testcase> has <properties> (see above).

    Whole or not at all (core.files): an OSError (a full disk) leaves pytest's file as it was and is raised.
    """
    root = ElementTree.parse(path).getroot()
    changed = False
    for testcase in root.iter("testcase"):
        for element in testcase.findall("properties"):
            properties = [(p.get("name", ""), p.get("value", "")) for p in element.findall("property")]
            testcase.remove(element)
            changed = True
            if not properties:
                continue
            block = format_properties(properties)
            output = testcase.find("system-out")
            if output is None:  # junit_logging adds its own <system-out>: one element keeps both, ours first
                output = ElementTree.SubElement(testcase, "system-out")
            output.text = block + (output.text or "")
    if changed:
        # The same declaration and serialisation as pytest's junitxml.
        text = '<?xml version="1.0" encoding="utf-8"?>' + ElementTree.tostring(root, encoding="unicode")
        write_atomically(path, text, mode=mode)
