"""Data shapes shared by the intake, the workflow and the activities.

The inputs and results of the workflow and of every activity, one model in and one model
out (``XInput`` / ``XResult``) so fields can be added without breaking running workflows.
They travel through Temporal with the pydantic data converter. (The Alertmanager webhook
payload is remediator.domain.alertmanager.)

No I/O here: the workflow sandbox imports this module.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from remediator.domain.actions import ACTION_PARAMS, ActionParams, typed_params
from remediator.domain.durations import Duration
from remediator.domain.playbook import (
    CHECK_PARAMS,
    EVIDENCE_PARAMS,
    EvidenceParams,
    HealthParams,
    Playbook,
    PlaybookRef,
)

# --------------------------------------------------------------------------- shared


class Model(BaseModel):
    """Base of workflow/activity models: unknown fields are ignored for forward compatibility."""

    model_config = ConfigDict(extra="ignore")


class TargetRef(Model):
    """A concrete Kubernetes object: ``kind`` as in the playbook, ``namespace`` None for Nodes."""

    kind: Literal["Deployment", "StatefulSet", "DaemonSet", "Node"]
    namespace: str | None = None
    name: str

    @property
    def key(self) -> str:
        """Stable text key, kubectl style: ``deployment/prod/checkout``, ``node/worker-1``."""
        if self.namespace:
            return f"{self.kind.lower()}/{self.namespace}/{self.name}"
        return f"{self.kind.lower()}/{self.name}"


MAX_ANNOTATION_CHARS = 1024
"""Characters of one annotation value a run keeps (AlertRef.bounded)."""
MAX_ANNOTATIONS_CHARS = 4096
"""Characters of all annotation keys and values a run keeps for one alert."""
TRUNCATED = " [truncated]"


class AlertRef(Model):
    """The parts of an alert the workflow keeps. ``(fingerprint, starts_at)`` identifies one firing."""

    fingerprint: str
    starts_at: datetime
    status: Literal["firing", "resolved"]
    labels: dict[str, str]
    annotations: dict[str, str] = Field(default_factory=dict)
    generator_url: str = ""
    ends_at: datetime | None = None
    receiver: str = ""
    group_key: str = ""
    external_url: str = ""

    @property
    def alertname(self) -> str:
        return self.labels.get("alertname", "")

    def bounded(self) -> "AlertRef":
        """The alert as a run keeps it: labels as sent, annotations cut to what a person reads
        (``MAX_ANNOTATION_CHARS`` per value, ``MAX_ANNOTATIONS_CHARS`` in all, values cut end
        with " [truncated]"), ``generator_url`` to 2 KiB, so whatever Alertmanager sends, an
        alert adds at most a few KiB to a run's history."""
        budget = MAX_ANNOTATIONS_CHARS
        kept: dict[str, str] = {}
        for key in sorted(self.annotations):
            if budget <= 0:
                kept["remediator.truncated"] = f"{len(self.annotations) - len(kept)} more annotations left out"
                break
            value = self.annotations[key]
            cap = min(MAX_ANNOTATION_CHARS, budget)
            if len(value) > cap:
                value = value[:cap] + TRUNCATED
            kept[key[:256]] = value
            budget -= len(key) + len(value)
        url = self.generator_url if len(self.generator_url) <= 2048 else self.generator_url[:2048] + TRUNCATED
        if kept == self.annotations and url == self.generator_url:
            return self
        return self.model_copy(update={"annotations": kept, "generator_url": url})

    @property
    def dedup_key(self) -> str:
        """``fingerprint@startsAt`` (RFC 3339): the same for every delivery of one firing."""
        return f"{self.fingerprint}@{self.starts_at.isoformat()}"


