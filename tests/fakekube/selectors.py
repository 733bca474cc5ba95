"""Label and field selectors: parsing (with apimachinery's error texts), matching and printing.

The label-selector parser mirrors ``k8s.io/apimachinery/pkg/labels`` (lexer + recursive parser), because
clients see its error messages verbatim in 400 responses, e.g. ``found '!', expected: ',' or 'end of
string'`` for ``app=web,slot=v2!``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .status import bad_request

# ---------------------------------------------------------------------------------------------------------
# Label selectors
# ---------------------------------------------------------------------------------------------------------

_SPECIAL = set("=!(),><")
_LABEL_VALUE_RE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_NAME_PART_RE = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_DNS1123_SUBDOMAIN_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")

LABEL_VALUE_MSG = (
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must "
    "start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used "
    "for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
)
NAME_PART_MSG = (
    "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an "
    "alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is "
    "'([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
)
PREFIX_MSG = (
    "prefix part a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or "
    "'.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for "
    "validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
)


def label_value_errors(value: str) -> list[str]:
    errs: list[str] = []
    if len(value) > 63:
        errs.append("must be no more than 63 characters")
    if not _LABEL_VALUE_RE.match(value):
        errs.append(LABEL_VALUE_MSG)
    return errs


def qualified_name_errors(key: str) -> list[str]:
    """``validation.IsQualifiedName``: optional DNS-subdomain prefix, then a 63-char name part."""
    errs: list[str] = []
    parts = key.split("/")
    if len(parts) == 1:
        name = parts[0]
    elif len(parts) == 2:
        prefix, name = parts
        if not prefix:
            errs.append("prefix part must be non-empty")
        elif len(prefix) > 253:
            errs.append("prefix part must be no more than 253 characters")
        elif not _DNS1123_SUBDOMAIN_RE.match(prefix):
            errs.append(PREFIX_MSG)
    else:
        return [
            "a qualified name must consist of alphanumeric characters, '-', '_' or '.', and must start and "
            "end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for "
            "validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]') with an optional DNS subdomain prefix "
            "and '/' (e.g. 'example.com/MyName')"
        ]
    if not name:
        errs.append("name part must be non-empty")
    elif len(name) > 63:
        errs.append("name part must be no more than 63 characters")
    elif not _NAME_PART_RE.match(name):
        errs.append(NAME_PART_MSG)
    return errs


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # "=", "==", "!=", "in", "notin", "exists", "!", "gt", "lt"
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        has = self.key in labels
        value = labels.get(self.key)
        if self.op in ("=", "==", "in"):
            return has and value in self.values
        if self.op in ("!=", "notin"):
            return not has or value not in self.values
        if self.op == "exists":
            return has
        if self.op == "!":
            return not has
        if self.op in ("gt", "lt"):
            if not has:
                return False
            try:
                lhs, rhs = int(str(value)), int(self.values[0])
            except ValueError:
                return False
            return lhs > rhs if self.op == "gt" else lhs < rhs
        return False

    def __str__(self) -> str:
        if self.op == "exists":
            return self.key
        if self.op == "!":
            return f"!{self.key}"
        if self.op in ("in", "notin"):
            return f"{self.key} {self.op} ({','.join(sorted(self.values))})"
        sym = {"gt": ">", "lt": "<"}.get(self.op, self.op)
        return f"{self.key}{sym}{self.values[0]}"


@dataclass(frozen=True)
class LabelSelector:
    requirements: tuple[Requirement, ...]
    # A nil selector (no ``selector``) selects nothing; an empty one selects everything.
    nothing: bool = False

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        if self.nothing:
            return False
        labels = labels or {}
        return all(r.matches(labels) for r in self.requirements)

    def __str__(self) -> str:
        return ",".join(str(r) for r in sorted(self.requirements, key=lambda r: r.key))


EVERYTHING = LabelSelector(())
NOTHING = LabelSelector((), nothing=True)


class _Lexer:
    def __init__(self, text: str) -> None:
        self.s = text
        self.pos = 0

    def lex(self) -> tuple[str, str]:
        while self.pos < len(self.s) and self.s[self.pos] in " \t\r\n":
            self.pos += 1
        if self.pos >= len(self.s):
            return ("EOS", "")
        ch = self.s[self.pos]
        if ch in _SPECIAL:
            for sym in ("!=", "==", "!", "(", ")", ",", "=", ">", "<"):
                if self.s.startswith(sym, self.pos):
                    self.pos += len(sym)
                    return ({"!": "NOT", "(": "OPEN", ")": "CLOSE", ",": "COMMA"}.get(sym, "OP"), sym)
        start = self.pos
        while self.pos < len(self.s) and self.s[self.pos] not in _SPECIAL and self.s[self.pos] not in " \t\r\n":
            self.pos += 1
        word = self.s[start : self.pos]
        if word in ("in", "notin"):
            return ("KW", word)
        return ("ID", word)


class _Parser:
    def __init__(self, text: str) -> None:
        lexer = _Lexer(text)
        self.items: list[tuple[str, str]] = []
        while True:
            tok = lexer.lex()
            self.items.append(tok)
            if tok[0] == "EOS":
                break
        self.i = 0

    def lookahead(self, values: bool) -> tuple[str, str]:
        tok, lit = self.items[self.i]
        if values and tok == "KW":
            tok = "ID"
        return tok, lit

    def consume(self, values: bool) -> tuple[str, str]:
        out = self.lookahead(values)
        if self.i < len(self.items) - 1:
            self.i += 1
        return out

    def parse(self) -> list[Requirement]:
        reqs: list[Requirement] = []
        while True:
            tok, lit = self.lookahead(True)
            if tok in ("ID", "NOT"):
                try:
                    reqs.append(self.requirement())
                except ValueError as err:
                    raise ValueError(f"unable to parse requirement: {err}") from None
                t, lit2 = self.consume(True)
                if t == "EOS":
                    return reqs
                if t == "COMMA":
                    t2, l2 = self.lookahead(True)
                    if t2 not in ("ID", "NOT"):
                        raise ValueError(f"found '{l2}', expected: identifier after ','")
                    continue
                raise ValueError(f"found '{lit2}', expected: ',' or 'end of string'")
            if tok == "EOS":
                return reqs
            raise ValueError(f"found '{lit}', expected: !, identifier, or 'end of string'")

    def requirement(self) -> Requirement:
        op = ""
        tok, lit = self.consume(True)
        if tok == "NOT":
            op = "!"
            tok, lit = self.consume(True)
        if tok != "ID":
            raise ValueError(f"found '{lit}', expected: identifier")
        key = lit
        key_errs = qualified_name_errors(key)
        if key_errs:
            raise ValueError(f'key: Invalid value: "{key}": {"; ".join(key_errs)}')
        t, _ = self.lookahead(True)
        if t in ("EOS", "COMMA"):
            return Requirement(key, op or "exists")
        if op == "!":
            raise ValueError(f"found '{self.lookahead(True)[1]}', expected: ',' or 'end of string'")
        tok, lit = self.consume(False)
        if tok == "KW":
            values = self.set_values()
            return self._checked(key, lit, values)
        if tok == "OP" and lit in ("=", "==", "!=", ">", "<"):
            t2, _l2 = self.lookahead(True)
            if t2 in ("EOS", "COMMA"):
                value = ""
            else:
                t3, l3 = self.consume(True)
                if t3 != "ID":
                    raise ValueError(f"found '{l3}', expected: identifier")
                value = l3
            op_name = {">": "gt", "<": "lt"}.get(lit, lit)
            return self._checked(key, op_name, (value,))
        raise ValueError(f"found '{lit}', expected: in, notin, =, ==, !=, gt, lt")

    def set_values(self) -> tuple[str, ...]:
        tok, lit = self.consume(True)
        if tok != "OPEN":
            raise ValueError(f"found '{lit}' expected: '('")
        tok, lit = self.lookahead(True)
        if tok == "CLOSE":
            self.consume(True)
            return ("",)
        if tok not in ("ID", "COMMA"):
            raise ValueError(f"found '{lit}', expected: ',', ')' or identifier")
        values: list[str] = []
        last_comma = True
        while True:
            tok, lit = self.consume(True)
            if tok == "ID":
                values.append(lit)
                last_comma = False
            elif tok == "COMMA":
                if last_comma:
                    values.append("")
                last_comma = True
            elif tok == "CLOSE":
                if last_comma and values:
                    values.append("")
                return tuple(values)
            else:
                raise ValueError(f"found '{lit}', expected: ',', or identifier")

    @staticmethod
    def _checked(key: str, op: str, values: tuple[str, ...]) -> Requirement:
        if op in ("gt", "lt"):
            try:
                int(values[0])
            except ValueError:
                raise ValueError(
                    f"values[0]: Invalid value: \"{values[0]}\": for 'Gt', 'Lt' operators, the value must be an integer"
                ) from None
        for v in values:
            errs = label_value_errors(v)
            if errs:
                raise ValueError(f'values[0][{key}]: Invalid value: "{v}": {"; ".join(errs)}')
        return Requirement(key, op, values)


def parse_label_selector(text: str | None) -> LabelSelector:
    """Parse a ``labelSelector`` query value; raises a 400 ApiError with apimachinery's message."""
    if not text:
        return EVERYTHING
    try:
        return LabelSelector(tuple(_Parser(text).parse()))
    except ValueError as err:
        raise bad_request(str(err)) from None


