"""CEL (Common Expression Language) for step conditions and confidence expressions.

A playbook may decide with CEL, over the evidence its diagnosis gathered and the alert:

* a step's ``when: "evidence.recent_rollout.signal"`` must yield a bool;
* ``confidence: {expression: "evidence.recent_rollout.signal ? 0.9 : 0.4"}`` a number in [0, 1].

Callers: remediator.playbook.loader checks every expression when a playbook is loaded
(``check_expression``: syntax, names, ``evidence.<name>`` declared in ``diagnosis``);
the ``assess`` activity (activities.diagnosis) evaluates them once the evidence is in
(``evaluate``). Expressions run in cel-python (``celpy``), a pure-Python implementation of
the CEL specification: no I/O, no loops beyond the finite macros (``all``, ``exists``,
``exists_one``, ``map``, ``filter``), so an expression cannot hurt the worker.

The names an expression can use (``CONTEXT_NAMES``):

* ``evidence``: map of diagnosis name -> ``{signal: bool, value: map, summary: string,
  error: string or null}`` (remediator.domain.messages.Evidence);
* ``alert``: ``{labels: map, annotations: map, status: string, fingerprint: string}``.
"""

from __future__ import annotations

import difflib
import math
import threading
from collections.abc import Iterable, Iterator, Mapping
from functools import lru_cache
from typing import Any

import celpy
import lark
from celpy import celtypes
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

CONTEXT_NAMES: tuple[str, ...] = ("evidence", "alert")
"""The top-level names a playbook's CEL expression may use."""

MACROS = frozenset({"all", "exists", "exists_one", "map", "filter"})
"""CEL macros whose first argument binds a variable (``list.exists(x, x > 1)``)."""

TYPE_NAMES = frozenset(
    {"bool", "bytes", "double", "duration", "int", "list", "map", "null_type", "string", "timestamp", "type", "uint"}
)
"""CEL's type identifiers, usable as values (``type(x) == int``)."""

_SYMBOLS = {
    "COLON": "':'",
    "COMMA": "','",
    "RPAR": "')'",
    "RSQB": "']'",
    "RBRACE": "'}'",
    "QMARK": "'?'",
}
"""Lark terminal names of the CEL grammar as a person writes them, for "expected ..." hints."""

_CHAIN = frozenset(
    {"expr", "conditionalor", "conditionaland", "relation", "addition", "multiplication", "unary", "member", "primary"}
)
"""Grammar rules that wrap a single operand when there is no operator."""


class CELError(ValueError):
    """A CEL expression could not be evaluated (missing key, wrong type, division by zero...).

    The message is celpy's, without its dump of the activation: e.g.
    ``no such member in mapping: 'recent_rollout'``.
    """


_ENVIRONMENT = celpy.Environment()
# celpy's parser is one shared Lark instance; parse under a lock so concurrent activity
# threads never share its state.
_PARSE_LOCK = threading.Lock()


def _syntax_message(text: str, err: celpy.CELParseError) -> str:
    """``CEL syntax error: unexpected '&' at column 21`` from celpy's error and its Lark cause."""
    cause = err.__context__
    where = ""
    line, column = getattr(err, "line", None), getattr(err, "column", None)
    if "\n" in text.strip() and line:
        where = f" at line {line}, column {column}"
    elif column:
        where = f" at column {column}"
    what = "unexpected input"
    if isinstance(cause, UnexpectedCharacters):
        what = f"unexpected character {cause.char!r}"
    elif isinstance(cause, UnexpectedEOF) or (
        isinstance(cause, UnexpectedToken) and cause.token.type == "$END"
    ):
        what = "unexpected end of expression"
        where = ""
    elif isinstance(cause, UnexpectedToken):
        what = f"unexpected {str(cause.token)!r}"
    if not text.strip():
        return "CEL syntax error: the expression is empty"
    expected: set[str] = set()
    if isinstance(cause, UnexpectedInput):
        expected = set(getattr(cause, "expected", None) or getattr(cause, "allowed", None) or ())
    hints = sorted(_SYMBOLS[e] for e in expected if e in _SYMBOLS)
    hint = f" (expected {' or '.join(hints)})" if hints and len(hints) == len(expected - {"__ANON_0"}) else ""
    return f"CEL syntax error: {what}{where}{hint}"