Outcome = Literal[
    "running",
    "healed",
    "not_healed",
    "failed",
    "refused",
    "rolled_back",
    "resolved",
    "needs_human",
    "terminated",
    "timed_out",
    "cancelled",
    "dry_run",
]
"""How a run ended. ``healed``: every step done and the alert resolved within the verification
window. ``not_healed``: steps done but the alert still fired at the end of the window.
``failed``: a step's health check failed and ``on_failure`` was ``stop``. ``refused``: an
action refused for safety (paused rollout, no rollout history, unmanaged pods...).
``rolled_back``: a step failed with ``on_failure: rollback`` and this run's changes were undone.
``resolved``: the alert resolved before the remaining steps ran and the playbook said stop.
``needs_human``: a step's approval was rejected or never given by its deadline; the step did
not run. ``terminated`` / ``timed_out`` / ``cancelled``: the Temporal workflow was terminated,
hit its execution timeout, or was cancelled before the run could finish (recorded by
remediator.app.settle when the workflow could not record it itself); ``failed`` is also what an
internal error of the run records. ``dry_run``: every step was sent with ``dryRun=All``
(--dry-run or the playbook's ``dry_run``); nothing changed."""

FINAL_OUTCOMES: frozenset[str] = frozenset(o for o in Outcome.__args__ if o != "running")  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- workflow


class RemediationInput(Model):
    """Start input of ``RemediationWorkflow``; workflow ID is ``remediation/<target.key>``
    (``remediation/<cluster>/<target.key>`` for an engine started with ``--cluster``).

    ``playbook`` is already rendered against the first alert (no templates left).
    ``ui_url``: Temporal UI base URL; ``public_url``: the intake's base URL (audit links).
    ``heartbeat_timeout``: how long an activity may go without a heartbeat before Temporal
    takes its worker for dead and retries it elsewhere. ``kube_retry_budget``: how long a
    Kubernetes call is retried (with backoff) through an API server outage before the step fails.
    """

    target: TargetRef
    playbook: Playbook
    playbook_ref: PlaybookRef
    simulate: bool = False
    ui_url: str = ""
    public_url: str = ""
    heartbeat_timeout: Duration = timedelta(seconds=10)
    kube_retry_budget: Duration = timedelta(minutes=3)
    dry_run: bool = Field(False, description="--dry-run, or the playbook's dry_run: every mutation is sent with dryRun=All.")
    gitops: Literal["approve", "refuse", "allow"] = Field(
        "approve", description="The policy's rule for spec-changing steps on GitOps-managed targets."
    )
    history_limit: int = Field(
        10_000, ge=100, description="Events in a run's history past which its cooldown continues as new."
    )
    carry: "RunCarry | None" = Field(None, description="What a run continued as new (cooldown, hand-over) carries over.")

    def run_info(self, run_id: str, workflow_id: str, started_at: datetime, first: AlertRef | None) -> "RunInfo":
        """The audit trail's run columns of a run of this input, ``running``."""
        return RunInfo(
            run_id=run_id,
            workflow_id=workflow_id,
            alertname=first.alertname if first else "",
            namespace=self.target.namespace,
            target=self.target.key,
            playbook=self.playbook.name,
            playbook_path=self.playbook_ref.path,
            playbook_sha256=self.playbook_ref.sha256,
            simulate=self.simulate,
            started_at=started_at,
        )


class AlertSignal(Model):
    """Payload of the ``alert`` signal: one alert (firing or resolved) for this target."""

    alert: AlertRef
    playbook: str = Field(description="Name of the playbook the intake matched.")
    received_at: datetime


class StepRecord(Model):
    """What happened to one step."""

    index: int
    name: str
    action: str
    status: StepStatus = "pending"
    attempts: int = 0
    message: str = ""


class RemediationResult(Model):
    """Result of a run."""

    run_id: str
    target: TargetRef
    playbook: str
    outcome: Outcome
    reason: str
    steps: list[StepRecord] = Field(default_factory=list)
    alerts: list[str] = Field(default_factory=list, description="dedup keys of every alert attached")


Phase = Literal[
    "diagnosing", "awaiting_slot", "awaiting_approval", "paused", "remediating", "verifying", "cooldown", "done"
]
"""Where a run is: gathering evidence, waiting for a human, changing the target, waiting for
the alert to resolve, cooling down, or ended."""

StepStatus = Literal["pending", "skipped", "running", "succeeded", "failed", "refused"]


