"""The policy file: the shipped policy.yaml, every error ``load_policy`` reports, the namespace
rules, the node limit's arithmetic and the JSON Schema ``remediator schema --policy`` prints.

In the manner of robusta's tests/test_config_validation.py: policy files are written as a
person would write them and the exact ``file:line: field: message`` text they read is asserted.
The brakes that enforce the policy are tested in tests/test_limits.py.
"""

from __future__ import annotations

import textwrap
from datetime import timedelta
from pathlib import Path

import jsonschema
import pytest
import yaml

from remediator.domain.actions import ACTION_NAMES
from remediator.domain.policy import SYSTEM_NAMESPACES, Limits, Namespaces, Policy, Rate
from remediator.playbook.policy_loader import PolicyError, load_policy, policy_json_schema, validate_policy

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "policy.yaml"
KNOWN_ACTIONS = ", ".join(ACTION_NAMES)


def write(tmp_path: Path, text: str, name: str = "policy.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


def problems(path: Path) -> list[str]:
    """What ``remediator validate --policy`` prints, one problem a line; asserts load_policy agrees."""
    found = validate_policy(path)
    with pytest.raises(PolicyError) as err:
        load_policy(path)
    assert str(err.value).splitlines() == found
    return found


# --------------------------------------------------------------------------- the shipped policy


def test_the_shipped_policy_loads_and_is_conservative():
    assert validate_policy(SHIPPED) == []
    policy = load_policy(SHIPPED)

    # Nothing in the system namespaces is touched; allow left out means every other namespace.
    assert set(SYSTEM_NAMESPACES) <= set(policy.namespaces.deny)
    for namespace in SYSTEM_NAMESPACES:
        assert policy.namespaces.refusal(namespace) is not None
    assert policy.namespaces.allow is None
    assert policy.namespaces.refusal("prod") is None

    limits = policy.limits
    assert limits.concurrent_remediations == 5
    assert limits.unschedulable_nodes == 1
    assert limits.node_limit(3) == 1 and limits.node_limit(500) == 1
    # Every mutating action has a rate; only uncordon (which gives capacity back) has none.
    assert set(limits.actions) == set(ACTION_NAMES) - {"uncordon"}
    assert limits.actions["rollback"] == Rate(max=3, per=timedelta(hours=1))
    assert limits.actions["cordon"] == Rate(max=1, per=timedelta(hours=1))
    assert limits.actions["drain"] == Rate(max=1, per=timedelta(hours=1))
    assert limits.per_target == Rate(max=3, per=timedelta(hours=24))
    assert limits.queue_timeout == timedelta(minutes=15)
    # A spec change GitOps would revert is asked for, never done silently.
    assert policy.gitops == "approve"


def test_left_out_values_take_the_conservative_defaults(tmp_path):
    policy = load_policy(write(tmp_path, "gitops: approve\n"))
    assert policy == Policy()
    assert policy.namespaces.deny == list(SYSTEM_NAMESPACES)
    assert policy.limits.unschedulable_nodes == "10%"
    assert policy.limits.actions == {
        "rollback": Rate(max=3, per=timedelta(hours=1)),
        "rollout_restart": Rate(max=10, per=timedelta(hours=1)),
    }


# --------------------------------------------------------------------------- every error, with its line


def test_unknown_field_is_reported_at_its_line(tmp_path):
    path = write(
        tmp_path,
        """
        namespaces:
          deny: []
        limits:
          concurent_remediations: 3
        """,
    )
    [problem] = problems(path)
    assert problem.startswith(f"{path}:4: limits.concurent_remediations: unknown field 'concurent_remediations'")


def test_unknown_field_names_the_policy_fields_not_a_playbooks(tmp_path):
    top = write(tmp_path, "gitops: allow\nlimitz: {}\n", "top.yaml")
    nested = write(tmp_path, "limits:\n  concurent_remediations: 3\n", "nested.yaml")
    assert problems(top) == [f"{top}:2: limitz: unknown field 'limitz' (did you mean 'limits'?)"]
    assert problems(nested) == [
        f"{nested}:2: limits.concurent_remediations: unknown field 'concurent_remediations' "
        "(did you mean 'concurrent_remediations'?)"
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            'limits:\n  unschedulable_nodes: "150%"\n',
            """2: limits.unschedulable_nodes: expected a count such as 1 or a percentage such as "10%", got '150%'""",
            id="percentage-over-100",
        ),
        pytest.param(
            'limits:\n  unschedulable_nodes: "ten%"\n',
            """2: limits.unschedulable_nodes: expected a count such as 1 or a percentage such as "10%", got 'ten%'""",
            id="percentage-not-a-number",
        ),
        pytest.param(
            "gitops: allow\nlimits:\n  unschedulable_nodes: -1\n",
            "3: limits.unschedulable_nodes: must not be negative",
            id="negative-node-count",
        ),
        pytest.param(
            "limits:\n  actions:\n    rollback: {max: -1, per: 1h}\n",
            "3: limits.actions.rollback.max: expected a number >= 0, got -1",
            id="negative-rate",
        ),
        pytest.param(
            "limits:\n  concurrent_remediations: 0\n",
            "2: limits.concurrent_remediations: expected a number >= 1, got 0",
            id="no-concurrency",
        ),
        pytest.param(
            "limits:\n  queue_timeout: soon\n",
            "2: limits.queue_timeout: expected a duration such as 30s, 5m or 1h, got 'soon'",
            id="bad-duration",
        ),
        pytest.param(
            "limits:\n  per_target: {max: 1, per: 0s}\n",
            "2: limits.per_target.per: must be longer than 0s",
            id="per-target-per-0s",
        ),
        pytest.param(
            "limits:\n  actions:\n\n    drain:\n      max: 1\n      per: 0s\n",
            "6: limits.actions.drain.per: must be longer than 0s",
            id="action-per-0s",
        ),
        pytest.param(
            "namespaces:\n  deny: []\ngitops: sometimes\n",
            "3: gitops: expected 'approve', 'refuse' or 'allow', got 'sometimes'",
            id="gitops-value",
        ),
        pytest.param(
            "namespaces:\n  allow: prod\n",
            "2: namespaces.allow: expected a list, got 'prod'",
            id="allow-not-a-list",
        ),
    ],
)
def test_bad_value_is_reported_at_its_line(tmp_path, text, expected):
    path = write(tmp_path, text)
    assert problems(path) == [f"{path}:{expected}"]


