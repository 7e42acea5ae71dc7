"""Load playbooks from YAML files, report every problem as ``file:line: field: message``,
match alerts to playbooks and render a playbook against an alert.

Callers: the worker and the intake load the playbook directory once with
``load_directory`` and, for each alert, call ``PlaybookSet.match`` then ``render``; the CLI's
``remediator validate`` calls ``validate_path`` and ``remediator schema`` prints
``json_schema()``.

Each file holds one playbook (remediator.playbook.Playbook). Loading checks, and reports
together, everything that can be known before an alert arrives: YAML syntax, the model
(unknown keys, types, durations, exactly one action per step), the Alertmanager matchers
(remediator.matchers), the template syntax (remediator.templating), that every action,
health check and evidence check can act on the target's kind, and the CEL of
``confidence.expression`` and of string ``when`` conditions (remediator.playbook.cel: syntax, names,
and that every ``evidence.<name>`` it reads is declared in ``diagnosis``). A problem reads,
for example::

    playbooks/scale.yaml:14: steps[0].health.timeout: expected a duration such as 30s, 5m or 1h, got 'soon'

where the line is that of the offending key in the file. In a step, a health block or a
diagnosis entry, a key written with no value (``rollout_restart:``, ``alert_resolved:``,
``container_status:``) means that action or check with its defaults, the same as ``{}``.

Templates are rendered in ``target``, ``steps`` and ``diagnosis`` (a ``promql`` evidence
query usually carries the alert's labels); CEL ``when`` conditions are not templates, they
read the alert themselves (``alert.labels.namespace``).
"""

from __future__ import annotations

import difflib
import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, get_args

import yaml
from pydantic import BaseModel, ValidationError

from remediator.playbook import cel
from remediator.playbook.matchers import Matcher, matches_all, parse_matchers
from remediator.domain.messages import AlertRef, TargetRef
from remediator.domain.actions import ACTION_KINDS, ACTION_NAMES
from remediator.domain.playbook import (
    CHECK_KINDS,
    CHECK_NAMES,
    DIAGNOSIS_KINDS,
    DIAGNOSIS_NAMES,
    KINDS_CHECKED,
    Diagnosis,
    HealthCheck,
    Playbook,
    PlaybookRef,
    Step,
    TargetKind,
)
from remediator.playbook.templating import (
    RenderError,
    alert_context,
    check_template,
    is_template,
    render_string,
)

__all__ = [
    "LoadedPlaybook",
    "PlaybookError",
    "PlaybookSet",
    "Problem",
    "RenderError",
    "json_schema",
    "load_directory",
    "load_playbook",
    "render",
    "validate_path",
]

PLAYBOOK_SUFFIXES = (".yaml", ".yml")
SCHEMA_ID = "urn:remediator:playbook"

Loc = tuple[str | int, ...]


# --------------------------------------------------------------------------- problems


@dataclass(frozen=True)
class Problem:
    """One problem in a playbook file. ``line`` is 1-based (None when not about a line);
    ``field`` is a dotted path with indexes (``steps[1].health.timeout``), ``""`` for the
    file as a whole."""

    file: str
    line: int | None
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        return f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"


class PlaybookError(ValueError):
    """One or more playbook files are invalid. ``problems`` holds every problem found;
    ``str()`` is one problem per line, as ``<file>:<line>: <field path>: <message>``."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


def field_path(loc: Iterable[str | int]) -> str:
    """``("steps", 1, "health", "timeout")`` -> ``"steps[1].health.timeout"``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


# --------------------------------------------------------------------------- YAML with lines


