"""The playbook model: what a YAML playbook may say, validated with pydantic.

A playbook names the alerts it handles (Alertmanager matchers), how to find its target
from the alert's labels, and an ordered list of steps. Each step has exactly one action
(the YAML key is the activity's name, as in Robusta: ``rollout_restart``, ``scale``,
``rollback``, ``cordon``, ``uncordon``, ``drain``, ``delete_pod``), an optional health
check, retries and what to do on failure.

String fields may hold Jinja2 templates (``{{ labels.namespace }}``), rendered in the
sandbox of remediator.templating against the alert before the workflow starts; integer
fields accept a template too and are validated as integers after rendering.

Loading from files (with file:line:field errors) lives in remediator.playbook.loader; this module
has no I/O so the workflow sandbox can import it.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, create_model, model_validator

from remediator.domain.actions import (
    ACTION_KINDS,
    ACTION_NAMES,
    ACTIONS,
    WORKLOAD_KINDS,
    ActionParams,
    ActionSpec,
    Strict,
    TargetKind,
)
from remediator.domain.durations import Duration

# --------------------------------------------------------------------------- target


class TargetSpec(Strict):
    """How to find the object to remediate from the alert.

    ``namespace`` and ``name`` are usually templates over the alert's labels, e.g.
    ``name: "{{ labels.deployment }}"`` (kube-state-metrics labels) or
    ``name: "{{ labels.pod | pod_controller_name }}"`` for pod alerts.
    """

    kind: TargetKind
    namespace: str | None = Field(None, description="Required unless kind is Node.")
    name: str

    @model_validator(mode="after")
    def _namespace_for_namespaced(self) -> "TargetSpec":
        if self.kind != "Node" and not self.namespace:
            raise ValueError(f"namespace is required for kind {self.kind}")
        if self.kind == "Node" and self.namespace:
            raise ValueError("namespace must not be set for kind Node (nodes are cluster-scoped)")
        return self


KINDS_CHECKED = "kinds_checked"
"""Validation-context key: the caller (remediator.playbook.loader) has checked ACTION_KINDS,
CHECK_KINDS and DIAGNOSIS_KINDS against the target kind itself, so ``Playbook`` skips that check."""


# --------------------------------------------------------------------------- health checks


class RolloutStatusCheck(Strict):
    """Rollout complete by ``kubectl rollout status`` conditions; failed on ProgressDeadlineExceeded."""


class NodeReadyCheck(Strict):
    """The target Node's ``Ready`` condition is ``True``."""


class NodeCordonedCheck(Strict):
    """The target Node is unschedulable (``spec.unschedulable``), read back from the API server."""


class NodeDrainedCheck(Strict):
    """No pod that ``kubectl drain`` evicts is left on the target Node (DaemonSet pods, mirror
    pods and finished pods do not count, as kubectl drain's filters)."""


class PromQLCheck(Strict):
    """A PromQL instant query whose every sample must satisfy ``<op> threshold``.

    An empty result is a failure unless ``on_empty: pass``.
    """

    query: str
    op: Literal["<", "<=", ">", ">=", "==", "!="] = "<"
    threshold: float
    on_empty: Literal["fail", "pass"] = "fail"


class AlertResolvedCheck(Strict):
    """The alert that started the run is no longer firing (resolved notification or Alertmanager API)."""


CHECK_NAMES: tuple[str, ...] = ("rollout_status", "node_ready", "node_cordoned", "node_drained", "promql", "alert_resolved")
CHECK_KINDS: dict[str, tuple[str, ...]] = {
    "rollout_status": WORKLOAD_KINDS,
    "node_ready": ("Node",),
    "node_cordoned": ("Node",),
    "node_drained": ("Node",),
    "promql": WORKLOAD_KINDS + ("Node",),
    "alert_resolved": WORKLOAD_KINDS + ("Node",),
}


CHECK_PARAMS: dict[str, type[BaseModel]] = {
    "rollout_status": RolloutStatusCheck, "node_ready": NodeReadyCheck, "promql": PromQLCheck,
    "alert_resolved": AlertResolvedCheck, "node_cordoned": NodeCordonedCheck, "node_drained": NodeDrainedCheck,
}
"""The parameter model of each health check, by name."""

HealthParams = Union[RolloutStatusCheck, NodeReadyCheck, NodeCordonedCheck, NodeDrainedCheck, PromQLCheck, AlertResolvedCheck]