def test_unknown_action_is_reported_at_its_own_line(tmp_path):
    path = write(
        tmp_path,
        """
        limits:
          actions:
            rollback: {max: 1, per: 1h}
            restart_pod: {max: 1, per: 1h}
        """,
    )
    [problem] = problems(path)
    assert problem.startswith(f"{path}:4: limits.actions.restart_pod: unknown action 'restart_pod'")
    assert problem.endswith(f"known: {KNOWN_ACTIONS}")


def test_a_boolean_is_not_a_node_count(tmp_path):
    # YAML 1.1 reads `yes` as true; it must not quietly become a limit of 1 node.
    path = write(tmp_path, "limits:\n  unschedulable_nodes: yes\n")
    [problem] = problems(path)
    assert problem.startswith(
        f'{path}:2: limits.unschedulable_nodes: expected a count such as 1 or a percentage such as "10%"'
    )


def test_a_limit_given_twice_is_refused_not_silently_replaced(tmp_path):
    path = write(
        tmp_path,
        """
        limits:
          concurrent_remediations: 1
          unschedulable_nodes: 1
          concurrent_remediations: 50
        """,
    )
    assert problems(path) == [f"{path}:4: limits.concurrent_remediations: key given twice (first on line 2)"]


def test_yaml_syntax_error_gives_its_line(tmp_path):
    path = write(tmp_path, "gitops: allow\nlimits:\n  a: 1\n b: 2\n")
    assert problems(path) == [
        f"{path}:4: YAML syntax error: expected <block end>, but found '<block mapping start>' "
        "(while parsing a block mapping that starts on line 1) at column 2; check the indentation"
    ]