def _syntax_problem(file: str, err: yaml.YAMLError) -> Problem:
    """A YAML error as a Problem, with the line of the error and of its context."""
    if isinstance(err, yaml.MarkedYAMLError):
        mark = err.problem_mark or err.context_mark
        message = f"YAML syntax error: {err.problem or err.context}"
        if err.context and err.problem:
            context = err.context
            if err.context_mark is not None and err.problem_mark is not None:
                if err.context_mark.line != err.problem_mark.line:
                    context += f" that starts on line {err.context_mark.line + 1}"
            message += f" ({context})"
        if mark is not None:
            message += f" at column {mark.column + 1}"
        if "<block" in message:
            message += "; check the indentation"
        return Problem(file, mark.line + 1 if mark is not None else 1, "", message)
    return Problem(file, 1, "", f"YAML error: {err}")


def _index_lines(
    node: yaml.Node,
    path: Loc,
    lines: dict[Loc, int],
    problems: list[tuple[Loc, int, str]],
    seen: set[int],
) -> None:
    """Record the 1-based line of every key and list item under ``node`` by path, and note
    keys written twice in one mapping (PyYAML would silently keep the last)."""
    if id(node) in seen:  # an alias to an enclosing node
        return
    seen = seen | {id(node)}
    if isinstance(node, yaml.MappingNode):
        first: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node.value)
            line = key_node.start_mark.line + 1
            if key in first:
                problems.append((path + (key,), line, f"key given twice (first on line {first[key]})"))
            else:
                first[key] = line
                lines[path + (key,)] = line
            _index_lines(value_node, path + (key,), lines, problems, seen)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines[path + (i,)] = item.start_mark.line + 1
            _index_lines(item, path + (i,), lines, problems, seen)