class HealthCheck(Strict):
    """Exactly one check, polled every ``interval`` until it passes, fails for good, or ``timeout``."""

    rollout_status: RolloutStatusCheck | None = None
    node_ready: NodeReadyCheck | None = None
    node_cordoned: NodeCordonedCheck | None = None
    node_drained: NodeDrainedCheck | None = None
    promql: PromQLCheck | None = None
    alert_resolved: AlertResolvedCheck | None = None
    timeout: Duration = timedelta(minutes=5)
    interval: Duration = timedelta(seconds=5)

    @model_validator(mode="after")
    def _exactly_one(self) -> "HealthCheck":
        given = [n for n in CHECK_NAMES if getattr(self, n) is not None]
        if not given:
            raise ValueError(f"a check is required, one of: {', '.join(CHECK_NAMES)}")
        if len(given) > 1:
            raise ValueError(
                f"exactly one check per health block, got {len(given)}: {', '.join(given)}"
            )
        return self

    @property
    def check(self) -> str:
        """Name of the configured check, e.g. ``"rollout_status"``."""
        return next(n for n in CHECK_NAMES if getattr(self, n) is not None)


# --------------------------------------------------------------------------- steps



# --------------------------------------------------------------------------- diagnosis (evidence)


class RecentRolloutEvidence(Strict):
    """Did the target roll out within ``within``? signal: True when it did (value: revision, age_seconds)."""

    within: Duration = timedelta(minutes=30)


class ContainerStatusEvidence(Strict):
    """Termination reasons and restart counts of the target's pods (OOMKilled, Error, CrashLoopBackOff).

    signal: True when a container is crash-looping or terminated with Error, not OOMKilled
    (value: reasons {reason: count}, restarts, waiting, pods).
    """


class KubeEventsEvidence(Strict):
    """Recent v1 Events of the target and its pods. signal: True when there is at least one of ``type``."""

    since: Duration = timedelta(minutes=15)
    type: Literal["Warning", "Normal", "any"] = "Warning"


class NodeConditionsEvidence(Strict):
    """Conditions of the target Node, or of the nodes running the target's pods.

    signal: True when every node is Ready and none has pressure conditions (the node is not the cause).
    """


class PromQLEvidence(Strict):
    """A PromQL instant query; value: the samples. signal: every sample satisfies ``op threshold``."""

    query: str
    op: Literal["<", "<=", ">", ">=", "==", "!="] = ">"
    threshold: float = 0


DIAGNOSIS_NAMES: tuple[str, ...] = ("recent_rollout", "container_status", "kube_events", "node_conditions", "promql")
DIAGNOSIS_KINDS: dict[str, tuple[str, ...]] = {
    "recent_rollout": ("Deployment",),
    "container_status": WORKLOAD_KINDS + ("Node",),
    "kube_events": WORKLOAD_KINDS + ("Node",),
    "node_conditions": WORKLOAD_KINDS + ("Node",),
    "promql": WORKLOAD_KINDS + ("Node",),
}
"""Which target kinds each evidence check can examine (a Node's containers are its pods')."""


EVIDENCE_PARAMS: dict[str, type[BaseModel]] = {
    "recent_rollout": RecentRolloutEvidence, "container_status": ContainerStatusEvidence,
    "kube_events": KubeEventsEvidence, "node_conditions": NodeConditionsEvidence, "promql": PromQLEvidence,
}
"""The parameter model of each evidence check, by name."""

EvidenceParams = Union[
    RecentRolloutEvidence, ContainerStatusEvidence, KubeEventsEvidence, NodeConditionsEvidence, PromQLEvidence
]


