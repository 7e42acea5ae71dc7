"""The Alertmanager webhook payload (version "4"), as Alertmanager's ``notify/webhook`` package
sends it (``notify/webhook.Message``, ``template.Alert``), and the strict reading of a body.

Alertmanager is trusted, but what an alert carries is not: labels and annotations come from
whatever the monitored workloads export. So a body is read as Alertmanager's Go structs would
read it, and anything Alertmanager can never send is refused (``parse_webhook``):

* the body is UTF-8 JSON, every string (key or value) valid UTF-8 (no lone surrogate from a
  ``\\ud800`` escape), no object with the same key twice (Go's ``encoding/json`` would keep the
  last one silently; ``"namespace":"prod","namespace":"kube-system"`` must not act on either),
  nesting at most ``MAX_DEPTH`` deep, integers of at most ``MAX_NUMBER_CHARS`` characters, no
  ``NaN``/``Infinity``;
* times are RFC 3339 strings with a zone (Go's ``time.Time`` ``UnmarshalJSON``), between
  ``EARLIEST`` and ``LATEST`` once in UTC; ``endsAt`` may also be Go's zero time
  (``0001-01-01T00:00:00Z``: Alertmanager hides the end of a firing alert);
* label and annotation names are Prometheus label names (``[a-zA-Z_][a-zA-Z0-9_]*``), label
  and annotation values strings.

Unknown fields are kept and ignored, so newer Alertmanagers (``notification_reason``,
``routeLabels``) are accepted. Validated by the intake (remediator.app.intake); no I/O here.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictStr, ValidationError, WrapValidator
from pydantic_core import PydanticCustomError

MAX_DEPTH = 32
"""Deepest nesting of arrays and objects accepted; a real message is 4 deep (message, alerts,
alert, labels)."""

MAX_NUMBER_CHARS = 20
"""Longest number accepted, in characters: ``truncatedAlerts`` is a Go ``uint64`` (20 digits)."""

EARLIEST = datetime(1970, 1, 1, tzinfo=timezone.utc)
LATEST = datetime(9000, 1, 1, tzinfo=timezone.utc)
"""Times outside [EARLIEST, LATEST) in UTC are refused: no clock sends them, and near the ends of
``datetime``'s range a zone offset or formatting overflows."""

MAX_PROBLEMS_SHOWN = 10
"""Validation problems listed in one answer; a body can hold thousands."""

LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
"""A Prometheus label name (prometheus/common ``model.LabelNameRE``); annotation names too."""

_RFC3339 = re.compile(
    r"(?P<date>\d{4}-\d{2}-\d{2})[Tt](?P<time>\d{2}:\d{2}:\d{2})(?:\.(?P<frac>\d{1,9}))?(?P<zone>[Zz]|[+-]\d{2}:\d{2})"
)
"""RFC 3339 ``date-time`` as Go's ``time.RFC3339Nano`` parses it: a zone is required."""

GO_ZERO_TIME = datetime(1, 1, 1, tzinfo=timezone.utc)
"""Go's zero ``time.Time``: the ``endsAt`` of every firing alert Alertmanager sends."""


# --------------------------------------------------------------------------- the body

NOT_JSON = "body is not valid JSON: "
NOT_A_MESSAGE = 'not an Alertmanager webhook message version "4": '
"""How every 400 / 422 answer begins; the field path and the reason follow."""


@dataclass
class PayloadRefused(Exception):
    """A body Alertmanager could not have sent. ``status`` 400 (not UTF-8 JSON) or 422 (JSON,
    but not a webhook message); ``message`` names the field (``alerts[0].labels``)."""

    status: int
    message: str

    def __str__(self) -> str:
        return self.message


class _Object(dict):
    """A JSON object as parsed, with the keys that appeared in it more than once."""

    duplicates: tuple[str, ...] = ()


class _Refused:
    """A JSON value refused where it was parsed (a number too long, ``NaN``); reported with its
    path once the whole body is parsed."""

    def __init__(self, status: int, reason: str) -> None:
        self.status = status
        self.reason = reason