class _Source:
    """One parsed file: its data, the line of every path, and the problems found so far."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.data: Any = None
        self.lines: dict[Loc, int] = {}
        self.problems: list[Problem] = []

    def line(self, loc: Loc) -> int:
        """Line of ``loc``, or of its nearest ancestor written in the file (1 at worst)."""
        for end in range(len(loc), 0, -1):
            if loc[:end] in self.lines:
                return self.lines[loc[:end]]
        return 1

    def add(self, loc: Loc, message: str) -> None:
        self.problems.append(Problem(self.file, self.line(loc), field_path(loc), message))

    def parse(self, text: str) -> bool:
        """Parse ``text``; False (with problems recorded) when there is nothing to validate."""
        try:
            nodes = list(yaml.compose_all(text, Loader=yaml.SafeLoader))
        except yaml.YAMLError as err:
            self.problems.append(_syntax_problem(self.file, err))
            return False
        nodes = [n for n in nodes if n is not None]
        if not nodes:
            self.problems.append(
                Problem(self.file, 1, "", "the file is empty; expected a playbook with name, match, target and steps")
            )
            return False
        if len(nodes) > 1:
            self.problems.append(
                Problem(
                    self.file,
                    nodes[1].start_mark.line + 1,
                    "",
                    f"expected one playbook per file, found {len(nodes)} YAML documents",
                )
            )
            return False
        try:
            # construct_document resolves merge keys (<<) in the node tree, so lines are
            # indexed afterwards, on the same tree the data came from.
            self.data = yaml.SafeLoader("").construct_document(nodes[0])
        except yaml.YAMLError as err:
            self.problems.append(_syntax_problem(self.file, err))
            return False
        duplicates: list[tuple[Loc, int, str]] = []
        _index_lines(nodes[0], (), self.lines, duplicates, set())
        for loc, line, message in duplicates:
            self.problems.append(Problem(self.file, line, field_path(loc), message))
        return True


# --------------------------------------------------------------------------- readable pydantic errors

_UNION_TAGS = {"int", "constrained-str"}
"""Pydantic names the members of ``TemplatedInt`` (int | template string) in error locations."""


def _model_at(loc: Loc) -> type[BaseModel] | None:
    """The playbook model class found at ``loc`` (list indexes skipped), e.g. ScaleParams."""

    def inner(annotation: Any) -> type[BaseModel] | None:
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            return annotation
        for arg in get_args(annotation):
            found = inner(arg)
            if found is not None:
                return found
        return None

    cls: type[BaseModel] | None = Playbook
    for part in loc:
        if isinstance(part, int):
            continue
        if cls is None or part not in cls.model_fields:
            return None
        cls = inner(cls.model_fields[part].annotation)
    return cls


def _unknown_field(loc: Loc) -> str:
    key = loc[-1]
    model = _model_at(loc[:-1])
    known = list(model.model_fields) if model is not None else []
    close = difflib.get_close_matches(str(key), known, n=1)
    if close:
        return f"unknown field {key!r} (did you mean {close[0]!r}?)"
    if model is Step:
        return (
            f"unknown field {key!r}; a step takes name, when, approval, one action ({', '.join(ACTION_NAMES)}), "
            "health, retries, on_failure and timeout"
        )
    if model is HealthCheck:
        return f"unknown field {key!r}; a health block takes one check ({', '.join(CHECK_NAMES)}), timeout and interval"
    if model is Diagnosis:
        return (
            f"unknown field {key!r}; a diagnosis takes name, one evidence check ({', '.join(DIAGNOSIS_NAMES)}) "
            "and timeout"
        )
    if not known:
        return f"unknown field {key!r}"
    return f"unknown field {key!r}; expected one of: {', '.join(known)}"


def _shown(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "nothing (null)"
    return repr(value)


def _readable(error: Mapping[str, Any], loc: Loc) -> str:
    """Pydantic's error as a sentence saying what was expected and what was found."""
    kind = error["type"]
    ctx = error.get("ctx") or {}
    got = _shown(error.get("input"))
    if kind == "missing":
        return "field required"
    if kind == "extra_forbidden":
        return _unknown_field(loc)
    if kind in ("value_error", "assertion_error"):
        return re.sub(r"^(Value|Assertion) error, ", "", error["msg"])
    if kind == "literal_error":
        return f"expected {ctx.get('expected')}, got {got}"
    if kind in ("int_parsing", "int_type", "int_from_float"):
        return f"expected an integer, got {got}"
    if kind in ("float_parsing", "float_type", "finite_number"):
        return f"expected a number, got {got}"
    if kind in ("bool_parsing", "bool_type"):
        return f"expected true or false, got {got}"
    if kind == "string_type":
        return f"expected a string, got {got}"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"expected a mapping, got {got}"
    if kind == "list_type":
        return f"expected a list, got {got}"
    if kind == "too_short":
        return f"expected at least {ctx.get('min_length')} item(s), got {ctx.get('actual_length')}"
    if kind == "string_too_short":
        return "must not be empty"
    if kind == "string_too_long":
        return f"expected at most {ctx.get('max_length')} characters, got {len(error.get('input') or '')}"
    bounds = {"greater_than_equal": ">=", "less_than_equal": "<=", "greater_than": ">", "less_than": "<"}
    if kind in bounds:
        limit = next(iter(ctx.values()), "?")
        return f"expected a number {bounds[kind]} {limit}, got {got}"
    if kind == "string_pattern_mismatch":
        if loc == ("name",):
            return (
                "expected a lowercase name of letters, digits and '-' that starts and ends "
                f"with a letter or digit (a Kubernetes object name), got {got}"
            )
        return f"expected a string matching {ctx.get('pattern')}, got {got}"
    return error["msg"]


def _validation_problems(err: ValidationError, *, rendered: Mapping[Loc, str] | None = None) -> list[tuple[Loc, str]]:
    """Pydantic errors as ``(loc, message)``; the two errors pydantic gives for a
    ``TemplatedInt`` (one per union member) become one. With ``rendered`` (loc -> template
    source), messages say which template produced the value."""
    out: dict[Loc, str] = {}
    for error in err.errors(include_url=False):
        loc: Loc = tuple(error["loc"])
        union = bool(loc) and loc[-1] in _UNION_TAGS
        if union:
            loc = loc[:-1]
            got = _shown(error.get("input"))
            if rendered is not None and loc in rendered:
                message = f"expected an integer, got {got} (rendered from {rendered[loc]!r})"
            else:
                message = f'expected an integer or a template such as "{{{{ labels.replicas }}}}", got {got}'
        else:
            message = _readable(error, loc)
            if rendered is not None and loc in rendered:
                message += f" (rendered from {rendered[loc]!r})"
        out.setdefault(loc, message)
    return list(out.items())


