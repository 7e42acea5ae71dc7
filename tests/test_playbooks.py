"""Playbook loading, validation messages, templating and the shipped playbooks.

In the manner of robusta's tests/test_config_validation.py: valid and invalid YAML fixtures
(tests/fixtures/playbooks/) are loaded and the exact ``file:line: field: message`` text a
person reads is asserted.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import textwrap
from pathlib import Path

import httpx
import jsonschema
import pytest
import yaml
from kubernetes.client import CoreV1Api
from temporalio.testing import ActivityEnvironment

from activities.diagnosis import DiagnosisActivities
from remediator.k8s.client import KubeClient

from remediator.playbook.loader import (
    PlaybookError,
    PlaybookSet,
    RenderError,
    json_schema,
    load_directory,
    load_playbook,
    render,
    validate_path,
)
from remediator.domain.messages import AlertRef, Assessment, AssessInput, DiagnosisInput, Evidence, TargetRef
from remediator.domain.alertmanager import WebhookMessage
from remediator.playbook.templating import alert_context, pod_controller_name, render_string

ROOT = Path(__file__).resolve().parents[1]
PLAYBOOKS = ROOT / "playbooks"
FIXTURES = ROOT / "tests" / "fixtures" / "playbooks"
INVALID = FIXTURES / "invalid"
RULES = ROOT / "deploy" / "prometheus" / "kube-prometheus-rules.yml"
# A payload a real Alertmanager sent (copied from shared/fixtures/alertmanager).
FIRING_SINGLE = Path(__file__).parent / "fixtures" / "alertmanager" / "firing-single.json"


def alert_from(message: dict, index: int = 0) -> AlertRef:
    """The AlertRef the intake builds from one alert of a webhook message."""
    msg = WebhookMessage.model_validate(message)
    a = msg.alerts[index]
    return AlertRef(
        fingerprint=a.fingerprint,
        starts_at=a.starts_at,
        status=a.status,
        labels=a.labels,
        annotations=a.annotations,
        generator_url=a.generator_url,
        receiver=msg.receiver,
        group_key=msg.group_key,
        external_url=msg.external_url,
    )


def alert_with(labels: dict[str, str], **extra) -> AlertRef:
    message = json.loads(FIRING_SINGLE.read_text())
    message["alerts"][0]["labels"] = labels
    message["alerts"][0].update(extra)
    return alert_from(message)


def write(tmp_path: Path, text: str, name: str = "playbook.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip())
    return path


# --------------------------------------------------------------------------- shipped playbooks

# Label sets as kube-state-metrics / cAdvisor and the kubernetes-mixin rules produce them.
CRASHLOOP_LABELS = {
    "alertname": "KubePodCrashLooping",
    "container": "app",
    "instance": "10.0.0.7:8080",
    "job": "kube-state-metrics",
    "namespace": "shop",
    "pod": "checkout-7d4b9c6f8-x2k4p",
    "reason": "CrashLoopBackOff",
    "severity": "warning",
    "uid": "0b9c0c4e-8f57-4ef4-a0a5-4d0b4fb0c6c1",
}
REPLICAS_LABELS = {
    "alertname": "KubeDeploymentReplicasMismatch",
    "deployment": "checkout",
    "instance": "10.0.0.7:8080",
    "job": "kube-state-metrics",
    "namespace": "shop",
    "severity": "warning",
}
NODE_LABELS = {
    "alertname": "KubeNodeNotReady",
    "condition": "Ready",
    "job": "kube-state-metrics",
    "node": "worker-2",
    "severity": "warning",
    "status": "true",
}
THROTTLING_LABELS = {
    "alertname": "CPUThrottlingHigh",
    "container": "app",
    "namespace": "shop",
    "pod": "checkout-7d4b9c6f8-x2k4p",
    "severity": "info",
}


def test_every_shipped_playbook_validates():
    playbooks = load_directory(PLAYBOOKS)
    assert [p.ref.name for p in playbooks.playbooks] == [
        "cpu-throttling-high",
        "kube-deployment-replicas-mismatch",
        "kube-node-not-ready",
        "kube-pod-crashlooping",
    ]
    assert validate_path(PLAYBOOKS) == []
    for loaded in playbooks.playbooks:
        raw = Path(loaded.ref.path).read_bytes()
        assert loaded.ref.sha256 == hashlib.sha256(raw).hexdigest()
        assert Path(loaded.ref.path).name == f"{loaded.ref.name}.yaml"


@pytest.mark.parametrize(
    ("labels", "playbook", "target", "actions"),
    [
        (
            CRASHLOOP_LABELS,
            "kube-pod-crashlooping",
            TargetRef(kind="Deployment", namespace="shop", name="checkout"),
            ["rollback", "rollout_restart"],
        ),
        (
            REPLICAS_LABELS,
            "kube-deployment-replicas-mismatch",
            TargetRef(kind="Deployment", namespace="shop", name="checkout"),
            ["rollout_restart"],
        ),
        (NODE_LABELS, "kube-node-not-ready", TargetRef(kind="Node", name="worker-2"), ["cordon", "drain"]),
        (
            THROTTLING_LABELS,
            "cpu-throttling-high",
            TargetRef(kind="Deployment", namespace="shop", name="checkout"),
            ["scale"],
        ),
    ],
)
def test_shipped_playbooks_handle_the_real_alerts(labels, playbook, target, actions):
    playbooks = load_directory(PLAYBOOKS)
    loaded = playbooks.match(labels)
    assert loaded is not None and loaded.ref.name == playbook
    rendered_target, rendered = render(loaded, alert_with(labels))
    assert rendered_target == target
    assert [s.action for s in rendered.steps] == actions
    assert rendered.target.name == target.name and rendered.target.namespace == target.namespace


def test_crashlooping_chooses_between_rollback_and_restart_on_evidence():
    playbook = load_directory(PLAYBOOKS).by_name("kube-pod-crashlooping").playbook
    assert [(d.name, d.check) for d in playbook.diagnosis] == [
        ("recent_rollout", "recent_rollout"),
        ("container_status", "container_status"),
        ("kube_events", "kube_events"),
    ]
    assert playbook.diagnosis[0].recent_rollout.within.total_seconds() == 1800
    assert playbook.diagnosis[2].kube_events.type == "Warning"
    assert playbook.confidence.weights == {"recent_rollout": 0.4, "container_status": 0.4, "kube_events": 0.2}
    first, second = playbook.steps
    assert first.rollback is not None and first.when == "evidence.recent_rollout.signal"
    assert second.rollout_restart is not None and second.when == "!evidence.recent_rollout.signal"
    # a rollback on weak evidence asks a person; a restart never does
    assert first.approval.below == 0.7 and second.approval == "never"
    assert first.health.check == second.health.check == "rollout_status"
    slack = playbook.slack
    assert (slack.channel, slack.approvers.usergroups, slack.oncall_usergroup) == ("#sre-oncall", ["S0ONCALL"], "S0ONCALL")
    assert (slack.approval_timeout.total_seconds(), slack.approval_deadline.total_seconds()) == (600, 1800)


def test_typed_when_still_loads(tmp_path: Path):
    path = write(
        tmp_path,
        """
        name: typed-when
        match: ['alertname="KubePodCrashLooping"']
        target: {kind: Deployment, namespace: prod, name: checkout}
        steps:
          - {name: undo, when: {rollout_within: 30m}, rollback: {}}
          - {name: restart, when: {no_rollout_within: 30m}, rollout_restart: {}}
        """,
    )
    first, second = load_playbook(path).playbook.steps
    assert first.when.rollout_within.total_seconds() == 1800
    assert second.when.no_rollout_within.total_seconds() == 1800


def test_node_drain_always_asks_a_person():
    playbook = load_directory(PLAYBOOKS).by_name("kube-node-not-ready").playbook
    assert [(s.name, s.approval) for s in playbook.steps] == [("cordon", "never"), ("drain", "always")]
    assert [d.check for d in playbook.diagnosis] == ["node_conditions", "kube_events", "container_status"]
    assert playbook.slack.approvers.usergroups == ["S0ONCALL"]


def assess_shipped(loaded, alert: AlertRef, kube: KubeClient | None, prometheus_url: str | None = None) -> Assessment:
    """What a run of the shipped playbook decides for ``alert``: its evidence gathered by the
    real checks (against the emulator, Prometheus) and assessed as the workflow does
    (workflows/remediation.py ``_diagnose``: the rendered confidence, JSON, without nulls)."""
    target, playbook = render(loaded, alert)
    diagnosis = DiagnosisActivities(kube, prometheus_url)
    evidence = [
        ActivityEnvironment().run(
            getattr(diagnosis, f"diagnose_{d.check}"),
            DiagnosisInput(target=target, name=d.name, check=d.check, params=getattr(d, d.check), alert=alert),
        )
        for d in playbook.diagnosis
    ]
    return ActivityEnvironment().run(
        diagnosis.assess,
        AssessInput(
            evidence=evidence, confidence=playbook.confidence.model_dump(mode="json", exclude_none=True), alert=alert,
        ),
    )


def test_node_not_ready_confidence_is_sure_only_while_the_node_is_not_ready(emulator):
    """The shipped CEL expression evaluated on evidence gathered from the emulator: a node that
    is Ready again gives 0 (nothing to drain for), a NotReady one 1, and evidence that cannot
    be gathered (the node is gone) 0, failing closed."""
    loaded = load_directory(PLAYBOOKS).by_name("kube-node-not-ready")
    kube = KubeClient(emulator.api_client())
    alert = alert_with(NODE_LABELS)
    expression = loaded.playbook.confidence.expression

    recovered = assess_shipped(loaded, alert, kube)
    assert (recovered.confidence, recovered.reason) == (0.0, f"expression {expression!r} = 0")
    emulator.fault_node_not_ready("worker-2")
    not_ready = assess_shipped(loaded, alert, kube)
    assert (not_ready.confidence, not_ready.reason) == (1.0, f"expression {expression!r} = 1")
    CoreV1Api(emulator.api_client()).delete_node("worker-2")
    gone = assess_shipped(loaded, alert, kube)
    assert (gone.confidence, gone.reason) == (0.0, f"expression {expression!r} = 0"), gone


@pytest.mark.e2e
def test_throttling_evidence_is_the_deployments_throttled_share_in_prometheus(prometheus):
    """The shipped PromQL, rendered for an alert on one pod, asked of a real Prometheus that
    scrapes cAdvisor metrics of the emulator's pods (tests/conftest.py ``THROTTLED``): prod/checkout
    is 40% throttled, over the alert's 25%, so the scale needs no approval; shop/cart is 10%
    throttled: the evidence does not support it, and the scale waits for a person."""
    loaded = load_directory(PLAYBOOKS).by_name("cpu-throttling-high")
    below = loaded.playbook.steps[0].approval.below

    pod = _pods(prometheus, "prod", "checkout")[0]
    checkout = assess_throttling(loaded, prometheus, {**THROTTLING_LABELS, "namespace": "prod", "pod": pod})
    share = checkout["evidence"]
    assert share.signal is True and share.error is None
    [sample] = share.value["samples"]
    assert float(sample["value"]) == pytest.approx(0.4, abs=0.05)
    assert checkout["confidence"] >= below

    pod = _pods(prometheus, "shop", "cart")[0]
    cart = assess_throttling(loaded, prometheus, {**THROTTLING_LABELS, "namespace": "shop", "pod": pod})
    share = cart["evidence"]
    assert share.signal is False and share.error is None
    assert float(share.value["samples"][0]["value"]) == pytest.approx(0.1, abs=0.05)
    assert share.summary.startswith("1 of 1 samples not > 0.25")
    assert cart["confidence"] < below


def _pods(prometheus, namespace: str, deployment: str) -> list[str]:
    """Names of a Deployment's pods, as the Prometheus fixture's kube-state-metrics shows them."""
    query = f'kube_pod_info{{namespace="{namespace}",created_by_kind="ReplicaSet",pod=~"{deployment}-.*"}}'
    result = httpx.get(f"{prometheus.url}/api/v1/query", params={"query": query}, timeout=10).json()["data"]["result"]
    assert result, f"no pods of {namespace}/{deployment} in Prometheus"
    return [r["metric"]["pod"] for r in result]


def assess_throttling(loaded, prometheus, labels: dict[str, str]) -> dict:
    """The PromQL evidence and the confidence (weights; the nodes' evidence taken as supporting:
    the Prometheus fixture's nodes are not the test's concern) for an alert with ``labels``."""
    alert = alert_with(labels)
    target, playbook = render(loaded, alert)
    [throttled] = [d for d in playbook.diagnosis if d.check == "promql"]
    diagnosis = DiagnosisActivities(None, prometheus.url)
    evidence = ActivityEnvironment().run(
        diagnosis.diagnose_promql,
        DiagnosisInput(target=target, name=throttled.name, check="promql", params=throttled.promql, alert=alert),
    )
    nodes = Evidence(name="nodes", check="node_conditions", signal=True, summary="nodes Ready, no pressure")
    assessment = ActivityEnvironment().run(
        diagnosis.assess,
        AssessInput(evidence=[evidence, nodes], confidence=playbook.confidence.model_dump(mode="json", exclude_none=True), alert=alert),
    )
    return {"evidence": evidence, "confidence": assessment.confidence}


def test_replicas_mismatch_gathers_evidence_without_approval():
    playbook = load_directory(PLAYBOOKS).by_name("kube-deployment-replicas-mismatch").playbook
    assert [d.check for d in playbook.diagnosis] == ["node_conditions", "kube_events", "container_status"]
    assert playbook.steps[0].approval == "never" and playbook.confidence is None
    assert playbook.slack.channel == "#sre-oncall"


def test_node_drain_never_forces_or_deletes_local_data():
    playbook = load_directory(PLAYBOOKS).by_name("kube-node-not-ready").playbook
    drain = playbook.steps[1].drain
    assert (drain.ignore_daemonsets, drain.force, drain.delete_emptydir_data) == (True, False, False)
    assert playbook.steps[1].timeout > drain.timeout


def test_throttling_scale_is_bounded():
    scale = load_directory(PLAYBOOKS).by_name("cpu-throttling-high").playbook.steps[0].scale
    assert (scale.delta, scale.min_replicas, scale.max_replicas) == (1, 2, 10)


@pytest.mark.parametrize(
    "labels",
    [
        # StatefulSet and DaemonSet pods are not named like Deployment pods: left to people
        {**CRASHLOOP_LABELS, "pod": "postgres-0"},
        {**CRASHLOOP_LABELS, "pod": "node-exporter-x2k4p"},
        {**THROTTLING_LABELS, "pod": "postgres-1"},
        {**NODE_LABELS, "node": ""},
        {"alertname": "HighErrorRate", "namespace": "prod", "service": "checkout"},
    ],
)
def test_shipped_playbooks_leave_other_alerts_alone(labels):
    assert load_directory(PLAYBOOKS).match(labels) is None


def test_the_demo_rules_are_the_alerts_the_playbooks_handle():
    rules = yaml.safe_load(RULES.read_text())
    alerts = {r["alert"]: r for g in rules["groups"] for r in g["rules"]}
    assert set(alerts) == {"KubePodCrashLooping", "KubeDeploymentReplicasMismatch", "KubeNodeNotReady", "CPUThrottlingHigh"}
    assert {r["for"] for r in alerts.values()} == {"10s"}
    assert alerts["KubeNodeNotReady"]["expr"].strip() == (
        'kube_node_status_condition{job="kube-state-metrics",condition="Ready",status="true"} == 0'
    )
    playbooks = load_directory(PLAYBOOKS)
    for labels in (CRASHLOOP_LABELS, REPLICAS_LABELS, NODE_LABELS, THROTTLING_LABELS):
        assert labels["alertname"] in alerts
        assert labels["severity"] == alerts[labels["alertname"]]["labels"]["severity"]
        assert playbooks.match(labels) is not None


def test_demo_rules_pass_promtool(promtool):
    result = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 4 rules found" in result.stdout


# --------------------------------------------------------------------------- invalid playbooks

INVALID_CASES = {
    "bad-duration.yaml": [
        "13: steps[0].health.timeout: expected a duration such as 30s, 5m or 1h, got 'soon'",
    ],
    "unknown-action.yaml": [
        "10: steps[0].restart: unknown field 'restart' (did you mean 'rollout_restart'?)",
        "12: steps[1].reboot: unknown field 'reboot'; a step takes name, when, approval, one action "
        "(rollout_restart, scale, rollback, cordon, uncordon, drain, delete_pod), health, retries, on_failure "
        "and timeout",
    ],
    "unknown-param.yaml": [
        "11: steps[0].scale.replica: unknown field 'replica' (did you mean 'replicas'?)",
    ],
    "two-actions.yaml": [
        "9: steps[0]: exactly one action per step, got 2: rollout_restart, scale (put each action in its own step)",
    ],
    "wrong-kind.yaml": [
        "10: steps[0].drain: action drain cannot act on a Deployment; it works on Node",
        "14: steps[1].health.node_ready: health check node_ready cannot check a Deployment; it checks Node",
    ],
    "bad-matcher.yaml": [
        "4: match[1]: bad matcher format 'node': expected name=\"value\", name!=\"value\", name=~\"regex\" "
        "or name!~\"regex\"",
        "5: match[2]: invalid regex 'worker-(\\d+': missing ), unterminated subpattern at position 7",
    ],
    "bad-template.yaml": [
        "6: target.name: template syntax error: unexpected '}'",
        "12: steps[1].drain.pod_selector: unknown name 'lables' (did you mean 'labels'?); templates can use "
        "labels, annotations and alert",
    ],
    "missing-namespace.yaml": [
        "4: target: namespace is required for kind Deployment",
    ],
    "yaml-syntax.yaml": [
        "7: YAML syntax error: expected <block end>, but found '<block mapping start>' (while parsing a block "
        "mapping that starts on line 1) at column 2; check the indentation",
    ],
    "duplicate-key.yaml": [
        "11: steps[0].on_failure: key given twice (first on line 10)",
    ],
    "empty.yaml": [
        "1: the file is empty; expected a playbook with name, match, target and steps",
    ],
    "bad-cel.yaml": [
        "8: confidence.expression: CEL syntax error: unexpected end of expression (expected ':')",
        "11: steps[0].when: CEL syntax error: unexpected character '&' at column 34",
        "14: steps[1].when: unknown name 'evidnce' (did you mean 'evidence'?); CEL expressions can use evidence "
        "and alert",
    ],
    "undeclared-evidence.yaml": [
        "12: confidence.weights.container_status: evidence 'container_status' is not declared in diagnosis; "
        "declared: recent_rollout, events",
        "15: steps[0].when: evidence.recent_rolout is not declared in diagnosis (did you mean 'recent_rollout'?); "
        "declared: recent_rollout, events",
        '18: steps[1].when: evidence["kube_events"] is not declared in diagnosis (did you mean \'events\'?); '
        "declared: recent_rollout, events",
    ],
    "wrong-evidence.yaml": [
        "6: diagnosis[0].recent_rollout: evidence check recent_rollout cannot examine a Node; it works on Deployment",
        "8: diagnosis[1].node_condition: unknown field 'node_condition' (did you mean 'node_conditions'?)",
        "9: diagnosis[2]: exactly one evidence check is required, one of: recent_rollout, container_status, "
        "kube_events, node_conditions, promql",
        "14: diagnosis[3].promql.query: unknown name 'lables' (did you mean 'labels'?); templates can use labels, "
        "annotations and alert",
    ],
    "approval-without-slack.yaml": [
        "11: steps[1].approval: steps drain need approval: slack.channel and slack.approvers are required",
    ],
    # every problem of a file is reported, in line order
    "many-problems.yaml": [
        "1: name: expected a lowercase name of letters, digits and '-' that starts and ends with a letter or "
        "digit (a Kubernetes object name), got 'Many_Problems'",
        "2: match: expected a list, got 'alertname=\"KubePodCrashLooping\"'",
        "4: target.kind: expected 'Deployment', 'StatefulSet', 'DaemonSet' or 'Node', got 'Deploymnet'",
        "8: steps[0].name: field required",
        "9: steps[0].retries: expected an integer, got 'many'",
        "10: steps[0].on_failure: expected 'stop', 'continue' or 'rollback', got 'retry'",
        "12: verification_window: expected a duration such as 30s, 5m or 1h, got '-1m'",
    ],
}


@pytest.mark.parametrize("name", sorted(INVALID_CASES))
def test_invalid_playbook_messages(name):
    path = INVALID / name
    expected = [f"{path}:{line}" for line in INVALID_CASES[name]]
    with pytest.raises(PlaybookError) as err:
        load_playbook(path)
    assert [str(p) for p in err.value.problems] == expected
    assert str(err.value) == "\n".join(expected)
    assert validate_path(path) == expected


def test_every_invalid_fixture_has_its_expected_messages():
    assert sorted(p.name for p in INVALID.iterdir()) == sorted(INVALID_CASES)


def test_directory_reports_every_file_and_duplicate_names():
    directory = FIXTURES / "duplicate-names"
    with pytest.raises(PlaybookError) as err:
        load_directory(directory)
    assert str(err.value) == (
        f"{directory}/b.yaml:2: name: playbook name 'restart-deployment' is already used by {directory}/a.yaml"
    )
    problems = validate_path(INVALID)
    assert len(problems) == sum(len(v) for v in INVALID_CASES.values())
    first = sorted(INVALID_CASES)[0]
    assert problems[0] == f"{INVALID}/{first}:" + INVALID_CASES[first][0]


def test_missing_and_empty_paths(tmp_path: Path):
    assert validate_path(tmp_path / "nope") == [f"{tmp_path}/nope: no such file or directory"]
    assert validate_path(tmp_path) == [f"{tmp_path}: no playbook files (*.yaml, *.yml) in this directory"]


def test_action_without_value_means_defaults(tmp_path: Path):
    path = write(
        tmp_path,
        """
        name: bare-keys
        match: ['alertname="KubeNodeNotReady"']
        target: {kind: Node, name: "{{ labels.node }}"}
        steps:
          - name: cordon
            cordon:
            health:
              alert_resolved:
        """,
    )
    step = load_playbook(path).playbook.steps[0]
    assert step.action == "cordon" and step.health.check == "alert_resolved"


# --------------------------------------------------------------------------- matching order


def test_first_match_in_name_order(tmp_path: Path):
    common = """
        match: ['alertname="KubeDeploymentReplicasMismatch"']
        target: {kind: Deployment, namespace: "{{ labels.namespace }}", name: "{{ labels.deployment }}"}
        steps: [{name: restart, rollout_restart: {}}]
    """
    write(tmp_path, "name: b-generic\n" + textwrap.dedent(common), "1.yaml")
    write(
        tmp_path,
        "name: a-specific\n" + textwrap.dedent(common).replace("match: [", "match: ['namespace=\"shop\"', "),
        "2.yaml",
    )
    playbooks = load_directory(tmp_path)
    assert [p.ref.name for p in playbooks] == ["a-specific", "b-generic"]
    assert playbooks.match(REPLICAS_LABELS).ref.name == "a-specific"
    assert playbooks.match({**REPLICAS_LABELS, "namespace": "other"}).ref.name == "b-generic"
    assert playbooks.by_name("b-generic").ref.path == str(tmp_path / "1.yaml")
    assert playbooks.by_name("missing") is None
    with pytest.raises(ValueError, match="playbook name 'a-specific' is used by both"):
        PlaybookSet([playbooks.by_name("a-specific"), playbooks.by_name("a-specific")])


# --------------------------------------------------------------------------- templating and render


def test_render_the_real_alertmanager_fixture(tmp_path: Path):
    """firing-single.json is what Alertmanager 0.25 posted; render a playbook against it."""
    path = write(
        tmp_path,
        """
        name: restart-service
        match: ['alertname="HighErrorRate"', 'runbook="restart-deployment"']
        target:
          kind: Deployment
          namespace: "{{ labels.namespace }}"
          name: "{{ labels.service }}"
        steps:
          - name: restart
            rollout_restart: {}
            health:
              promql:
                query: 'sum(rate(http_requests_total{namespace="{{ labels.namespace }}",service="{{ labels.service }}",code=~"5.."}[1m]))'
                threshold: 1
        """,
    )
    alert = alert_from(json.loads(FIRING_SINGLE.read_text()))
    loaded = load_playbook(path)
    assert not loaded.matches(alert.labels)  # runbook is an annotation, not a label
    target, playbook = render(loaded, alert)
    assert target == TargetRef(kind="Deployment", namespace="prod", name="checkout")
    assert playbook.steps[0].health.promql.query == (
        'sum(rate(http_requests_total{namespace="prod",service="checkout",code=~"5.."}[1m]))'
    )
    assert playbook.target.namespace == "prod"


def test_render_context_exposes_alert_fields():
    alert = alert_from(json.loads(FIRING_SINGLE.read_text()))
    context = alert_context(alert)
    assert render_string("{{ alert.fingerprint }}/{{ alert.status }}/{{ alert.receiver }}", context) == (
        "32c16fb6eca3387b/firing/hook"
    )
    assert render_string("{{ alert.starts_at.isoformat() }}", context) == "2026-11-21T05:37:14.576395+00:00"
    assert render_string("{{ annotations.summary }}", context) == "5xx > 5% on checkout"
    assert render_string('{{ labels["severity"] }} {{ labels.team | default("none") }}', context) == "critical none"


def test_missing_label_names_playbook_field_and_label(tmp_path: Path):
    loaded = load_directory(PLAYBOOKS).by_name("kube-pod-crashlooping")
    alert = alert_from(json.loads(FIRING_SINGLE.read_text()))
    with pytest.raises(RenderError) as err:
        render(loaded, alert)
    assert str(err.value) == 'playbook kube-pod-crashlooping: target.name: label "pod" is not set on the alert'


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("{{ ''.__class__ }}", "access to attribute '__class__' of 'str' object is unsafe."),
        ("{{ labels.namespace.__class__.__mro__ }}", "access to attribute '__class__' of 'str' object is unsafe."),
        ("{{ labels.clear() }}", "access to attribute 'clear' of '_Fields' object is unsafe."),
        ("{{ labels.nope }}", 'label "nope" is not set on the alert'),
        ("{{ annotations.runbook_url }}", 'annotation "runbook_url" is not set on the alert'),
        (
            "{{ alert.fingerprnt }}",
            "the alert has no field 'fingerprnt' (did you mean 'fingerprint'?); fields: status, fingerprint, "
            "starts_at, ends_at, generator_url, receiver, group_key, external_url, labels, annotations",
        ),
        (
            "{{ labels.service | pod_controller_name }}",
            "pod_controller_name: pod name 'checkout' is not a Deployment's pod name "
            "(<deployment>-<pod-template-hash>-<5 characters>)",
        ),
        ("{{ '{{' }} labels.x }}", "the template rendered to '{{ labels.x }}', which is still a template"),
    ],
)
def test_sandbox_and_strict_undefined(template, message):
    context = alert_context(alert_from(json.loads(FIRING_SINGLE.read_text())))
    with pytest.raises(RenderError) as err:
        render_string(template, context)
    assert str(err.value) == message


@pytest.mark.parametrize(
    ("pod", "deployment"),
    [
        ("checkout-7d4b9c6f8-x2k4p", "checkout"),
        ("payments-api-5c9f7b8d64-q2w4z", "payments-api"),
        ("a-b-c-b-bbbbb", "a-b-c"),
    ],
)
def test_pod_controller_name(pod, deployment):
    assert pod_controller_name(pod) == deployment


def test_pod_controller_name_refuses_possibly_truncated_names():
    pod = "a" * 47 + "-7d4b9c6f8-x2k4p"
    assert len(pod) == 63
    with pytest.raises(ValueError) as err:
        pod_controller_name(pod)
    assert "63 characters long, so Kubernetes may have truncated the Deployment's name" in str(err.value)


def test_templated_int_is_validated_after_render(tmp_path: Path):
    path = write(
        tmp_path,
        """
        name: scale-from-label
        match: ['alertname="ScaleMe"']
        target: {kind: Deployment, namespace: "{{ labels.namespace }}", name: "{{ labels.deployment }}"}
        steps:
          - name: scale
            scale:
              replicas: "{{ labels.replicas }}"
              min_replicas: 1
              max_replicas: 5
        """,
    )
    loaded = load_playbook(path)
    labels = {"alertname": "ScaleMe", "namespace": "shop", "deployment": "checkout"}
    _, playbook = render(loaded, alert_with({**labels, "replicas": "3"}))
    assert playbook.steps[0].scale.replicas == 3
    with pytest.raises(RenderError) as err:
        render(loaded, alert_with({**labels, "replicas": "three"}))
    assert str(err.value) == (
        "playbook scale-from-label: steps[0].scale.replicas: expected an integer, got 'three' "
        "(rendered from '{{ labels.replicas }}')"
    )


def test_rendered_target_must_be_a_kubernetes_name(tmp_path: Path):
    loaded = load_directory(PLAYBOOKS).by_name("kube-deployment-replicas-mismatch")
    with pytest.raises(RenderError) as err:
        render(loaded, alert_with({**REPLICAS_LABELS, "deployment": "Checkout_v2"}))
    assert str(err.value) == (
        "playbook kube-deployment-replicas-mismatch: target.name: rendered to 'Checkout_v2', "
        "which is not a valid Kubernetes Deployment name"
    )
    with pytest.raises(RenderError) as err:
        render(loaded, alert_with({**REPLICAS_LABELS, "namespace": ""}))
    assert str(err.value) == (
        "playbook kube-deployment-replicas-mismatch: target.namespace: rendered to an empty string; "
        "a namespace is required"
    )


def test_templated_int_that_is_not_a_template_at_load(tmp_path: Path):
    path = write(
        tmp_path,
        """
        name: bad-delta
        match: ['alertname="ScaleMe"']
        target: {kind: Deployment, namespace: shop, name: checkout}
        steps:
          - name: scale
            scale: {delta: lots, min_replicas: 1, max_replicas: 5}
        """,
    )
    assert validate_path(path) == [
        f'{path}:6: steps[0].scale.delta: expected an integer or a template such as "{{{{ labels.replicas }}}}", '
        "got 'lots'"
    ]


# --------------------------------------------------------------------------- JSON Schema


def test_json_schema_is_valid_and_accepts_the_shipped_playbooks():
    schema = json_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["title"] == "remediator playbook"
    json.dumps(schema)  # serialisable, as `remediator schema` prints it
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    for path in sorted(PLAYBOOKS.glob("*.yaml")):
        errors = [e.message for e in validator.iter_errors(yaml.safe_load(path.read_text()))]
        assert errors == [], path


def test_json_schema_refuses_what_the_loader_refuses():
    validator = jsonschema.Draft202012Validator(json_schema())
    for name in ("unknown-param.yaml", "bad-duration.yaml", "unknown-action.yaml"):
        assert not validator.is_valid(yaml.safe_load((INVALID / name).read_text())), name
    bad_kind = yaml.safe_load((PLAYBOOKS / "kube-node-not-ready.yaml").read_text())
    bad_kind["target"]["kind"] = "Pod"
    assert not validator.is_valid(bad_kind)


# --------------------------------------------------------------------------- the model on its own


def test_model_checks_kinds_when_not_loaded_from_a_file():
    """Playbooks that reach the workflow through Temporal are validated without the loader."""
    from pydantic import ValidationError

    from remediator.domain.playbook import Playbook

    data = {
        "name": "wrong-kind",
        "match": ['alertname="X"'],
        "target": {"kind": "Deployment", "namespace": "shop", "name": "checkout"},
        "steps": [{"name": "drain", "drain": {}}],
    }
    with pytest.raises(ValidationError) as err:
        Playbook.model_validate(data)
    assert err.value.errors()[0]["msg"] == (
        "Value error, steps[0] (drain): action drain cannot act on a Deployment; it works on Node"
    )


def test_step_without_action_or_check(tmp_path: Path):
    path = write(
        tmp_path,
        """
        name: nothing-to-do
        match: ['alertname="KubeNodeNotReady"']
        target: {kind: Node, name: "{{ labels.node }}"}
        steps:
          - name: wait
            health: {timeout: 1m}
        """,
    )
    assert validate_path(path) == [
        f"{path}:6: steps[0].health: a check is required, one of: rollout_status, node_ready, node_cordoned, node_drained, promql, alert_resolved",
    ]
    path.write_text(path.read_text().replace("    health: {timeout: 1m}\n", "    retries: 1\n"))
    assert validate_path(path) == [
        f"{path}:5: steps[0]: an action is required, one of: rollout_restart, scale, rollback, cordon, "
        "uncordon, drain, delete_pod",
    ]


def test_rendered_playbook_has_no_template_left():
    playbooks = load_directory(PLAYBOOKS)
    for labels in (CRASHLOOP_LABELS, REPLICAS_LABELS, NODE_LABELS, THROTTLING_LABELS):
        _, playbook = render(playbooks.match(labels), alert_with(labels))
        dumped = playbook.model_dump_json()
        assert "{{" not in dumped and "{%" not in dumped
