"""Durations written as Prometheus and Alertmanager write them ("30s", "5m", "1h30m").

Used by the playbook models (remediator.playbook) and the configuration; a pydantic
``Duration`` field accepts such a string or a number of seconds and serialises back to
the string form, so a playbook survives a round trip through Temporal's payloads.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema

_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
DURATION_PATTERN = r"^((\d+(\.\d+)?)(ms|s|m|h|d|w))+$"


def parse_duration(value: Any) -> timedelta:
    """Parse ``"1h30m"``-style text (units ms, s, m, h, d, w) or a number of seconds.

    Raises:
        ValueError: with the text a person reads, e.g. ``expected a duration such as 30s, 5m or 1h``.
    """
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 30s, 5m or 1h")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError("expected a duration that is not negative")
        return timedelta(seconds=value)
    if isinstance(value, str):
        text = value.strip()
        if text and re.fullmatch(DURATION_PATTERN, text):
            seconds = sum(float(n) * _UNITS[u] for n, u in _PART.findall(text))
            return timedelta(seconds=seconds)
    raise ValueError(f"expected a duration such as 30s, 5m or 1h, got {value!r}")


def format_duration(value: timedelta) -> str:
    """Format as the shortest Prometheus-style text: 90 s -> ``"1m30s"``, 0.5 s -> ``"500ms"``."""
    total_ms = round(value.total_seconds() * 1000)
    if total_ms == 0:
        return "0s"
    out = []
    for unit, size in (("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)):
        n, total_ms = divmod(total_ms, size)
        if n:
            out.append(f"{n}{unit}")
    return "".join(out)


Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": DURATION_PATTERN,
            "description": "Duration as Prometheus writes it: 30s, 5m, 1h30m.",
        }
    ),
]