@lru_cache(maxsize=512)
def compile_expression(text: str) -> lark.Tree:
    """Parse ``text`` into celpy's syntax tree (cached by text).

    Raises:
        ValueError: ``CEL syntax error: ...`` with the column (and line, for multi-line text).
    """
    try:
        with _PARSE_LOCK:
            return _ENVIRONMENT.compile(text)
    except celpy.CELParseError as err:
        raise ValueError(_syntax_message(text, err)) from None


# --------------------------------------------------------------------------- static checks


def _bare_ident(tree: Any) -> str | None:
    """The identifier when ``tree`` is just a name (``evidence``, ``x``), else None."""
    while isinstance(tree, lark.Tree):
        if tree.data == "ident":
            return str(tree.children[0])
        if tree.data not in _CHAIN or len(tree.children) != 1:
            return None
        tree = tree.children[0]
    return None


def _string_literal(tree: Any) -> str | None:
    """The value of a plain string literal (``"recent_rollout"``), else None."""
    while isinstance(tree, lark.Tree):
        if tree.data == "literal":
            token = tree.children[0]
            if getattr(token, "type", "") != "STRING_LIT":
                return None
            raw = str(token)
            if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "\"'" and "\\" not in raw:
                return raw[1:-1]
            return None
        if tree.data not in _CHAIN or len(tree.children) != 1:
            return None
        tree = tree.children[0]
    return None


def _names(tree: lark.Tree) -> Iterator[str]:
    """Every free identifier used as a value, macro-bound variables excluded."""
    bound: set[str] = set()
    for sub in tree.iter_subtrees():
        if sub.data == "member_dot_arg" and len(sub.children) == 3 and str(sub.children[1]) in MACROS:
            args = sub.children[2]
            if isinstance(args, lark.Tree) and args.children:
                name = _bare_ident(args.children[0])
                if name:
                    bound.add(name)
    for sub in tree.iter_subtrees():
        if sub.data in ("ident", "dot_ident"):
            name = str(sub.children[-1])
            if name not in bound:
                yield name


def evidence_references(text: str) -> list[tuple[str, str]]:
    """The evidence an expression names, as ``(name, as written)`` in order of first use:
    ``evidence.recent_rollout`` and ``evidence["recent_rollout"]``.

    Raises:
        ValueError: a syntax error (as ``compile_expression``).
    """
    found: dict[str, str] = {}
    for sub in compile_expression(text).iter_subtrees_topdown():
        if sub.data == "member_dot" and len(sub.children) == 2 and _bare_ident(sub.children[0]) == "evidence":
            name = str(sub.children[1])
            found.setdefault(name, f"evidence.{name}")
        elif sub.data == "member_index" and len(sub.children) == 2 and _bare_ident(sub.children[0]) == "evidence":
            name = _string_literal(sub.children[1])
            if name is not None:
                found.setdefault(name, f'evidence["{name}"]')
    return list(found.items())