# --------------------------------------------------------------------------- checks beyond the model


def _templated_strings(data: Any) -> Iterator[tuple[Loc, str]]:
    """Every string under ``target``, ``steps`` and ``diagnosis`` that is a template, except
    step and diagnosis names and CEL ``when`` conditions."""

    def walk(node: Any, loc: Loc) -> Iterator[tuple[Loc, str]]:
        if isinstance(node, dict):
            for key, value in node.items():
                if len(loc) == 2 and loc[0] in ("steps", "diagnosis") and key in ("name", "when"):
                    continue
                yield from walk(value, loc + (key,))
        elif isinstance(node, list):
            for i, value in enumerate(node):
                yield from walk(value, loc + (i,))
        elif is_template(node):
            yield loc, node

    if isinstance(data, dict):
        for top in ("target", "steps", "diagnosis"):
            if top in data:
                yield from walk(data[top], (top,))


def _normalise(data: dict[str, Any]) -> dict[str, Any]:
    """A copy where ``action:`` / ``check:`` / evidence check written without a value means
    ``{}`` (defaults)."""
    diagnosis = data.get("diagnosis")
    if isinstance(diagnosis, list):
        data = {
            **data,
            "diagnosis": [
                {k: ({} if k in DIAGNOSIS_NAMES and v is None else v) for k, v in d.items()}
                if isinstance(d, dict)
                else d
                for d in diagnosis
            ],
        }
    steps = data.get("steps")
    if not isinstance(steps, list):
        return data
    new_steps = []
    for step in steps:
        if isinstance(step, dict):
            step = {k: ({} if k in ACTION_NAMES and v is None else v) for k, v in step.items()}
            health = step.get("health")
            if isinstance(health, dict):
                step["health"] = {k: ({} if k in CHECK_NAMES and v is None else v) for k, v in health.items()}
        new_steps.append(step)
    return {**data, "steps": new_steps}


def _check_kinds(data: dict[str, Any], source: _Source) -> None:
    """Every action and health check can act on the target's kind (ACTION_KINDS, CHECK_KINDS)."""
    target = data.get("target")
    kind = target.get("kind") if isinstance(target, dict) else None
    steps = data.get("steps")
    if kind not in get_args(TargetKind) or not isinstance(steps, list):
        return
    for i, step in enumerate(steps):
        if not isinstance(step, dict):
            continue
        actions = [a for a in ACTION_NAMES if a in step]
        if len(actions) == 1 and kind not in ACTION_KINDS[actions[0]]:
            action = actions[0]
            source.add(
                ("steps", i, action),
                f"action {action} cannot act on a {kind}; it works on {', '.join(ACTION_KINDS[action])}",
            )
        health = step.get("health")
        if isinstance(health, dict):
            checks = [c for c in CHECK_NAMES if c in health]
            if len(checks) == 1 and kind not in CHECK_KINDS[checks[0]]:
                check = checks[0]
                source.add(
                    ("steps", i, "health", check),
                    f"health check {check} cannot check a {kind}; it checks {', '.join(CHECK_KINDS[check])}",
                )
    diagnosis = data.get("diagnosis")
    for i, entry in enumerate(diagnosis if isinstance(diagnosis, list) else []):
        if not isinstance(entry, dict):
            continue
        checks = [c for c in DIAGNOSIS_NAMES if c in entry]
        if len(checks) == 1 and kind not in DIAGNOSIS_KINDS[checks[0]]:
            check = checks[0]
            source.add(
                ("diagnosis", i, check),
                f"evidence check {check} cannot examine a {kind}; it works on {', '.join(DIAGNOSIS_KINDS[check])}",
            )