def _object(pairs: list[tuple[str, Any]]) -> _Object:
    obj = _Object(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        obj.duplicates = tuple(dict.fromkeys(k for k, _ in pairs if k in seen or seen.add(k)))  # type: ignore[func-returns-value]
    return obj


def _integer(text: str) -> int | _Refused:
    if len(text) > MAX_NUMBER_CHARS:
        return _Refused(422, f"a number of {len(text)} characters is out of range (at most {MAX_NUMBER_CHARS})")
    return int(text)


def _float(text: str) -> float | _Refused:
    if len(text) > 2 * MAX_NUMBER_CHARS:
        return _Refused(422, f"a number of {len(text)} characters is out of range (at most {2 * MAX_NUMBER_CHARS})")
    return float(text)


def _constant(text: str) -> _Refused:
    return _Refused(400, f"{text} is not a JSON value")


_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def field_path(loc: tuple[Any, ...]) -> str:
    """``("alerts", 0, "labels")`` -> ``alerts[0].labels``; ``()`` -> ``(body)``; a key that is
    not a plain name is quoted and escaped: ``alerts[0].labels["serv-ice"]``."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif _NAME.fullmatch(str(part)):
            path += f".{part}" if path else str(part)
        else:
            path += f"[{_shown(str(part))}]"
    return path or "(body)"


def _shown(text: str) -> str:
    """A string of the payload as a message shows it: escaped, at most 40 characters."""
    shown = text if len(text) <= 40 else text[:40] + "..."
    return shown.encode("ascii", "backslashreplace").decode("ascii").join('""')


def _utf8_problem(text: str) -> str | None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        return f"{_shown(text)} is not valid UTF-8 (lone surrogate \\u{ord(text[err.start]):04x} at character {err.start})"
    return None


def _check(value: Any, loc: tuple[Any, ...]) -> None:
    """Raise PayloadRefused for the first value under ``loc`` Alertmanager could not have sent."""
    # An explicit stack, not recursion: a body within json's recursion limit may still be
    # hundreds of levels deep, and only MAX_DEPTH of them are walked.
    stack: list[tuple[Any, tuple[Any, ...]]] = [(value, loc)]
    while stack:
        value, loc = stack.pop()
        if isinstance(value, _Refused):
            raise PayloadRefused(value.status, f"{NOT_JSON if value.status == 400 else NOT_A_MESSAGE}{field_path(loc)}: {value.reason}")
        if isinstance(value, str):
            problem = _utf8_problem(value)
            if problem:
                raise PayloadRefused(422, f"{NOT_A_MESSAGE}{field_path(loc)}: {problem}")
            continue
        if not isinstance(value, (dict, list)):
            continue
        if len(loc) >= MAX_DEPTH:
            shown = field_path(loc[:4]) + ("..." if len(loc) > 4 else "")
            raise PayloadRefused(422, f"{NOT_A_MESSAGE}{shown}: nested deeper than {MAX_DEPTH} levels")
        if isinstance(value, list):
            stack.extend((item, (*loc, i)) for i, item in reversed(list(enumerate(value))))
            continue
        for key in getattr(value, "duplicates", ()):
            raise PayloadRefused(422, f"{NOT_A_MESSAGE}{field_path(loc)}: duplicate key {_shown(key)}")
        for key, item in reversed(list(value.items())):
            problem = _utf8_problem(key)
            if problem:
                raise PayloadRefused(422, f"{NOT_A_MESSAGE}{field_path(loc)}: key {problem}")
            stack.append((item, (*loc, key)))


def parse_json(body: bytes) -> Any:
    """The JSON value of ``body``, read as strictly as described in the module docstring.

    Raises:
        PayloadRefused: 400 ``body is not valid UTF-8: ...`` / ``body is not valid JSON: ...``;
            422 ``not an Alertmanager webhook message version "4": `` and then e.g.
            ``alerts[0].labels: duplicate key "namespace"``, ``...: nested deeper than 32
            levels``, ``truncatedAlerts: a number of 5000 characters is out of range (at most
            20)``, ``alerts[0].labels.service: "\\ud800" is not valid UTF-8 (lone surrogate ...)``.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as err:
        raise PayloadRefused(400, f"body is not valid UTF-8: byte 0x{body[err.start]:02x} at offset {err.start}") from None
    try:
        data = json.loads(text, object_pairs_hook=_object, parse_int=_integer, parse_float=_float, parse_constant=_constant)
    except json.JSONDecodeError as err:
        raise PayloadRefused(400, f"{NOT_JSON}{err}") from None
    except RecursionError:
        raise PayloadRefused(422, f"{NOT_A_MESSAGE}(body): nested deeper than {MAX_DEPTH} levels") from None
    _check(data, ())
    return data


# --------------------------------------------------------------------------- field types


def _time(value: Any, handler: Any, *, zero_ok: bool = False) -> datetime:
    if not isinstance(value, str):
        raise PydanticCustomError("rfc3339", "expected an RFC 3339 time string with a zone, got {got}", {"got": type(value).__name__})
    found = _RFC3339.fullmatch(value)
    if found is None:
        raise PydanticCustomError(
            "rfc3339", "expected an RFC 3339 time with a zone (2026-11-21T05:37:14.576Z), got {got}", {"got": _shown(value)}
        )
    frac = (found["frac"] or "")[:6].ljust(6, "0")  # Python keeps microseconds; Go sends nanoseconds
    zone = "+00:00" if found["zone"] in "Zz" else found["zone"]
    try:
        parsed = datetime.fromisoformat(f"{found['date']}T{found['time']}.{frac}{zone}")
    except ValueError as err:
        raise PydanticCustomError("rfc3339", "{got} is not a valid time: {err}", {"got": _shown(value), "err": str(err)}) from None
    if zero_ok and parsed == GO_ZERO_TIME:
        return parsed
    try:
        utc = parsed.astimezone(timezone.utc)
    except OverflowError:
        utc = None
    if utc is None or not EARLIEST <= utc < LATEST:
        raise PydanticCustomError(
            "time_range", "{got} is out of range: expected a time from {earliest} to before {latest}",
            {"got": _shown(value), "earliest": "1970-01-01T00:00:00Z", "latest": "9000-01-01T00:00:00Z"},
        )
    return parsed


def _ends_at(value: Any, handler: Any) -> datetime | None:
    return None if value is None else _time(value, handler, zero_ok=True)


def _label_name(value: Any, handler: Any) -> str:
    name = handler(value)
    if not LABEL_NAME.fullmatch(name):
        raise PydanticCustomError(
            "label_name", "{got} is not a valid label name: expected [a-zA-Z_][a-zA-Z0-9_]*", {"got": _shown(name)}
        )
    return name


RFC3339Time = Annotated[datetime, WrapValidator(_time)]
"""A time as Go's ``time.Time`` reads JSON: an RFC 3339 string with a zone, within range."""

EndsAt = Annotated[datetime | None, WrapValidator(_ends_at)]
"""``endsAt``: an RFC 3339 time within range, or Go's zero time (``0001-01-01T00:00:00Z``)."""

LabelName = Annotated[StrictStr, WrapValidator(_label_name)]
LabelSet = dict[LabelName, StrictStr]
"""Prometheus ``model.LabelSet`` (``KV`` in ``template.Data``): label names to string values."""


class WebhookAlert(BaseModel):
    """One alert of a webhook notification (Alertmanager ``template.Alert``)."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    status: Literal["firing", "resolved"]
    labels: LabelSet
    annotations: LabelSet = Field(default_factory=dict)
    starts_at: RFC3339Time = Field(alias="startsAt")
    ends_at: EndsAt = Field(None, alias="endsAt")
    generator_url: StrictStr = Field("", alias="generatorURL")
    fingerprint: StrictStr = Field(min_length=1, max_length=128)


class WebhookMessage(BaseModel):
    """Alertmanager webhook payload version "4" (``notify/webhook.Message``)."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    version: Literal["4"]
    group_key: StrictStr = Field(alias="groupKey")
    truncated_alerts: int = Field(0, alias="truncatedAlerts", ge=0, strict=True)
    status: Literal["firing", "resolved"]
    receiver: StrictStr
    group_labels: LabelSet = Field(default_factory=dict, alias="groupLabels")
    common_labels: LabelSet = Field(default_factory=dict, alias="commonLabels")
    common_annotations: LabelSet = Field(default_factory=dict, alias="commonAnnotations")
    external_url: StrictStr = Field("", alias="externalURL")
    alerts: list[WebhookAlert]


def validation_message(err: ValidationError) -> str:
    """Every problem of a failed ``WebhookMessage`` validation, each with its field path:
    ``not an Alertmanager webhook message version "4": alerts[0].startsAt: expected ...``."""
    parts = []
    errors = err.errors(include_url=False)
    for e in errors[:MAX_PROBLEMS_SHOWN]:
        loc = tuple(e["loc"])
        if loc and loc[-1] == "[key]":  # a dict key: the key is the field, its value is not at fault
            loc = loc[:-1]
        parts.append(f"{field_path(loc)}: {e['msg']}")
    if len(errors) > MAX_PROBLEMS_SHOWN:
        parts.append(f"and {len(errors) - MAX_PROBLEMS_SHOWN} more problems")
    return NOT_A_MESSAGE + "; ".join(parts)


def parse_webhook(body: bytes) -> WebhookMessage:
    """A webhook body as Alertmanager sends it, or PayloadRefused (400/422) naming the field.

    Raises:
        PayloadRefused: see ``parse_json``; 422 ``not an Alertmanager webhook message version
            "4": <field path>: <what was expected>; ...``.
    """
    data = parse_json(body)
    try:
        return WebhookMessage.model_validate(data)
    except ValidationError as err:
        raise PayloadRefused(422, validation_message(err)) from None