def check_expression(text: str, evidence: Iterable[str] | None = None) -> None:
    """Check an expression at load time: it parses, it uses no name other than ``evidence``
    and ``alert`` (and variables its macros bind), and, when ``evidence`` (the names the
    playbook's ``diagnosis`` declares) is given, every ``evidence.<name>`` it reads is one
    of them. Nothing is evaluated.

    Raises:
        ValueError: e.g. ``CEL syntax error: unexpected end of expression``,
            ``unknown name 'evidnce' (did you mean 'evidence'?); CEL expressions can use
            evidence and alert`` or ``evidence.recent_rolout is not declared in diagnosis
            (declared: recent_rollout, container_status)``.
    """
    if not isinstance(text, str):
        raise ValueError(f"expected a CEL expression (a string), got {type(text).__name__}")
    tree = compile_expression(text)
    for name in _names(tree):
        if name in CONTEXT_NAMES or name in TYPE_NAMES:
            continue
        close = difflib.get_close_matches(name, CONTEXT_NAMES, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown name {name!r}{hint}; CEL expressions can use evidence and alert")
    if evidence is None:
        return
    declared = list(evidence)
    for name, written in evidence_references(text):
        if name not in declared:
            close = difflib.get_close_matches(name, declared, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            listing = f"declared: {', '.join(declared)}" if declared else "the playbook has no diagnosis"
            raise ValueError(f"{written} is not declared in diagnosis{hint}; {listing}")


# --------------------------------------------------------------------------- evaluation


def to_python(value: Any) -> Any:
    """A celpy value as plain Python: BoolType -> bool, IntType/UintType -> int,
    DoubleType -> float, StringType -> str, maps and lists recursively; others unchanged."""
    if isinstance(value, celtypes.BoolType):
        return bool(value)
    if isinstance(value, (celtypes.IntType, celtypes.UintType)):
        return int(value)
    if isinstance(value, celtypes.DoubleType):
        return float(value)
    if isinstance(value, celtypes.StringType):
        return str(value)
    if isinstance(value, Mapping):
        return {to_python(k): to_python(v) for k, v in value.items()}
    if isinstance(value, list):
        return [to_python(v) for v in value]
    return value


def _eval_message(err: BaseException) -> str:
    text = str(err.args[0]) if err.args else type(err).__name__
    # celpy appends its whole activation to "undeclared reference" errors
    return text.split(" (in activation", 1)[0]


def _root_cause(err: BaseException, activation: Mapping[str, Any], depth: int = 0) -> str:
    """The message of the error that started it all. celpy reports an error inside the
    condition of ``c ? a : b`` as "no matching overload for _?_:_ applied to
    (CELEvalError, ...)"; evaluating the operands of the failing node again finds the
    error a person can act on (``no such member in mapping: 'x'``)."""
    message = _eval_message(err)
    tree = getattr(err, "tree", None)
    if "CELEvalError" not in message or not isinstance(tree, lark.Tree) or depth > 20:
        return message
    for child in tree.children:
        if not isinstance(child, lark.Tree):
            continue
        operand = child if child.data == "expr" else lark.Tree("expr", [child])
        try:
            value = _ENVIRONMENT.program(operand).evaluate(activation)
        except celpy.CELEvalError as inner:
            return _root_cause(inner, activation, depth + 1)
        except Exception:  # noqa: BLE001 - only looking for a better message
            continue
        if isinstance(value, celpy.CELEvalError):
            return _root_cause(value, activation, depth + 1)
    return message


def evaluate(text: str, context: Mapping[str, Any]) -> Any:
    """Evaluate ``text`` with ``context`` (JSON-like values: dict, list, str, int, float,
    bool, None) and return the result as plain Python (see ``to_python``).

    Raises:
        ValueError: a syntax error (as ``compile_expression``).
        CELError: evaluation failed, e.g. ``no such member in mapping: 'nope'``,
            ``modulus or divide by zero``, ``no such overload``.
    """
    tree = compile_expression(text)
    activation = {name: celpy.json_to_cel(value) for name, value in context.items()}
    try:
        result = _ENVIRONMENT.program(tree).evaluate(activation)
    except celpy.CELEvalError as err:
        raise CELError(_root_cause(err, activation)) from None
    except (ArithmeticError, TypeError, ValueError, LookupError, RecursionError) as err:
        raise CELError(f"{type(err).__name__}: {err}") from None
    if isinstance(result, celpy.CELEvalError):
        raise CELError(_root_cause(result, activation))
    return to_python(result)


def is_number(value: Any) -> bool:
    """True for an int or a finite float, not a bool (CEL ``true`` is not a number)."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    return isinstance(value, float) and math.isfinite(value)


def shown(value: Any) -> str:
    """A result as CEL would write it: ``true``, ``0.4``, ``"x"``, ``null``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, dict):
        return "a map"
    if isinstance(value, list):
        return "a list"
    return str(value)