def selector_from_object(sel: Mapping[str, Any] | None) -> LabelSelector:
    """``metav1.LabelSelectorAsSelector``: nil selects nothing, ``{}`` selects everything."""
    if sel is None:
        return NOTHING
    reqs: list[Requirement] = []
    for key, value in (sel.get("matchLabels") or {}).items():
        reqs.append(Requirement(key, "=", (str(value),)))
    for expr in sel.get("matchExpressions") or []:
        op = str(expr.get("operator", ""))
        values = tuple(str(v) for v in expr.get("values") or [])
        mapped = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!"}.get(op)
        if mapped is None:
            return NOTHING
        reqs.append(Requirement(str(expr.get("key", "")), mapped, values))
    return LabelSelector(tuple(reqs))


def selector_from_map(selector: Mapping[str, str] | None) -> LabelSelector:
    """Service-style ``map[string]string`` selector: empty or nil selects nothing (for endpoints)."""
    if not selector:
        return NOTHING
    return LabelSelector(tuple(Requirement(k, "=", (str(v),)) for k, v in selector.items()))


def selector_string(sel: Mapping[str, Any] | None) -> str:
    """The string form a Scale's ``status.selector`` carries, e.g. ``app=web,slot=blue``."""
    parsed = selector_from_object(sel)
    return "" if parsed.nothing else str(parsed)