class Diagnosis(Strict):
    """One piece of evidence, gathered by its own activity, concurrently with the others,
    before the first mutating step. ``name`` is how the confidence expression and step
    conditions refer to it (``evidence.<name>``)."""

    name: str = Field(pattern=r"^[a-z_][a-z0-9_]*$", max_length=63)
    recent_rollout: RecentRolloutEvidence | None = None
    container_status: ContainerStatusEvidence | None = None
    kube_events: KubeEventsEvidence | None = None
    node_conditions: NodeConditionsEvidence | None = None
    promql: PromQLEvidence | None = None
    timeout: Duration = timedelta(seconds=30)

    @model_validator(mode="after")
    def _exactly_one(self) -> "Diagnosis":
        given = [n for n in DIAGNOSIS_NAMES if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError(f"exactly one evidence check is required, one of: {', '.join(DIAGNOSIS_NAMES)}")
        return self

    @property
    def check(self) -> str:
        return next(n for n in DIAGNOSIS_NAMES if getattr(self, n) is not None)


class Confidence(Strict):
    """How evidence becomes a confidence in [0, 1]: exactly one of

    ``weights``: {evidence name: weight >= 0}; confidence = sum of the weights of the evidence
    whose signal is true / sum of all weights (evidence that could not be gathered counts false);
    ``expression``: a CEL expression over ``evidence`` (map of name -> {signal, value, summary})
    and ``alert`` (labels, annotations) that yields a number in [0, 1].
    """

    weights: dict[str, float] | None = None
    expression: str | None = None

    @model_validator(mode="after")
    def _one(self) -> "Confidence":
        if (self.weights is None) == (self.expression is None):
            raise ValueError("exactly one of weights or expression is required")
        if self.weights is not None and (not self.weights or any(w < 0 for w in self.weights.values())):
            raise ValueError("weights must name at least one evidence, each with a weight of 0 or more")
        return self


class ApprovalBelow(Strict):
    """Ask for approval when the run's confidence is below ``below`` (0..1)."""

    below: float = Field(ge=0, le=1)


ApprovalPolicy = Union[Literal["never", "always"], ApprovalBelow]


class Approvers(Strict):
    """Who may approve: Slack user IDs (U...) and user group IDs (S...)."""

    users: list[str] = Field(default_factory=list)
    usergroups: list[str] = Field(default_factory=list)


class SlackSettings(Strict):
    """Where approvals and escalations go, who may approve, and the approval deadlines.

    ``approval_timeout``: no answer by then -> escalate (mention ``oncall_usergroup``, notify again).
    ``approval_deadline``: no answer by then -> the step is not executed; the run ends ``needs_human``.
    """

    channel: str = Field(min_length=1, description="Channel ID (C...) or name (#oncall).")
    approvers: Approvers = Field(default_factory=Approvers)
    oncall_usergroup: str | None = None
    approval_timeout: Duration = timedelta(minutes=15)
    approval_deadline: Duration = timedelta(hours=1)

    @model_validator(mode="after")
    def _deadline_after_timeout(self) -> "SlackSettings":
        if self.approval_deadline < self.approval_timeout:
            raise ValueError("approval_deadline must not be shorter than approval_timeout")
        return self


class When(Strict):
    """Condition on facts read from the target once, before the first step.

    ``rollout_within``: the target's current revision was rolled out less than this ago.
    ``no_rollout_within``: the opposite. Both may not be given.
    """

    rollout_within: Duration | None = None
    no_rollout_within: Duration | None = None

    @model_validator(mode="after")
    def _one(self) -> "When":
        if (self.rollout_within is None) == (self.no_rollout_within is None):
            raise ValueError("exactly one of rollout_within or no_rollout_within is required")
        return self


class StepBase(Strict):
    """What every step has besides its action (see ``Step``)."""

    name: str = Field(min_length=1)
    when: When | str | None = Field(
        None, description="Typed condition, or a CEL expression over evidence and alert that yields a bool."
    )
    approval: ApprovalPolicy = "never"
    health: HealthCheck | None = None
    retries: int = Field(0, ge=0, le=10)
    on_failure: Literal["stop", "continue", "rollback"] = "stop"
    timeout: Duration = timedelta(minutes=2)

    @model_validator(mode="after")
    def _exactly_one_action(self) -> "StepBase":
        given = [n for n in ACTION_NAMES if getattr(self, n, None) is not None]
        if not given:
            raise ValueError(f"an action is required, one of: {', '.join(ACTION_NAMES)}")
        if len(given) > 1:
            raise ValueError(
                f"exactly one action per step, got {len(given)}: {', '.join(given)} "
                "(put each action in its own step)"
            )
        return self

    @property
    def action(self) -> str:
        """Name of the step's action, e.g. ``"rollback"``."""
        return next(n for n in ACTION_NAMES if getattr(self, n, None) is not None)

    @property
    def params(self) -> ActionParams:
        """The action's parameter model."""
        return getattr(self, self.action)

    @property
    def spec(self) -> ActionSpec:
        """The action's registry entry (remediator.domain.actions)."""
        return ACTIONS[self.action]


Step = create_model(
    "Step",
    __base__=StepBase,
    __doc__="""One step: exactly one action, an optional health check, retries and ``on_failure``.

    The action is one optional field per entry of the action registry
    (remediator.domain.actions.ACTIONS), named as the action: ``scale: {delta: 1, ...}``.
    ``retries``: how many more times the action and its check run after the check fails.
    ``on_failure``: ``stop`` ends the run, ``continue`` goes on with the next step,
    ``rollback`` undoes what this run changed (newest first) and ends the run.
    ``timeout``: start-to-close timeout of the action's API calls.
    ``approval``: ``never``, ``always``, or ``{below: 0.7}`` (when the run's confidence is lower).
    """,
    **{name: (spec.params | None, None) for name, spec in ACTIONS.items()},  # type: ignore[call-overload]
)


class Playbook(Strict):
    """A remediation playbook: matchers, target, steps, cooldown and verification window.

    ``cooldown``: after a run ends, alerts for the same target are recorded but start nothing
    for this long. ``verification_window``: after the last step, how long the alert may keep
    firing before the run ends as ``not_healed``. ``on_resolved``: what a ``resolved``
    notification that arrives before the steps are done does, at the next step boundary or
    during an approval wait: ``stop`` the remaining steps, ``rollback`` (stop and undo what
    this run changed, newest first, e.g. uncordon), or ``continue``. ``dry_run``: every
    mutation is sent with ``dryRun=All``; nothing changes and the run ends ``dry_run``.
    """

    name: str = Field(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=63)
    description: str = ""
    match: list[str] = Field(min_length=1, description='Alertmanager matchers, e.g. alertname="KubeNodeNotReady".')
    target: TargetSpec
    steps: list[Step] = Field(min_length=1)
    cooldown: Duration = timedelta(minutes=30)
    verification_window: Duration = timedelta(minutes=10)
    on_resolved: Literal["stop", "rollback", "continue"] = "stop"
    dry_run: bool = Field(False, description="Send every mutation with dryRun=All (validated server-side, nothing changes).")
    diagnosis: list[Diagnosis] = Field(default_factory=list)
    confidence: Confidence | None = None
    slack: SlackSettings | None = None

    @model_validator(mode="after")
    def _evidence_and_approvals(self) -> "Playbook":
        names = [d.name for d in self.diagnosis]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"diagnosis names must be unique: {', '.join(dupes)}")
        if self.confidence and self.confidence.weights:
            unknown = sorted(set(self.confidence.weights) - set(names))
            if unknown:
                raise ValueError(f"confidence.weights names unknown evidence: {', '.join(unknown)}")
        below = [s.name for s in self.steps if isinstance(s.approval, ApprovalBelow)]
        if below and self.confidence is None:
            raise ValueError(f"steps {', '.join(below)} ask for approval below a confidence: a confidence rule is required")
        needs = [s.name for s in self.steps if s.approval != "never"]
        if needs and (self.slack is None or not (self.slack.approvers.users or self.slack.approvers.usergroups)):
            raise ValueError(f"steps {', '.join(needs)} need approval: slack.channel and slack.approvers are required")
        return self

    @model_validator(mode="after")
    def _kinds_fit(self, info: ValidationInfo) -> "Playbook":
        # remediator.playbook.loader checks kinds itself, before this model exists, so that it can
        # point at the offending step's line and report every mismatch; it says so here.
        if info.context and info.context.get(KINDS_CHECKED):
            return self
        kind = self.target.kind
        for i, step in enumerate(self.steps):
            if kind not in ACTION_KINDS[step.action]:
                raise ValueError(
                    f"steps[{i}] ({step.name}): action {step.action} cannot act on a {kind}; "
                    f"it works on {', '.join(ACTION_KINDS[step.action])}"
                )
            if step.health and kind not in CHECK_KINDS[step.health.check]:
                raise ValueError(
                    f"steps[{i}] ({step.name}): health check {step.health.check} cannot check a {kind}"
                )
        for i, diagnosis in enumerate(self.diagnosis):
            if kind not in DIAGNOSIS_KINDS[diagnosis.check]:
                raise ValueError(
                    f"diagnosis[{i}] ({diagnosis.name}): evidence check {diagnosis.check} cannot examine a {kind}; "
                    f"it works on {', '.join(DIAGNOSIS_KINDS[diagnosis.check])}"
                )
        return self


class PlaybookRef(BaseModel):
    """Where a loaded playbook came from: its name, file and the sha256 of the file's bytes."""

    model_config = ConfigDict(frozen=True)

    name: str
    path: str
    sha256: str