def _declared_evidence(data: dict[str, Any]) -> list[str]:
    diagnosis = data.get("diagnosis")
    if not isinstance(diagnosis, list):
        return []
    return [d["name"] for d in diagnosis if isinstance(d, dict) and isinstance(d.get("name"), str)]


def _check_cel(data: dict[str, Any], source: _Source) -> None:
    """CEL in ``confidence.expression`` and string ``when`` conditions parses, uses only
    ``evidence`` and ``alert``, and reads only evidence ``diagnosis`` declares; weights name
    declared evidence too."""
    declared = _declared_evidence(data)
    confidence = data.get("confidence")
    if isinstance(confidence, dict):
        expression = confidence.get("expression")
        if isinstance(expression, str):
            try:
                cel.check_expression(expression, declared)
            except ValueError as err:
                source.add(("confidence", "expression"), str(err))
        weights = confidence.get("weights")
        if isinstance(weights, dict):
            for name in weights:
                if name not in declared:
                    listing = f"declared: {', '.join(declared)}" if declared else "the playbook has no diagnosis"
                    source.add(("confidence", "weights", name), f"evidence {name!r} is not declared in diagnosis; {listing}")
    steps = data.get("steps")
    for i, step in enumerate(steps if isinstance(steps, list) else []):
        if isinstance(step, dict) and isinstance(step.get("when"), str):
            try:
                cel.check_expression(step["when"], declared)
            except ValueError as err:
                source.add(("steps", i, "when"), str(err))


_RULE_LOCATIONS: tuple[tuple[str, Loc], ...] = (
    ("diagnosis names must be unique", ("diagnosis",)),
    ("confidence.weights", ("confidence", "weights")),
    ("steps ", ("steps",)),
)
"""Where to point a rule ``Playbook`` checks across fields (its error has no location):
the first key of the file its message is about."""


def _model_rule_loc(message: str, data: dict[str, Any]) -> Loc:
    """The location of a cross-field rule's error: for the approval rules, the ``approval``
    of the first step the rule is about."""
    for prefix, loc in _RULE_LOCATIONS:
        if message.startswith(prefix):
            break
    else:
        return ()
    steps = data.get("steps")
    if loc == ("steps",) and isinstance(steps, list):
        below = "below a confidence" in message
        for i, step in enumerate(steps):
            approval = step.get("approval", "never") if isinstance(step, dict) else "never"
            if (below and isinstance(approval, dict)) or (not below and approval not in ("never", None)):
                return ("steps", i, "approval")
    return loc


# --------------------------------------------------------------------------- loading


@dataclass(frozen=True)
class LoadedPlaybook:
    """A validated playbook, where it came from, and its parsed matchers."""

    playbook: Playbook
    ref: PlaybookRef
    matchers: tuple[Matcher, ...] = field(repr=False)

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether every matcher of the playbook matches the alert's ``labels``."""
        return matches_all(self.matchers, labels)


def _load(path: Path) -> tuple[LoadedPlaybook | None, _Source]:
    source = _Source(str(path))
    try:
        raw = path.read_bytes()
    except OSError as err:
        source.problems.append(Problem(str(path), None, "", f"cannot read the file: {err.strerror or err}"))
        return None, source
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        source.problems.append(Problem(str(path), line, "", "the file is not UTF-8 text"))
        return None, source
    if not source.parse(text):
        return None, source
    data = source.data
    if not isinstance(data, dict):
        source.add((), f"expected a playbook: a mapping with name, match, target and steps, got {_shown(data)}")
        return None, source

    matchers: list[Matcher] = []
    entries = data.get("match")
    if isinstance(entries, list):
        for i, entry in enumerate(entries):
            if isinstance(entry, str):
                try:
                    matchers.extend(parse_matchers([entry]))
                except ValueError as err:
                    source.add(("match", i), str(err))
    for loc, text_ in _templated_strings(data):
        try:
            check_template(text_)
        except ValueError as err:
            source.add(loc, str(err))
    data = _normalise(data)
    _check_kinds(data, source)
    _check_cel(data, source)

    playbook = None
    try:
        playbook = Playbook.model_validate(data, context={KINDS_CHECKED: True})
    except ValidationError as err:
        for loc, message in _validation_problems(err):
            if loc == ():
                loc = _model_rule_loc(message, data)
                # unknown weights are reported already, each on its own line, by _check_cel
                if loc == ("confidence", "weights") and any(
                    p.field.startswith("confidence.weights.") for p in source.problems
                ):
                    continue
            source.add(loc, message)
    if source.problems or playbook is None:
        return None, source
    ref = PlaybookRef(name=playbook.name, path=str(path), sha256=hashlib.sha256(raw).hexdigest())
    return LoadedPlaybook(playbook=playbook, ref=ref, matchers=tuple(matchers)), source