class RemediationStatus(Model):
    """Answer of the ``status`` query: the run as it stands."""

    run_id: str
    target: TargetRef
    playbook: str
    phase: Phase
    outcome: Outcome
    reason: str = ""
    current_step: int | None = None
    steps: list[StepRecord] = Field(default_factory=list)
    alerts: list[str] = Field(default_factory=list)
    simulate: bool = False
    confidence: float | None = None
    evidence: list["Evidence"] = Field(default_factory=list)
    waiting: "ApprovalRequest | None" = Field(None, description="The approval request the run waits on, if any.")


# --------------------------------------------------------------------------- activities: kube


class KubeRequest(Model):
    """One request sent to the Kubernetes API server, as recorded for the audit trail."""

    method: str
    path: str
    content_type: str | None = None
    body: Any = None


class DescribeTargetInput(Model):
    target: TargetRef


class TargetState(Model):
    """Facts read from the target once before the first step (``describe_target``).

    ``revision``: the Deployment's ``deployment.kubernetes.io/revision``; ``last_rollout``:
    creation time of the ReplicaSet of that revision (None when unknown).
    """

    exists: bool
    resource_version: str = ""
    generation: int | None = None
    revision: int | None = None
    last_rollout: datetime | None = None
    paused: bool = False
    replicas: int | None = None
    unschedulable: bool | None = None
    ready: bool | None = None
    summary: str = ""
    gitops: str | None = Field(
        None,
        description="The GitOps controller that manages the object, in words ('Argo CD application "
        "shop' / 'Flux Kustomization apps'), None when none is recognised (remediator.k8s.gitops).",
    )