def test_unclosed_flow_mapping_gives_its_line(tmp_path):
    path = write(tmp_path, "limits:\n  actions: {rollback: [\n")
    [problem] = problems(path)
    assert problem.startswith(f"{path}:3: YAML syntax error: ")


@pytest.mark.parametrize("text", ["", "\n\n"], ids=["empty", "blank-lines"])
def test_empty_file_is_refused(tmp_path, text):
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    assert problems(path) == [f"{path}:1: the policy file is empty; expected namespaces, limits and gitops"]


def test_file_of_only_comments_is_refused_as_an_empty_policy(tmp_path):
    path = write(tmp_path, "# limits:\n#   concurrent_remediations: 5\n")
    assert problems(path) == [f"{path}:1: the policy file is empty; expected namespaces, limits and gitops"]


@pytest.mark.parametrize("text", ["- namespaces\n- limits\n", "approve\n"], ids=["list", "scalar"])
def test_not_a_mapping_is_refused(tmp_path, text):
    path = write(tmp_path, text)
    assert problems(path) == [f"{path}:1: expected a policy: a mapping with namespaces, limits and gitops"]


def test_two_documents_are_refused_at_the_second(tmp_path):
    path = write(tmp_path, "gitops: allow\n---\ngitops: refuse\n")
    assert problems(path) == [f"{path}:3: expected one policy per file, found 2 YAML documents"]


def test_missing_file_is_refused(tmp_path):
    path = tmp_path / "nowhere" / "policy.yaml"
    assert problems(path) == [f"{path}: cannot read the policy file: No such file or directory"]


def test_not_utf8_is_refused_at_its_line(tmp_path):
    path = tmp_path / "policy.yaml"
    path.write_bytes(b"gitops: allow\nnamespaces:\n  deny: [\xff]\n")
    assert problems(path) == [f"{path}:3: the file is not UTF-8 text"]


def test_every_problem_is_reported_together_in_line_order(tmp_path):
    path = write(
        tmp_path,
        """
        gitops: sometimes
        limits:
          concurrent_remediations: 0
          queue_timeout: soon
        """,
    )
    assert problems(path) == [
        f"{path}:1: gitops: expected 'approve', 'refuse' or 'allow', got 'sometimes'",
        f"{path}:3: limits.concurrent_remediations: expected a number >= 1, got 0",
        f"{path}:4: limits.queue_timeout: expected a duration such as 30s, 5m or 1h, got 'soon'",
    ]


# --------------------------------------------------------------------------- namespaces


def test_allow_absent_means_every_namespace_not_denied():
    ns = Namespaces()
    assert ns.refusal("prod") is None
    assert ns.refusal("anything-at-all") is None
    assert ns.refusal("kube-system") == "namespace kube-system is denied by the policy (namespaces.deny: 'kube-system')"
    assert ns.refusal("kube-node-lease") is not None


def test_allow_empty_means_none():
    ns = Namespaces(allow=[])
    assert ns.refusal("prod") == "namespace prod is not allowed by the policy (namespaces.allow: none)"
    assert ns.refusal("default") is not None


def test_globs_and_deny_wins_over_allow():
    ns = Namespaces(allow=["prod", "staging-*"], deny=["staging-secret*"])
    assert ns.refusal("prod") is None
    assert ns.refusal("staging-eu") is None
    assert ns.refusal("staging-secrets") == (
        "namespace staging-secrets is denied by the policy (namespaces.deny: 'staging-secret*')"
    )
    assert ns.refusal("production") == (
        "namespace production is not allowed by the policy (namespaces.allow: 'prod', 'staging-*')"
    )
    # Globs match case-sensitively, as Kubernetes names are.
    assert ns.refusal("Prod") is not None
    # A namespace allowed and denied by the same glob is denied.
    assert Namespaces(allow=["*"], deny=["*"]).refusal("prod") is not None