def _sorted(problems: Iterable[Problem]) -> list[Problem]:
    unique = dict.fromkeys(problems)
    return sorted(unique, key=lambda p: (p.file, p.line or 0))


def load_playbook(path: str | Path) -> LoadedPlaybook:
    """Load and validate one playbook file.

    Returns the playbook with its PlaybookRef (name, path as given, sha256 of the bytes).

    Raises:
        PlaybookError: with every problem in the file, each ``file:line: field: message``.
    """
    loaded, source = _load(Path(path))
    if loaded is None:
        raise PlaybookError(_sorted(source.problems))
    return loaded


class PlaybookSet:
    """The loaded playbooks, in name order.

    ``match`` returns the first playbook, in name order, whose matchers all match an
    alert's labels: when several could match, name them so that the one to prefer sorts
    first (or make their matchers exclusive).
    """

    def __init__(self, playbooks: Iterable[LoadedPlaybook]) -> None:
        """Raises ValueError when two playbooks have the same name."""
        by_name: dict[str, LoadedPlaybook] = {}
        for loaded in playbooks:
            other = by_name.get(loaded.ref.name)
            if other is not None:
                raise ValueError(
                    f"playbook name {loaded.ref.name!r} is used by both {other.ref.path} and {loaded.ref.path}"
                )
            by_name[loaded.ref.name] = loaded
        self._by_name = dict(sorted(by_name.items()))

    @property
    def playbooks(self) -> list[LoadedPlaybook]:
        """Every playbook, in name order."""
        return list(self._by_name.values())

    def match(self, labels: Mapping[str, str]) -> LoadedPlaybook | None:
        """The first playbook in name order whose matchers all match ``labels``, or None."""
        for loaded in self._by_name.values():
            if loaded.matches(labels):
                return loaded
        return None

    def by_name(self, name: str) -> LoadedPlaybook | None:
        """The playbook called ``name``, or None."""
        return self._by_name.get(name)

    def __len__(self) -> int:
        return len(self._by_name)

    def __iter__(self) -> Iterator[LoadedPlaybook]:
        return iter(self.playbooks)


def _playbook_files(directory: Path) -> list[Path]:
    return sorted(
        p
        for p in directory.iterdir()
        if p.suffix in PLAYBOOK_SUFFIXES and not p.name.startswith(".") and p.is_file()
    )


def load_directory(path: str | Path) -> PlaybookSet:
    """Load every ``*.yaml`` / ``*.yml`` file directly in ``path`` (not in subdirectories),
    one playbook per file.

    Raises:
        PlaybookError: with every problem of every file, and for a playbook name used by
            two files (pointing at the second file's ``name``); also when the directory
            does not exist or holds no playbook file.
    """
    directory = Path(path)
    if not directory.is_dir():
        raise PlaybookError([Problem(str(directory), None, "", "no such directory")])
    files = _playbook_files(directory)
    if not files:
        raise PlaybookError([Problem(str(directory), None, "", "no playbook files (*.yaml, *.yml) in this directory")])
    problems: list[Problem] = []
    loaded: list[LoadedPlaybook] = []
    first: dict[str, LoadedPlaybook] = {}
    for file in files:
        one, source = _load(file)
        problems.extend(_sorted(source.problems))
        if one is None:
            continue
        if one.ref.name in first:
            problems.append(
                Problem(
                    source.file,
                    source.line(("name",)),
                    "name",
                    f"playbook name {one.ref.name!r} is already used by {first[one.ref.name].ref.path}",
                )
            )
            continue
        first[one.ref.name] = one
        loaded.append(one)
    if problems:
        raise PlaybookError(problems)
    return PlaybookSet(loaded)


