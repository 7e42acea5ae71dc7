"""Alertmanager label matchers: parse ``name="value"``-style text and test alert labels.

The playbook loader (remediator.playbook.loader) parses every playbook's ``match:`` list with
``parse_matchers`` at load time, and ``PlaybookSet.match`` calls ``matches_all`` for each
alert the intake receives.

Syntax and semantics are those of Alertmanager's classic matcher parser and matcher type
(``pkg/labels/parse.go`` and ``pkg/labels/matcher.go``):

* ``name="value"``, ``name!="value"``, ``name=~"regex"``, ``name!~"regex"``; the label name
  is a Prometheus label name (``[a-zA-Z_:][a-zA-Z0-9_:]*``); whitespace around each of the
  three tokens is ignored;
* the value may be double-quoted or not (``severity=critical``); inside it the OpenMetrics
  escapes ``\\"``, ``\\n`` and ``\\\\`` apply, and any other backslash is literal;
  an unescaped ``"`` inside the value is an error;
* one list entry may hold several matchers separated by commas outside quotes, optionally
  in braces (``{alertname="X", severity="critical"}``), as ``ParseMatchers`` accepts;
* a regex is fully anchored, as Alertmanager compiles ``^(?:regex)$``;
* a label the alert does not have is matched as the empty string, so ``team=""`` matches
  alerts without a ``team`` label and ``team!=""`` requires it.

Regexes run on Python's ``re``, not Go's RE2. For the patterns people write in matchers
the two agree; where they differ this module fails closed rather than match what
Alertmanager would not: lookarounds and backreferences, which RE2 rejects, are rejected
here too, and so is a value that compiles only once wrapped in the anchors (``a)|(b``,
which Alertmanager would turn into an unanchored alternation); anchoring uses
``re.fullmatch`` so that, as in Go, ``$`` never matches before a trailing newline. Remaining differences: RE2 accepts ``\\pL``-style Unicode classes and
``\\z``, which ``re`` rejects (the playbook then fails to load, with the reason), and
``re``'s case-folding under ``(?i)`` follows Python's Unicode tables.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterable, Literal, Mapping

try:  # Python's own regex parser, used to refuse constructs RE2 does not have.
    import re._parser as _sre_parse  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - Python < 3.11
    import sre_parse as _sre_parse  # type: ignore[no-redef]

MatchType = Literal["=", "!=", "=~", "!~"]

# As Alertmanager's parse.go; '=~' is tried before '=' so that '~' is not left in the value.
# Go's \s is [\t\n\f\r ] (ASCII only), spelled out because Python's \s is Unicode-wide.
_WS = r"[\t\n\f\r ]"
_MATCHER_RE = re.compile(
    rf"^{_WS}*([a-zA-Z_:][a-zA-Z0-9_:]*){_WS}*(=~|=|!=|!~){_WS}*(.*?){_WS}*$", re.DOTALL
)
_FORMS = 'name="value", name!="value", name=~"regex" or name!~"regex"'


def _refuse_non_re2(node: object, source: str) -> None:
    """Raise ValueError for lookarounds and backreferences, which Go's RE2 does not support."""
    refused = {
        _sre_parse.ASSERT: "lookaround assertions",
        _sre_parse.ASSERT_NOT: "lookaround assertions",
        _sre_parse.GROUPREF: "backreferences",
        _sre_parse.GROUPREF_EXISTS: "conditional backreferences",
    }
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, (list, tuple)) or hasattr(item, "data"):
            items = item.data if hasattr(item, "data") else item
            for sub in items:
                # Opcodes are compared by identity: they are ints, and repeat bounds such
                # as the 1 of {1,10} sit in the same tuple position.
                if isinstance(sub, tuple) and sub:
                    what = next((w for op, w in refused.items() if sub[0] is op), None)
                    if what:
                        raise ValueError(
                            f"invalid regex '{source}': {what} are not supported by "
                            "Alertmanager (Go RE2 syntax)"
                        )
                stack.append(sub)