def test_nodes_are_not_subject_to_namespace_rules():
    for ns in (Namespaces(), Namespaces(allow=[]), Namespaces(allow=["prod"], deny=["*"])):
        assert ns.refusal(None) is None


# --------------------------------------------------------------------------- the node limit


@pytest.mark.parametrize(
    ("value", "total", "expected"),
    [
        (0, 12, 0),
        (1, 12, 1),
        (3, 2, 3),  # a count is a count, whatever the cluster's size
        ("10%", 12, 1),  # 1.2 rounded down
        ("10%", 5, 0),  # 0.5 rounded down: no node may go in a 5-node cluster
        ("10%", 10, 1),
        ("30%", 10, 3),
        ("18.4%", 375, 69),  # 375 * 18.4 / 100 is 68.99999999999999 in floating point; exactly 69
        ("70%", 10, 7),
        ("12.5%", 8, 1),
        ("50%", 5, 2),
        ("100%", 12, 12),
        ("100%", 1, 1),
        ("0%", 12, 0),
        ("10%", 0, 0),
    ],
)
def test_node_limit_rounds_percentages_down_as_kubernetes_rounds_max_unavailable(value, total, expected):
    assert Limits(unschedulable_nodes=value).node_limit(total) == expected


def test_node_limit_accepts_spaces_around_a_percentage(tmp_path):
    policy = load_policy(write(tmp_path, 'limits:\n  unschedulable_nodes: " 20% "\n'))
    assert policy.limits.unschedulable_nodes == "20%"
    assert policy.limits.node_limit(10) == 2


# --------------------------------------------------------------------------- the JSON Schema


def test_policy_json_schema_is_valid_and_agrees_with_the_loader():
    schema = policy_json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    validator = jsonschema.Draft202012Validator(schema)

    shipped = yaml.safe_load(SHIPPED.read_text())
    assert list(validator.iter_errors(shipped)) == []
    assert validator.is_valid({})  # every field has a default

    bad = {**shipped, "limits": {**shipped["limits"], "concurrent_remediations": 0}}
    [error] = validator.iter_errors(bad)
    assert list(error.absolute_path) == ["limits", "concurrent_remediations"]


@pytest.mark.parametrize(
    "document",
    [
        {"limitz": {}},
        {"gitops": "sometimes"},
        {"namespaces": {"allow": "prod"}},
        {"limits": {"actions": {"rollback": {"max": -1, "per": "1h"}}}},
        {"limits": {"actions": {"rollback": {"max": 1}}}},
        {"limits": {"per_target": {"max": 1, "per": "soon"}}},
        {"limits": {"queue_timeout": "15 minutes"}},
        {"limits": {"concurent_remediations": 3}},
    ],
)
def test_policy_json_schema_rejects_bad_policies(document):
    assert not jsonschema.Draft202012Validator(policy_json_schema()).is_valid(document)


def test_policy_json_schema_defaults_are_values_the_schema_and_loader_accept(tmp_path):
    schema = policy_json_schema()
    limits = schema["$defs"]["Limits"]["properties"]
    for name, prop in limits.items():
        if "default" in prop:
            sub = jsonschema.Draft202012Validator({**prop, "$defs": schema["$defs"]})
            assert sub.is_valid(prop["default"]), f"limits.{name}: default {prop['default']!r} fails its own schema"
    # An editor that fills in the default must write a file the worker starts with.
    path = write(tmp_path, f"limits:\n  queue_timeout: {limits['queue_timeout']['default']}\n")
    assert validate_policy(path) == []