def validate_path(path: str | Path) -> list[str]:
    """Problems of a playbook file or directory as ``file:line: field: message`` lines;
    empty when everything is valid (``remediator validate [PATH]``)."""
    target = Path(path)
    try:
        if target.is_dir():
            load_directory(target)
        elif target.exists():
            load_playbook(target)
        else:
            return [f"{target}: no such file or directory"]
    except PlaybookError as err:
        return [str(p) for p in err.problems]
    return []


# --------------------------------------------------------------------------- rendering

_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def _check_object_name(value: str | None, what: str, pattern: re.Pattern[str], max_length: int) -> str | None:
    """Why ``value`` is not a valid Kubernetes name (apimachinery validation), or None."""
    if value is None:
        return None
    if not value:
        return f"rendered to an empty string; a {what} is required"
    if len(value) > max_length or not pattern.fullmatch(value):  # fullmatch: "$" also matches before a final "\n"
        return f"rendered to {value!r}, which is not a valid Kubernetes {what}"
    return None


def render(loaded: LoadedPlaybook, alert: AlertRef) -> tuple[TargetRef, Playbook]:
    """Render a playbook against an alert: the target and every templated field of the steps.

    Returns the concrete target and the rendered playbook (no template left), validated
    again so that a value of the wrong type is caught here, before any workflow starts.

    Raises:
        RenderError: ``playbook <name>: <field path>: <reason>``, e.g.
            ``playbook kube-pod-crashlooping: target.name: label "pod" is not set on the alert``.
    """
    name = loaded.ref.name
    context = alert_context(alert)
    data = loaded.playbook.model_dump(mode="json")
    sources: dict[Loc, str] = {}
    for loc, template in list(_templated_strings(data)):
        try:
            value = render_string(template, context)
        except RenderError as err:
            raise RenderError(f"playbook {name}: {field_path(loc)}: {err}") from None
        parent: Any = data
        for part in loc[:-1]:
            parent = parent[part]
        parent[loc[-1]] = value
        sources[loc] = template
    spec = data["target"]
    for what, pattern, limit in (("namespace", _DNS1123_LABEL, 63), ("name", _DNS1123_SUBDOMAIN, 253)):
        label = what if what == "namespace" else f"{spec['kind']} name"
        problem = _check_object_name(spec.get(what), label, pattern, limit)
        if problem:
            raise RenderError(f"playbook {name}: target.{what}: {problem}")
    try:
        playbook = Playbook.model_validate(data)
    except ValidationError as err:
        found = _validation_problems(err, rendered=sources)
        raise RenderError(
            f"playbook {name}: " + "; ".join(f"{field_path(loc) or 'playbook'}: {msg}" for loc, msg in found)
        ) from None
    target = playbook.target
    return TargetRef(kind=target.kind, namespace=target.namespace, name=target.name), playbook


# --------------------------------------------------------------------------- JSON Schema


def json_schema() -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of a playbook file, for editors and ``remediator schema``.

    It describes the shape (fields, types, enums, duration and template patterns); rules
    across fields (exactly one action per step, kinds, matchers, template syntax) are
    checked by ``load_playbook`` only.
    """
    schema = Playbook.model_json_schema(mode="validation")
    schema.pop("title", None)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "remediator playbook",
        **schema,
    }