@dataclass(frozen=True)
class Matcher:
    """One Alertmanager matcher: ``name``, ``type`` (``=``, ``!=``, ``=~``, ``!~``) and ``value``.

    ``value`` is the unescaped value (for regex types, the regex source without anchors).
    ``str(matcher)`` gives Alertmanager's canonical form, e.g. ``severity=~"crit.*"``.
    """

    name: str
    type: MatchType
    value: str
    _regex: re.Pattern[str] | None = field(default=None, repr=False, compare=False)

    @classmethod
    def create(cls, name: str, type: MatchType, value: str) -> "Matcher":
        """Build a matcher, compiling ``value`` for regex types, as Alertmanager's ``NewMatcher``.

        Raises:
            ValueError: the regex does not compile, or uses lookarounds/backreferences.
        """
        regex = None
        if type in ("=~", "!~"):
            try:
                # The value alone must compile: Alertmanager would also accept "a)|(b",
                # which its "^(?:" + v + ")$" turns into an unanchored alternation.
                _refuse_non_re2(_sre_parse.parse(value), value)
                regex = re.compile(f"(?:{value})")
            except re.error as err:
                raise ValueError(f"invalid regex '{value}': {err}") from None
        return cls(name=name, type=type, value=value, _regex=regex)

    @classmethod
    def parse(cls, text: str) -> "Matcher":
        """Parse one matcher, as Alertmanager's ``labels.ParseMatcher``.

        ``text`` is e.g. ``alertname="KubePodCrashLooping"``, ``pod=~"web-.*"`` or
        ``severity!=info``.

        Raises:
            ValueError: with the text a person reads, e.g.
                ``bad matcher format 'alertname': expected name="value", ...``.
        """
        if not isinstance(text, str):
            raise ValueError(f"expected a matcher such as {_FORMS}, got {text!r}")
        found = _MATCHER_RE.match(text)
        if not found:
            raise ValueError(f"bad matcher format '{text}': expected {_FORMS}")
        name, op, raw = found.groups()
        expect_trailing_quote = raw.startswith('"')
        if expect_trailing_quote:
            raw = raw[1:]
        value: list[str] = []
        escaped = False
        for i, char in enumerate(raw):
            last = i == len(raw) - 1
            if escaped:
                escaped = False
                if char == "n":
                    value.append("\n")
                elif char in '"\\':
                    value.append(char)
                else:
                    # A spurious escape: Alertmanager keeps the backslash.
                    value.append("\\" + char)
                continue
            if char == "\\":
                if not last:
                    escaped = True
                    continue
                value.append("\\")
            elif char == '"':
                if not expect_trailing_quote or not last:
                    raise ValueError(
                        f"bad matcher '{text}': the value contains an unescaped double quote "
                        '(write \\" inside a quoted value)'
                    )
                expect_trailing_quote = False
            else:
                value.append(char)
        if expect_trailing_quote:
            raise ValueError(f"bad matcher '{text}': the value's opening double quote is not closed")
        return cls.create(name, op, "".join(value))  # type: ignore[arg-type]

    def matches_value(self, value: str) -> bool:
        """Whether a label value satisfies this matcher (``""`` for an absent label)."""
        if self.type == "=":
            return value == self.value
        if self.type == "!=":
            return value != self.value
        assert self._regex is not None
        found = self._regex.fullmatch(value) is not None
        return found if self.type == "=~" else not found

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether the alert's ``labels`` satisfy this matcher; an absent label counts as ``""``."""
        return self.matches_value(labels.get(self.name, ""))

    def __str__(self) -> str:
        escaped = self.value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
        return f'{self.name}{self.type}"{escaped}"'


def split_matchers(text: str) -> list[str]:
    """Split one entry into matcher texts, as Alertmanager's ``labels.ParseMatchers``.

    A leading ``{`` and trailing ``}`` are dropped; commas outside double quotes separate
    matchers; a trailing comma is allowed. ``'{a="1", b=~"x,y"}'`` -> ``['a="1"', ' b=~"x,y"']``.
    """
    if text.startswith("{"):
        text = text[1:]
    if text.endswith("}"):
        text = text[:-1]
    tokens: list[str] = []
    token: list[str] = []
    inside_quotes = escaped = False
    for char in text:
        if char == "," and not inside_quotes:
            tokens.append("".join(token))
            token = []
            continue
        if char == '"':
            if not escaped:
                inside_quotes = not inside_quotes
            else:
                escaped = False
        elif char == "\\":
            escaped = not escaped
        else:
            escaped = False
        token.append(char)
    rest = "".join(token).strip()
    if rest:
        tokens.append(rest)
    return tokens


def parse_matchers(entries: Iterable[str]) -> list[Matcher]:
    """Parse a playbook's ``match:`` list; each entry may hold several comma-separated matchers.

    This is how Alertmanager reads a route's ``matchers:`` list (each entry through
    ``ParseMatchers``).

    Raises:
        ValueError: for the first entry that does not parse, with the reason.
    """
    matchers: list[Matcher] = []
    for entry in entries:
        if not isinstance(entry, str):
            raise ValueError(f"expected a matcher such as {_FORMS}, got {entry!r}")
        texts = split_matchers(entry)
        if not texts:
            raise ValueError(f"expected a matcher such as {_FORMS}, got an empty entry")
        matchers.extend(Matcher.parse(t) for t in texts)
    return matchers


def matches_all(matchers: Iterable[Matcher], labels: Mapping[str, str]) -> bool:
    """Whether every matcher matches ``labels`` (an empty list matches everything), as
    Alertmanager's ``Matchers.Matches``."""
    return all(m.matches(labels) for m in matchers)
