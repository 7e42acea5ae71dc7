"""Alertmanager matchers (remediator.matchers): parsing, escapes, anchoring, absent labels,
errors — and the same cases checked against Alertmanager's own parser and router through
``amtool`` (Debian prometheus-alertmanager), so a divergence from Alertmanager fails here."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from remediator.playbook.matchers import Matcher, matches_all, parse_matchers, split_matchers



# --------------------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    ("text", "name", "type_", "value"),
    [
        ('alertname="KubeNodeNotReady"', "alertname", "=", "KubeNodeNotReady"),
        ('severity!="info"', "severity", "!=", "info"),
        ('pod=~"web-.*"', "pod", "=~", "web-.*"),
        ('pod!~"web-.*"', "pod", "!~", "web-.*"),
        # unquoted values and whitespace around the tokens, as the classic parser allows
        ("severity=critical", "severity", "=", "critical"),
        ('  team  !=  "a b"  ', "team", "!=", "a b"),
        ("team=", "team", "=", ""),
        ('team=""', "team", "=", ""),
        # OpenMetrics escapes: \" \n \\ ; any other backslash is literal
        (r'msg="say \"hi\""', "msg", "=", 'say "hi"'),
        (r'msg="a\nb"', "msg", "=", "a\nb"),
        (r'path="C:\\dir"', "path", "=", "C:\\dir"),
        (r'path=~"\d+"', "path", "=~", r"\d+"),
        ('name:with:colons="x"', "name:with:colons", "=", "x"),
    ],
)
def test_parse(text, name, type_, value):
    m = Matcher.parse(text)
    assert (m.name, m.type, m.value) == (name, type_, value)


def test_str_is_alertmanagers_canonical_form():
    assert str(Matcher.parse('msg="say \\"hi\\"\\nnow"')) == 'msg="say \\"hi\\"\\nnow"'
    assert str(Matcher.parse("severity=critical")) == 'severity="critical"'


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("node", "bad matcher format 'node': expected name=\"value\", name!=\"value\", name=~\"regex\" or name!~\"regex\""),
        ('1node="x"', "bad matcher format '1node=\"x\"': expected name=\"value\", name!=\"value\", name=~\"regex\" or name!~\"regex\""),
        ('node=="x"', "bad matcher 'node==\"x\"': the value contains an unescaped double quote (write \\\" inside a quoted value)"),
        ('a="x"y"', "bad matcher 'a=\"x\"y\"': the value contains an unescaped double quote (write \\\" inside a quoted value)"),
        ('a="x', "bad matcher 'a=\"x': the value's opening double quote is not closed"),
        ('a=~"("', "invalid regex '(': missing ), unterminated subpattern at position 0"),
        ('a=~"a)|(b"', "invalid regex 'a)|(b': unbalanced parenthesis at position 1"),
        ('a=~"(?=x)x"', "invalid regex '(?=x)x': lookaround assertions are not supported by Alertmanager (Go RE2 syntax)"),
        ('a=~"(a)\\\\1"', "invalid regex '(a)\\1': backreferences are not supported by Alertmanager (Go RE2 syntax)"),
    ],
)
def test_parse_errors(text, message):
    with pytest.raises(ValueError) as err:
        Matcher.parse(text)
    assert str(err.value) == message


def test_parse_refuses_non_strings():
    with pytest.raises(ValueError) as err:
        parse_matchers([3])
    assert str(err.value) == (
        'expected a matcher such as name="value", name!="value", name=~"regex" or name!~"regex", got 3'
    )


def test_split_like_parse_matchers():
    # braces dropped, commas inside quotes kept, a trailing comma allowed; the last token
    # is trimmed (the others are trimmed by Matcher.parse), as in Alertmanager
    assert split_matchers('{alertname="X", pod=~"a,b", }') == ['alertname="X"', ' pod=~"a,b"']
    assert split_matchers(r'msg="a \", b", c=d') == [r'msg="a \", b"', "c=d"]
    matchers = parse_matchers(['{alertname="X", severity!=info}', 'pod=~"web-.*"'])
    assert [str(m) for m in matchers] == ['alertname="X"', 'severity!="info"', 'pod=~"web-.*"']


# --------------------------------------------------------------------------- matching


def test_equality_and_negation():
    assert Matcher.parse('a="x"').matches({"a": "x"})
    assert not Matcher.parse('a="x"').matches({"a": "xy"})
    assert Matcher.parse('a!="x"').matches({"a": "y"})
    assert not Matcher.parse('a!="x"').matches({"a": "x"})


def test_regex_is_fully_anchored():
    m = Matcher.parse('pod=~"web"')
    assert m.matches({"pod": "web"})
    assert not m.matches({"pod": "web-1"})
    assert not m.matches({"pod": "my-web"})
    # Alertmanager anchors the whole alternation: ^(?:a|b)$
    alt = Matcher.parse('sev=~"crit|warn"')
    assert alt.matches({"sev": "warn"}) and not alt.matches({"sev": "warning"})
    # Go's $ never matches before a trailing newline; Python's would without fullmatch
    assert not m.matches({"pod": "web\n"})
    assert Matcher.parse('pod!~"web"').matches({"pod": "web-1"})


def test_absent_label_is_the_empty_string():
    assert Matcher.parse('team=""').matches({})
    assert not Matcher.parse('team!=""').matches({})
    assert Matcher.parse('team=~".*"').matches({})
    assert not Matcher.parse('team=~".+"').matches({})
    assert Matcher.parse('team!~"a.*"').matches({})
    assert not Matcher.parse('team="a"').matches({})


def test_matches_all():
    matchers = parse_matchers(['alertname="KubeNodeNotReady"', 'node!=""'])
    assert matches_all(matchers, {"alertname": "KubeNodeNotReady", "node": "worker-1"})
    assert not matches_all(matchers, {"alertname": "KubeNodeNotReady"})
    assert matches_all([], {"anything": "x"})


# --------------------------------------------------------------------------- against Alertmanager

DIFFERENTIAL_MATCHERS = [
    'alertname="KubePodCrashLooping"',
    "severity=critical",
    'severity!="info"',
    'team=""',
    'team!=""',
    'pod=~"web"',
    'pod=~"web-.*"',
    'pod!~"web-.*"',
    'sev=~"crit|warn"',
    'team=~".*"',
    'team=~".+"',
    'pod=~"[a-z0-9]([-a-z0-9]*[a-z0-9])?-[bcdfghjklmnpqrstvwxz2456789]{1,10}-[bcdfghjklmnpqrstvwxz2456789]{5}"',
    'code=~"5.."',
    'code=~"5\\\\d\\\\d"',
]

DIFFERENTIAL_LABELS = [
    {"alertname": "KubePodCrashLooping", "severity": "critical", "pod": "web-7d4b9c6f8-x2k4p"},
    {"alertname": "KubeNodeNotReady", "severity": "info", "team": "sre", "pod": "web"},
    {"severity": "warning", "sev": "warn", "pod": "my-web", "code": "503"},
    {"sev": "warning", "team": "", "pod": "web-0", "code": "5xx"},
    {},
]


@pytest.mark.parametrize("labels", DIFFERENTIAL_LABELS, ids=lambda l: ",".join(f"{k}={v}" for k, v in l.items()) or "none")
def test_routing_agrees_with_alertmanager(tmp_path: Path, amtool: str, labels):
    """Each matcher is one route (continue: true) of a real Alertmanager config; amtool
    prints the receivers an alert with ``labels`` reaches, which must be exactly the
    matchers that remediator says match."""
    config = {
        "route": {
            "receiver": "none",
            "routes": [
                {"receiver": f"m{i}", "matchers": [text], "continue": True}
                for i, text in enumerate(DIFFERENTIAL_MATCHERS)
            ],
        },
        "receivers": [{"name": "none"}] + [{"name": f"m{i}"} for i in range(len(DIFFERENTIAL_MATCHERS))],
    }
    path = tmp_path / "alertmanager.yml"
    path.write_text(yaml.safe_dump(config))
    args = [f"{k}={v}" for k, v in labels.items()]
    out = subprocess.run(
        [amtool, "config", "routes", "test", f"--config.file={path}", *args],
        capture_output=True, text=True, check=True, timeout=30,
    ).stdout.strip()
    alertmanager = set(out.split(",")) - {"none"}
    ours = {f"m{i}" for i, text in enumerate(DIFFERENTIAL_MATCHERS) if Matcher.parse(text).matches(labels)}
    assert ours == alertmanager


@pytest.mark.parametrize(
    "text",
    [
        'alertname="X"',
        "severity=critical",
        'msg="say \\"hi\\""',
        "node",
        'a="x"y"',
        'a="x',
        'a=~"("',
        'a=~"(?=x)x"',
        '1node="x"',
    ],
)
def test_validity_agrees_with_alertmanager(tmp_path: Path, amtool: str, text):
    """A matcher that remediator refuses is one that Alertmanager refuses, and vice versa."""
    config = {"route": {"receiver": "r", "routes": [{"receiver": "r", "matchers": [text]}]}, "receivers": [{"name": "r"}]}
    path = tmp_path / "alertmanager.yml"
    path.write_text(yaml.safe_dump(config))
    result = subprocess.run([amtool, "check-config", str(path)], capture_output=True, text=True, timeout=30)
    try:
        Matcher.parse(text)
        ours = True
    except ValueError:
        ours = False
    assert ours == (result.returncode == 0), result.stdout + result.stderr