# ---------------------------------------------------------------------------------------------------------
# Field selectors
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FieldRequirement:
    field: str
    op: str  # "=" or "!="
    value: str


@dataclass(frozen=True)
class FieldSelector:
    requirements: tuple[FieldRequirement, ...]

    def matches(self, fields: Mapping[str, str]) -> bool:
        for req in self.requirements:
            actual = fields.get(req.field, "")
            if (actual == req.value) != (req.op == "="):
                return False
        return True

    def exact_name(self) -> str | None:
        for req in self.requirements:
            if req.field == "metadata.name" and req.op == "=":
                return req.value
        return None


EVERY_FIELD = FieldSelector(())


def _split_unescaped(text: str, sep: str) -> list[str]:
    parts: list[str] = []
    cur: list[str] = []
    escaped = False
    for ch in text:
        if escaped:
            cur.append(ch)
            escaped = False
        elif ch == "\\":
            cur.append(ch)
            escaped = True
        elif ch == sep:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return parts


def _unescape(value: str) -> str:
    return re.sub(r"\\(.)", r"\1", value)


def parse_field_selector(text: str | None, supported: Callable[[str], bool]) -> FieldSelector:
    """Parse ``fieldSelector``; unknown field labels give the 400 of ``ConvertFieldLabel``."""
    if not text:
        return EVERY_FIELD
    reqs: list[FieldRequirement] = []
    for term in _split_unescaped(text, ","):
        if not term:
            continue
        for op in ("!=", "==", "="):
            idx = term.find(op)
            if idx > 0:
                field, value = term[:idx], term[idx + len(op) :]
                reqs.append(FieldRequirement(field, "!=" if op == "!=" else "=", _unescape(value)))
                break
        else:
            raise bad_request(f"invalid selector: '{text}'; can't understand '{term}'")
    for req in reqs:
        if not supported(req.field):
            raise bad_request(f"field label not supported: {req.field}")
    return FieldSelector(tuple(reqs))
