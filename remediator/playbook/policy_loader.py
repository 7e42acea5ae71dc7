"""Load the policy file (remediator.domain.policy) with the playbooks' error format.

``load_policy(path)`` reads one YAML file and validates it; every problem is reported as
``file:line: field: message`` (the lines of remediator.playbook.loader), and the worker refuses
to start on any. ``policy_json_schema()`` is what ``remediator schema --policy`` prints.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, get_args

from pydantic import BaseModel, ValidationError

from remediator.domain.policy import Policy
from remediator.playbook.loader import PlaybookError, Problem, _sorted, _Source, _validation_problems

POLICY_SCHEMA_ID = "https://remediator.dev/schema/policy.json"


class PolicyError(PlaybookError):
    """The policy file is invalid; ``problems`` lists each ``file:line: field: message``."""


def load_policy(path: str | Path) -> Policy:
    """Load and validate the policy file.

    Raises:
        PolicyError: the file is missing, unreadable, not YAML, not one mapping, or breaks the
            model; with every problem found, each as ``file:line: field: message``.
    """
    file = Path(path)
    source = _Source(str(file))
    try:
        raw = file.read_bytes()
    except OSError as err:
        raise PolicyError([Problem(str(file), None, "", f"cannot read the policy file: {err.strerror or err}")]) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise PolicyError([Problem(str(file), raw[: err.start].count(b"\n") + 1, "", "the file is not UTF-8 text")]) from None
    if not text.strip():
        # An empty policy would mean "the defaults"; say so rather than guess what was meant.
        raise PolicyError([Problem(str(file), 1, "", "the policy file is empty; expected namespaces, limits and gitops")])
    if not source.parse(text) or source.problems:
        # also a key given twice: YAML would keep the last value, and that may lift a limit
        raise PolicyError(_sorted(_policy_words(source.problems)))
    data: Any = source.data
    if not isinstance(data, dict):
        source.add((), "expected a policy: a mapping with namespaces, limits and gitops")
        raise PolicyError(_sorted(source.problems))
    try:
        policy = Policy.model_validate(data)
    except ValidationError as err:
        for loc, message in _validation_problems(err):
            source.add(*_policy_problem(err, loc, message, data))
        raise PolicyError(_sorted(source.problems)) from None
    return policy


def _policy_problem(err: ValidationError, loc: tuple, message: str, data: Any) -> tuple[tuple, str]:
    """The policy's own words for what the playbook loader words for playbooks: unknown fields
    named against the policy's models, an unknown action at its own line."""
    kinds = {tuple(e["loc"]): e["type"] for e in err.errors(include_url=False)}
    if kinds.get(loc) == "extra_forbidden":
        return loc, _unknown_field(loc)
    if loc[-1:] == ("actions",) and message.startswith("unknown action "):
        name = message.split("'")[1]
        return loc + (name,), message
    return loc, message


def _model_at(loc: tuple) -> type[BaseModel] | None:
    model: Any = Policy
    for part in loc:
        field = model.model_fields.get(part) if isinstance(part, str) else None
        if field is None:
            return None
        inner = field.annotation
        candidates = [inner, *get_args(inner)]
        model = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
        if model is None:
            return None
    return model


def _unknown_field(loc: tuple) -> str:
    key = str(loc[-1])
    model = _model_at(loc[:-1])
    known = list(model.model_fields) if model is not None else []
    close = difflib.get_close_matches(key, known, n=1)
    if close:
        return f"unknown field {key!r} (did you mean {close[0]!r}?)"
    return f"unknown field {key!r}; expected one of: {', '.join(known)}" if known else f"unknown field {key!r}"


def _policy_words(problems: list[Problem]) -> list[Problem]:
    words = {
        "one playbook per file": "one policy per file",
        "the file is empty; expected a playbook with name, match, target and steps":
            "the policy file is empty; expected namespaces, limits and gitops",
    }
    out = []
    for p in problems:
        message = p.message
        for old, new in words.items():
            message = message.replace(old, new)
        out.append(Problem(p.file, p.line, p.field, message))
    return out


def validate_policy(path: str | Path) -> list[str]:
    """Problems of a policy file as ``file:line: field: message`` lines; empty when valid."""
    try:
        load_policy(path)
    except PolicyError as err:
        return [str(p) for p in err.problems]
    return []


def policy_json_schema() -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of the policy file (``remediator schema --policy``)."""
    schema = Policy.model_json_schema(mode="validation")
    schema.pop("title", None)
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": POLICY_SCHEMA_ID, "title": "remediator policy", **schema}