class ActionCall(Model):
    """An action and its typed parameters (remediator.domain.actions); a dict from an older
    workflow history is read into the action's model."""

    action: str
    params: ActionParams | None = None

    @model_validator(mode="before")
    @classmethod
    def _typed(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("params") is None and data.get("action") in ACTION_PARAMS:
            data = {**data, "params": {}}
        return typed_params(data, "action", ACTION_PARAMS)


class UndoAction(ActionCall):
    """A compensating action that reverses one mutation (saga); run only by ``on_failure: rollback``."""

    description: str = ""


class MutationPlanInput(ActionCall):
    """Input of ``plan_mutation``: the step's action and rendered parameters, and the workflow's
    time, used wherever kubectl stamps the wall clock (``restartedAt``)."""

    target: TargetRef
    now: datetime
    dry_run: bool = Field(False, description="Plan a server-side dry run (``dryRun=All`` on every write).")


class MutationPlan(ActionCall):
    """The concrete change one action will make, decided from one read of the target before
    anything is sent (``plan_mutation``); recorded in the workflow's history and in the audit
    trail before the mutating activity runs, so every retry of that activity applies this very
    change and nothing else.

    ``change``: the absolute desired state (``{"replicas": 4}``, ``{"revision": 2, "patch":
    [...]}``, ``{"unschedulable": true}``, ``{"restartedAt": "..."}``, ``{"uid": ...}``).
    ``precondition``: what the target must still show for the change to be sent (``{"replicas":
    3}``, ``{"revision": 3, "template_sha256": ...}``); the mutating activity re-reads the target,
    sends nothing when it already shows ``change`` (an earlier attempt applied it) and refuses
    when it shows neither. ``requests``: the mutating requests it will send, as kubectl would
    (a drain's evictions are those of the pods on the node now). ``noop``: the target is
    already as wanted; nothing will be sent and ``message`` says why (kubectl's words).
    """

    target: TargetRef
    noop: bool = False
    message: str
    change: dict[str, Any] = Field(default_factory=dict)
    precondition: dict[str, Any] = Field(default_factory=dict)
    requests: list[KubeRequest] = Field(default_factory=list)
    resource_version: str = ""
    state_before: dict[str, Any] = Field(default_factory=dict)
    undo: UndoAction | None = None
    dry_run: bool = Field(
        False,
        description="Every write is sent with ``dryRun=All`` (kubectl ``--dry-run=server``): the API server "
        "validates, runs admission and answers, and persists nothing.",
    )

    def unchanged(self) -> "MutationResult":
        """The result of a no-op plan: nothing sent, the state as read."""
        return MutationResult(
            changed=False,
            message=self.message,
            resource_version_before=self.resource_version,
            resource_version_after=self.resource_version,
            state_before=self.state_before,
            state_after=self.state_before,
        )


class MutationInput(Model):
    """Input of every mutating activity: the plan it applies (``plan_mutation``'s result).

    ``params``, ``request_id`` and ``now`` are what runs started before plans existed send
    (no ``plan``): the activity then plans by itself first, with the same checks.
    """

    target: TargetRef
    plan: MutationPlan | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    request_id: str = ""
    now: datetime | None = None
    simulate: bool = False


class MutationResult(Model):
    """What a mutating activity did.

    ``changed`` is False when the object already was in the desired state (nothing sent).
    ``requests`` are the mutating requests this attempt sent, exactly as sent.
    ``already_applied``: an earlier attempt had already applied the plan (the target showed
    the planned change when this attempt read it), so this one sent nothing. ``undo``
    reverses the change.
    """

    changed: bool
    message: str
    requests: list[KubeRequest] = Field(default_factory=list)
    already_applied: bool = False
    resource_version_before: str = ""
    resource_version_after: str = ""
    state_before: dict[str, Any] = Field(default_factory=dict)
    state_after: dict[str, Any] = Field(default_factory=dict)
    undo: UndoAction | None = None
    dry_run: bool = Field(False, description="Sent with ``dryRun=All``: nothing changed; ``state_after`` is the server's answer.")
    responses: list[Any] = Field(
        default_factory=list, description="Dry run only: the API server's answer to each request, in order."
    )


# --------------------------------------------------------------------------- activities: health


class HealthInput(Model):
    """Input of a health-check activity: one evaluation (the workflow does the polling).
    ``params``: the check's model (remediator.domain.playbook.CHECK_PARAMS)."""

    target: TargetRef
    check: str
    params: HealthParams | None = None
    alert: AlertRef | None = None

    @model_validator(mode="before")
    @classmethod
    def _typed(cls, data: Any) -> Any:
        return typed_params(data, "check", CHECK_PARAMS)


class HealthResult(Model):
    """One evaluation. ``healthy`` True: passed. ``final`` True with ``healthy`` False: failed for
    good (e.g. ProgressDeadlineExceeded), no point polling again."""

    healthy: bool
    final: bool = False
    message: str
    observed: dict[str, Any] = Field(default_factory=dict)


# --------------------------------------------------------------------------- activities: audit


AuditEventKind = Literal[
    "run_started", "alert", "decision", "step_intent", "plan", "mutation", "health", "undo", "outcome",
    "evidence", "approval", "notice", "brake",
]
"""The kinds of audit events (remediator.audit.view renders each)."""


class AuditEvent(Model):
    """One audit record. ``key`` is unique within the run and deterministic; the events travel
    as the input of the ``audit_write`` activity, so what is written is fixed by the workflow's
    history and a retried write adds nothing (the first write of a key wins)."""

    key: str
    at: datetime
    kind: AuditEventKind
    message: str
    data: dict[str, Any] = Field(default_factory=dict)


class RunInfo(Model):
    """Run-level columns of the audit trail, written with ``run_started`` and updated at the end.

    ``cooldown_until``: set with the outcome; until then no new remediation of the target
    starts (the intake answers ``cooldown``), whatever ended the run."""

    run_id: str
    workflow_id: str
    alertname: str
    namespace: str | None
    target: str
    playbook: str
    playbook_path: str
    playbook_sha256: str
    simulate: bool
    started_at: datetime
    outcome: str = "running"
    ended_at: datetime | None = None
    cooldown_until: datetime | None = None


class AuditWriteInput(Model):
    """Input of ``audit_write``: events to append and, optionally, run columns to upsert."""

    run: RunInfo | None = None
    run_id: str
    events: list[AuditEvent] = Field(default_factory=list)


# --------------------------------------------------------------------------- diagnosis and confidence


class DiagnosisInput(Model):
    """Input of a diagnosis activity (``diagnose_<check>``): one piece of evidence about the
    target. ``params``: the check's model (remediator.domain.playbook.EVIDENCE_PARAMS)."""

    target: TargetRef
    name: str
    check: str
    params: EvidenceParams | None = None
    alert: AlertRef | None = None

    @model_validator(mode="before")
    @classmethod
    def _typed(cls, data: Any) -> Any:
        return typed_params(data, "check", EVIDENCE_PARAMS)


class Evidence(Model):
    """One piece of evidence. ``signal``: does it support the playbook's remediation (see each
    check's docstring in remediator.playbook); ``value``: what was observed (JSON-able);
    ``error``: set when it could not be gathered (``signal`` is then False)."""

    name: str
    check: str
    signal: bool
    value: dict[str, Any] = Field(default_factory=dict)
    summary: str
    error: str | None = None


class AssessInput(Model):
    """Input of ``assess``: evidence, the playbook's confidence rule and each step's ``when``
    (a CEL expression, or None for steps without one or with a typed condition)."""

    evidence: list[Evidence]
    confidence: dict[str, Any] | None = Field(None, description="Confidence model as a dict, None: 1.0")
    conditions: list[str | None] = Field(default_factory=list)
    alert: AlertRef | None = None


class Assessment(Model):
    """Result of ``assess``: confidence in [0, 1] with the reason, and each CEL step condition's
    value (None where the step had none) with its reason."""

    confidence: float
    reason: str
    conditions: list[bool | None] = Field(default_factory=list)
    condition_reasons: list[str] = Field(default_factory=list)


# --------------------------------------------------------------------------- approvals (Slack)


class ApprovalRequest(ActionCall):
    """A step waiting for a human decision. ``request_id`` = ``<run_id>/step-<index>``: unique,
    stable across retries; the Slack message and every decision refer to it."""

    request_id: str
    run_id: str
    workflow_id: str
    step_index: int
    step_name: str
    action: str
    params: ActionParams | None = None
    change: str = Field(description="What the step will change, in words, e.g. 'roll deployment prod/checkout back to the previous revision'.")
    target: TargetRef
    playbook: str
    alert: AlertRef | None = None
    evidence: list[Evidence] = Field(default_factory=list)
    confidence: float | None = None
    reason: str = Field("", description="Why approval is needed (policy and confidence).")
    channel: str
    approvers: list[str] = Field(default_factory=list, description="Slack user IDs named directly")
    approver_groups: list[str] = Field(default_factory=list, description="Slack user group IDs")
    oncall_usergroup: str | None = None
    temporal_url: str = ""
    audit_url: str = ""
    requested_at: datetime
    escalate_at: datetime
    deadline: datetime
    limits: list[str] = Field(
        default_factory=list,
        description="Limits the step would exceed, each with its count; approving means exceeding them.",
    )
    gitops: str | None = Field(None, description="The GitOps controller that manages the target, if any.")
    dry_run: bool = Field(False, description="The run is a dry run: the step is sent with dryRun=All.")


class ApprovalMessage(Model):
    """Where the approval request was posted: Slack channel ID and message ``ts``."""

    request_id: str
    channel: str
    ts: str
    posted: bool = Field(description="False when an earlier attempt had already posted it (no second message).")


class ResolveApproversInput(Model):
    """Expand Slack user groups to their members at request time (``usergroups.users.list``)."""

    usergroups: list[str]


class ResolveApproversResult(Model):
    members: dict[str, list[str]] = Field(default_factory=dict, description="group ID -> user IDs")
    errors: list[str] = Field(default_factory=list)


class ApprovalDecision(Model):
    """Argument of the ``decide`` Update. ``via``: ``slack`` (HTTP interactivity), ``socket_mode`` or ``cli``.

    ``user_id`` is the approver identity checked against the playbook's approvers: Slack's for a
    click, the claimed ``--as`` for the CLI. ``os_user`` and ``os_host``: for ``via="cli"``, the
    operating-system account and host the command ran as, recorded beside the claimed identity
    (anyone who can reach Temporal can claim any ``--as``).
    """

    request_id: str
    decision: Literal["approve", "reject"]
    user_id: str = Field(min_length=1)
    user_name: str = ""
    via: Literal["slack", "socket_mode", "cli"]
    comment: str = ""
    decided_at: datetime | None = None
    os_user: str = ""
    os_host: str = ""


class DecisionResult(Model):
    """Result of the ``decide`` Update (the validator refuses before anything is written)."""

    request_id: str
    decision: Literal["approve", "reject"]
    user_id: str
    message: str


ApprovalStatus = Literal["approved", "rejected", "escalated", "expired", "executed", "failed", "resolved"]


class ApprovalOutcome(Model):
    """Input of ``update_approval_message``: rewrite the approval message in place with the outcome.

    ``decision`` (who decided, when, how) and ``result`` (what the step did) are what the Slack
    activity writes the outcome line from; the request itself is what it posted (remembered by
    ``request_id``). ``request`` and ``text``: what runs started before that sent instead.
    """

    message: ApprovalMessage
    status: ApprovalStatus
    request_id: str = ""
    decision: ApprovalDecision | None = None
    result: str = Field("", description="What happened to the step, e.g. the mutation's message or why it failed.")
    request: ApprovalRequest | None = None
    text: str = ""

    @property
    def id(self) -> str:
        return self.request_id or (self.request.request_id if self.request else "")


NoticeKind = Literal[
    "health_failed", "not_healed", "approval_rejected", "approval_timeout", "approval_escalation",
    "safety_refusal", "failed", "healed", "refused", "rolled_back", "resolved", "needs_human",
    "terminated", "timed_out", "cancelled", "dry_run", "paused", "resumed", "limit_refused",
]
"""A run's outcome (one notice when every run ends), or an event mid-run."""


class Notice(Model):
    """A notice to Slack (``post_notice``): a run's outcome, or an event mid-run. One per
    ``event_key``; notices for the same target fold into one thread.

    ``reason`` and ``step`` are what the Slack activity writes the title from (``title``: what
    runs started before that sent instead)."""

    event_key: str = Field(description="Unique per event, e.g. '<run_id>/not_healed'; a retry posts nothing twice.")
    kind: NoticeKind
    channel: str
    target: TargetRef
    run_id: str
    workflow_id: str
    playbook: str
    title: str = ""
    reason: str = ""
    step: str = Field("", description="The step concerned, as 'step 2 (drain)'.")
    timeline: list[str] = Field(default_factory=list, description="Summary lines of the run so far.")
    mention: str | None = Field(None, description="User group ID to mention, e.g. the on-call group.")
    alert: AlertRef | None = None
    temporal_url: str = ""
    audit_url: str = ""
    dry_run: bool = Field(False, description="The run is a dry run; the notice says DRY RUN.")


class NoticeResult(Model):
    channel: str
    ts: str
    thread_ts: str | None = None
    posted: bool


RemediationStatus.model_rebuild()


# --------------------------------------------------------------------------- activities: brakes


class PauseScope(Model):
    """What a pause covers: runs whose target is in ``namespace`` and whose playbook is
    ``playbook``; None means any (both None: every run)."""

    namespace: str | None = None
    playbook: str | None = None

    @property
    def key(self) -> str:
        """``namespace=prod playbook=*``: the scope's stored key."""
        return f"namespace={self.namespace or '*'} playbook={self.playbook or '*'}"

    def covers(self, namespace: str | None, playbook: str) -> bool:
        return (self.namespace is None or self.namespace == namespace) and (self.playbook is None or self.playbook == playbook)

    def __str__(self) -> str:
        parts = [f"namespace {self.namespace}" if self.namespace else "", f"playbook {self.playbook}" if self.playbook else ""]
        return " and ".join(p for p in parts if p) or "every namespace and playbook"


class Pause(PauseScope):
    """A pause in force: who paused, when and why."""

    reason: str
    paused_by: str
    paused_at: datetime


class SlotInput(Model):
    """Input of ``acquire_slot``: ``requested_at`` is when the run first asked (its place in
    the queue; the same on every retry and every later poll)."""

    run_id: str
    workflow_id: str
    target: TargetRef
    requested_at: datetime


class SlotResult(Model):
    """``granted``: the run may go past diagnosis. Else ``position`` (1-based) among the runs
    waiting, ``holders`` of ``limit`` slots taken. ``queue_timeout``: the policy's."""

    granted: bool
    position: int = 0
    holders: int = 0
    limit: int = 0
    queue_timeout: Duration = timedelta(minutes=15)
    message: str = ""


class ReleaseInput(Model):
    """Input of ``release_brakes``: the run ended; its slot and frozen marker go."""

    run_id: str


class GateInput(Model):
    """Input of ``gate_mutation``, asked right before each mutation of a run.

    ``key``: unique per mutation attempt (``<run_id>/<step>/<attempt>``); a retried gate with
    the same key finds its grant. ``undo``: a compensation (limits do not apply, a pause
    does). ``override_by``: an approver approved exceeding the limits this step hit."""

    key: str
    run_id: str
    workflow_id: str
    target: TargetRef
    playbook: str
    action: str
    step: int
    undo: bool = False
    dry_run: bool = False
    override_by: str | None = None


LimitName = Literal["unschedulable_nodes", "actions", "per_target"]


class LimitHit(Model):
    """One limit the mutation would exceed: ``count`` it would make, ``max`` allowed."""

    limit: LimitName
    message: str
    count: int
    max: int


class GateResult(Model):
    """``granted``; or ``paused`` (the pause in force; the run freezes); or ``exceeded``
    (each limit hit; the step is refused unless an approver overrides). ``gitops``: the
    policy's mode for GitOps-managed targets."""

    verdict: Literal["granted", "paused", "exceeded"]
    pause: Pause | None = None
    limits: list[LimitHit] = Field(default_factory=list)
    gitops: Literal["approve", "refuse", "allow"] = "approve"
    message: str = ""


class FlipFlopInput(Model):
    """Input of ``rolled_away_from``: the pod template a rollback would return to."""

    run_id: str
    workflow_id: str
    template_sha256: str


class FlipFlopResult(Model):
    """The earlier run that rolled the Deployment away from that template, if any."""

    run_id: str | None = None
    at: str = ""
    detail: str = ""


class RunCarry(Model):
    """What a run carries into its continuation (``continue_as_new``): the alerts it had seen
    (dedup keys, bounded), the cooldown it was in, and the alerts of another playbook queued
    for the target."""

    seen: list[str] = Field(default_factory=list)
    cooldown_until: datetime | None = None
    ended_outcome: str = ""
    queued: list["AlertSignal"] = Field(default_factory=list)
    handed_over_from: str = Field("", description="Run ID of the run whose queued alert started this one.")
    audit_run_id: str = Field("", description="A continued cooldown: the run whose audit trail it writes on.")
    inbox: list["AlertSignal"] = Field(default_factory=list, description="Signals received but not yet folded in.")


RemediationInput.model_rebuild()


class RenderPlaybookInput(Model):
    """Input of ``render_playbook``: a queued alert and the playbook the intake matched for it."""

    alert: AlertRef
    playbook: str


class RenderPlaybookResult(Model):
    """The rendered playbook for the alert, or ``error`` (unknown playbook, render failure)."""

    target: TargetRef | None = None
    playbook: Playbook | None = None
    playbook_ref: PlaybookRef | None = None
    dry_run: bool = False
    error: str = ""


class HandoffInput(Model):
    """A large Alertmanager group, as the intake accepted it, for ``AlertHandoffWorkflow``.

    ``alerts`` carry the alerts' own fields; the group's ``receiver``, ``group_key`` and
    ``external_url`` are sent once here and set back on each alert by the activity.
    ``received_at``: when the intake received the group (UTC).
    """

    received_at: datetime
    receiver: str = ""
    group_key: str = ""
    external_url: str = ""
    alerts: list[AlertRef]

    def group_alerts(self) -> list[AlertRef]:
        """``alerts`` with the group's fields set back, as the intake would hand each over."""
        group = {"receiver": self.receiver, "group_key": self.group_key, "external_url": self.external_url}
        return [a.model_copy(update=group) for a in self.alerts]


class HandoffSummary(Model):
    """What the hand-off did: alerts by disposition (remediator.app.handoff.Disposition)."""

    dispositions: dict[str, int] = Field(default_factory=dict)
