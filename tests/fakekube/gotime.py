"""Go ``time.Parse`` for the two layouts the API uses, with Go's error messages.

``metav1.Time`` decodes with RFC 3339 (fractional seconds optional) and serialises with second precision;
``metav1.MicroTime`` decodes with ``2006-01-02T15:04:05.000000Z07:00`` (exactly six fractional digits) and
serialises with microseconds. Clients see the parse errors verbatim in 400 responses, e.g.
``parsing time "2025-01-01T00:00:00Z" as "2006-01-02T15:04:05.000000Z07:00": cannot parse "Z" as ".000000"``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

RFC3339 = "2006-01-02T15:04:05Z07:00"
RFC3339_MICRO = "2006-01-02T15:04:05.000000Z07:00"

# (layout element, kind, width); "lit" elements are literal prefixes that must match exactly.
_ELEMENTS: dict[str, list[tuple[str, str]]] = {
    RFC3339: [
        ("2006", "year"),
        ("-", "lit"),
        ("01", "month"),
        ("-", "lit"),
        ("02", "day"),
        ("T", "lit"),
        ("15", "hour"),
        (":", "lit"),
        ("04", "minute"),
        (":", "lit"),
        ("05", "second"),
        ("Z07:00", "tz"),
    ],
    RFC3339_MICRO: [
        ("2006", "year"),
        ("-", "lit"),
        ("01", "month"),
        ("-", "lit"),
        ("02", "day"),
        ("T", "lit"),
        ("15", "hour"),
        (":", "lit"),
        ("04", "minute"),
        (":", "lit"),
        ("05", "second"),
        (".000000", "frac6"),
        ("Z07:00", "tz"),
    ],
}


class GoTimeError(ValueError):
    pass


def _err(layout: str, value: str, elem: str, rest: str, extra: str = "") -> GoTimeError:
    if extra:
        return GoTimeError(f'parsing time "{value}"{extra}')
    return GoTimeError(f'parsing time "{value}" as "{layout}": cannot parse "{rest}" as "{elem}"')


def _digits(rest: str, n: int) -> tuple[int, str] | None:
    if len(rest) < n or not rest[:n].isdigit():
        return None
    return int(rest[:n]), rest[n:]


def go_parse(value: str, layout: str) -> datetime:
    """Parse like Go's ``time.Parse(layout, value)`` for RFC3339 and RFC3339Micro."""
    rest = value
    parts: dict[str, int] = {}
    micro = 0
    tz: timezone = UTC
    for elem, kind in _ELEMENTS[layout]:
        hold = rest
        if kind == "lit":
            if not rest.startswith(elem):
                raise _err(layout, value, elem, rest)
            rest = rest[len(elem) :]
            continue
        if kind == "year":
            got = _digits(rest, 4)
        elif kind in ("month", "day", "hour", "minute", "second"):
            got = _digits(rest, 2)
        elif kind == "frac6":
            if len(rest) < 7 or rest[0] != "." or not rest[1:7].isdigit():
                raise _err(layout, value, elem, hold)
            micro = int(rest[1:7])
            rest = rest[7:]
            continue
        else:  # tz
            if rest.startswith("Z"):
                rest = rest[1:]
                continue
            if len(rest) < 6 or rest[0] not in "+-" or rest[3] != ":" or not (rest[1:3] + rest[4:6]).isdigit():
                raise _err(layout, value, elem, hold)
            sign = 1 if rest[0] == "+" else -1
            tz = timezone(sign * timedelta(hours=int(rest[1:3]), minutes=int(rest[4:6])))
            rest = rest[6:]
            continue
        if got is None:
            raise _err(layout, value, elem, hold)
        parts[kind], rest = got
        if kind == "second" and layout == RFC3339 and rest.startswith(".") and len(rest) > 1 and rest[1].isdigit():
            # RFC3339 accepts an optional fractional second even though the layout has none.
            i = 1
            while i < len(rest) and rest[i].isdigit():
                i += 1
            frac = rest[1:i]
            micro = int((frac + "000000")[:6])
            rest = rest[i:]
    if rest:
        raise _err(layout, value, "", rest, extra=f': extra text: "{rest}"')
    ranges = {"month": (1, 12), "day": (1, 31), "hour": (0, 23), "minute": (0, 59), "second": (0, 59)}
    for key, (lo, hi) in ranges.items():
        if not lo <= parts[key] <= hi:
            raise GoTimeError(f'parsing time "{value}": {key} out of range')
    try:
        parsed = datetime(
            parts["year"],
            parts["month"],
            parts["day"],
            parts["hour"],
            parts["minute"],
            parts["second"],
            micro,
            tz,
        )
    except ValueError:
        raise GoTimeError(f'parsing time "{value}": day out of range') from None
    return parsed.astimezone(UTC)


def format_time(dt: datetime) -> str:
    """``metav1.Time`` JSON: UTC, second precision."""
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def format_microtime(dt: datetime) -> str:
    """``metav1.MicroTime`` JSON: UTC, exactly six fractional digits."""
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(value: str) -> datetime:
    return go_parse(value, RFC3339)
