"""Branches of RemediationWorkflow with stand-in activities, on the time-skipping dev server.

As samples-python tests its workflows: the real ``RemediationWorkflow`` on a real Temporal
server (``skipping_env``, tests/conftest.py: per-workflow time skipping, so the 30-minute
approval deadline and the 1-hour cooldown pass in moments), with activities replaced by
stand-ins registered under the same names as the real ones (remediator.app.runtime
``build_activities``). Each stand-in records its input, so the tests read what the workflow
asked for, in which order, and what it wrote to the audit trail and to Slack. The integration
tests of the same behaviour against real components are in tests/test_workflow.py and
tests/test_approvals.py; these cover the branches, fast and exactly:

* ``on_failure: rollback``: this run's changes undone newest first (and an undo that fails
  does not stop the older ones);
* an approval nobody gives: escalated at ``approval_timeout``, expired at ``approval_deadline``,
  the step never runs, the run ends ``needs_human``;
* the cooldown: alerts during it are recorded with disposition ``cooldown``, and the run ends
  only when it is over.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from temporalio import activity
from temporalio.common import RawValue
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError

from remediator.domain.messages import (
    ApprovalMessage,
    ApprovalOutcome,
    ApprovalRequest,
    AuditEvent,
    AuditWriteInput,
    DescribeTargetInput,
    FlipFlopInput,
    FlipFlopResult,
    GateInput,
    GateResult,
    HealthInput,
    HealthResult,
    MutationInput,
    MutationPlan,
    MutationPlanInput,
    MutationResult,
    Notice,
    NoticeResult,
    ReleaseInput,
    RemediationResult,
    RemediationStatus,
    ResolveApproversInput,
    ResolveApproversResult,
    SlotInput,
    SlotResult,
    TargetState,
    UndoAction,
)
from tests.support import (
    SLACK,
    alert,
    alert_signal,
    playbook,
    running_worker,
    start_run,
    until,
)

ACTIONS = ("rollout_restart", "scale", "rollback")
"""The stand-in actions (activities named as the action, as the workflow calls them)."""


class StandIns:
    """Activities with the real ones' names and types, recording every call.

    ``calls``: (activity name, input) in order. ``health``: what every health check answers.
    ``fail``: (action, n): the n-th call of that action's activity fails for good (a 422), as
    an undo the API server refuses would.
    """

    def __init__(self, *, health: HealthResult | None = None, fail: tuple[str, int] | None = None) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.health = health or HealthResult(healthy=True, message="stand-in: healthy")
        self.fail = fail
        self.revision = 3
        self.replicas = 3

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]

    def inputs(self, name: str) -> list[Any]:
        return [inp for n, inp in self.calls if n == name]

    def audit_events(self) -> list[AuditEvent]:
        return [e for w in self.inputs("audit_write") for e in w.events]

    def activities(self) -> list:
        stand = self

        @activity.defn(name="describe_target")
        async def describe_target(inp: DescribeTargetInput) -> TargetState:
            stand.calls.append(("describe_target", inp))
            return TargetState(exists=True, revision=stand.revision, replicas=stand.replicas,
                               summary=f"{inp.target.key}: {stand.replicas}/{stand.replicas} ready (stand-in)")

        @activity.defn(name="plan_mutation")
        async def plan_mutation(inp: MutationPlanInput) -> MutationPlan:
            stand.calls.append(("plan_mutation", inp))
            undo = None
            if inp.action == "scale":
                change = {"replicas": inp.params.replicas if inp.params.replicas is not None else stand.replicas + inp.params.delta}
                undo = UndoAction(action="scale", params={"replicas": stand.replicas, "min_replicas": stand.replicas,
                                                          "max_replicas": stand.replicas},
                                  description=f"scale back to {stand.replicas} replicas")
            elif inp.action == "rollback":
                change = {"revision": inp.params.to_revision or stand.revision - 1}
                undo = UndoAction(action="rollback", params={"to_revision": stand.revision},
                                  description=f"roll back to revision {stand.revision}")
            else:
                change = {"restartedAt": inp.now.isoformat()}
            return MutationPlan(action=inp.action, params=inp.params, target=inp.target, message=f"stand-in plan: {inp.action} {change}",
                                change=change, undo=undo)

        def action(name: str):
            @activity.defn(name=name)
            async def apply(inp: MutationInput) -> MutationResult:
                stand.calls.append((name, inp))
                plan = inp.plan
                assert plan is not None and plan.action == name
                if stand.fail == (name, len(stand.inputs(name))):
                    raise ApplicationError(f"{name}: 422 Invalid (stand-in)", type="KubePermanentError", non_retryable=True)
                if "replicas" in plan.change:
                    stand.replicas = plan.change["replicas"]
                if "revision" in plan.change:
                    stand.revision = plan.change["revision"]
                return MutationResult(changed=True, message=f"stand-in: {name} applied {plan.change}", undo=plan.undo)

            return apply

        @activity.defn(name="check_rollout_status")
        async def check_rollout_status(inp: HealthInput) -> HealthResult:
            stand.calls.append(("check_rollout_status", inp))
            return stand.health

        @activity.defn(name="check_alert_resolved")
        async def check_alert_resolved(inp: HealthInput) -> HealthResult:
            stand.calls.append(("check_alert_resolved", inp))
            return HealthResult(healthy=False, message="stand-in: still firing")

        @activity.defn(name="audit_write")
        async def audit_write(inp: AuditWriteInput) -> None:
            stand.calls.append(("audit_write", inp))

        @activity.defn(name="resolve_approvers")
        async def resolve_approvers(inp: ResolveApproversInput) -> ResolveApproversResult:
            stand.calls.append(("resolve_approvers", inp))
            return ResolveApproversResult(members={g: ["U0ALICE"] for g in inp.usergroups})

        @activity.defn(name="post_approval_request")
        async def post_approval_request(req: ApprovalRequest) -> ApprovalMessage:
            stand.calls.append(("post_approval_request", req))
            return ApprovalMessage(request_id=req.request_id, channel="C0ONCALL", ts="1700000000.000100", posted=True)

        @activity.defn(name="update_approval_message")
        async def update_approval_message(outcome: ApprovalOutcome) -> None:
            stand.calls.append(("update_approval_message", outcome))

        @activity.defn(name="post_notice")
        async def post_notice(notice: Notice) -> NoticeResult:
            stand.calls.append(("post_notice", notice))
            return NoticeResult(channel="C0ONCALL", ts=f"1700000001.{len(stand.calls):06d}", posted=True)

        @activity.defn(name="acquire_slot")
        async def acquire_slot(inp: SlotInput) -> SlotResult:
            stand.calls.append(("acquire_slot", inp))
            return SlotResult(granted=True, holders=1, limit=5, message="stand-in: slot 1 of 5")

        @activity.defn(name="gate_mutation")
        async def gate_mutation(inp: GateInput) -> GateResult:
            stand.calls.append(("gate_mutation", inp))
            return GateResult(verdict="granted", message="stand-in: granted")

        @activity.defn(name="release_brakes")
        async def release_brakes(inp: ReleaseInput) -> None:
            stand.calls.append(("release_brakes", inp))

        @activity.defn(name="rolled_away_from")
        async def rolled_away_from(inp: FlipFlopInput) -> FlipFlopResult:
            stand.calls.append(("rolled_away_from", inp))
            return FlipFlopResult()

        @activity.defn(dynamic=True)
        async def unexpected(args: Sequence[RawValue]) -> None:
            name = activity.info().activity_type
            stand.calls.append((name, None))
            raise ApplicationError(f"no stand-in for activity {name}", type="NoStandIn", non_retryable=True)

        return [
            describe_target, plan_mutation, *(action(a) for a in ACTIONS), check_rollout_status, check_alert_resolved,
            audit_write, resolve_approvers, post_approval_request, update_approval_message, post_notice,
            acquire_slot, gate_mutation, release_brakes, rolled_away_from, unexpected,
        ]


# --------------------------------------------------------------------------- on_failure: rollback

STEPS = [
    {"name": "scale up", "scale": {"delta": 1, "min_replicas": 1, "max_replicas": 10}},
    {"name": "roll back", "rollback": {"to_revision": 0}},
    {"name": "restart", "rollout_restart": {}, "health": {"rollout_status": {}, "timeout": "5m", "interval": "5s"},
     "on_failure": "rollback"},
]
STALLED = HealthResult(healthy=False, final=True, message='deployment "checkout" exceeded its progress deadline')


async def test_on_failure_rollback_undoes_this_runs_changes_newest_first(skipping_env):
    stand = StandIns(health=STALLED)
    async with running_worker(skipping_env.client, stand.activities()) as queue:
        handle = await start_run(skipping_env.client, queue, playbook(STEPS))
        result = await handle.result()

    assert result.outcome == "rolled_back", result.reason
    assert result.reason.startswith(
        'step 3 (restart) failed: deployment "checkout" exceeded its progress deadline; '
        "undone: roll back to revision 3; scale back to 3 replicas. "
        "cannot be undone: step 3: stand-in: rollout_restart applied {'restartedAt': "
    ), result.reason
    assert [(s.status, s.attempts) for s in result.steps] == [("succeeded", 1), ("succeeded", 1), ("failed", 1)]
    mutations = [(name, inp.plan.change) for name, inp in stand.calls if name in ACTIONS]
    assert mutations == [
        ("scale", {"replicas": 4}),
        ("rollback", {"revision": 2}),
        ("rollout_restart", mutations[2][1]),
        # undone newest first: the rollback, then the scale; the restart has nothing to undo
        ("rollback", {"revision": 3}),
        ("scale", {"replicas": 3}),
    ]
    assert (stand.revision, stand.replicas) == (3, 3)
    undo = [e.message for e in stand.audit_events() if e.kind == "undo"]
    assert undo == ["undo: roll back to revision 3", "undo: scale back to 3 replicas"]
    undone = [e for e in stand.audit_events() if e.kind == "mutation" and e.data.get("undo")]
    assert [e.data["changed"] for e in undone] == [True, True]
    assert "NoStandIn" not in str(stand.calls)


async def test_a_failed_undo_is_recorded_and_the_older_ones_still_run(skipping_env):
    stand = StandIns(health=STALLED, fail=("rollback", 2))  # the rollback's undo
    async with running_worker(skipping_env.client, stand.activities()) as queue:
        handle = await start_run(skipping_env.client, queue, playbook(STEPS))
        result = await handle.result()

    assert result.outcome == "rolled_back", result.reason
    assert [name for name in stand.names() if name in ACTIONS][-2:] == ["rollback", "scale"]
    assert stand.replicas == 3 and stand.revision == 2  # the scale was undone, the rollback could not be
    undo = [e.message for e in stand.audit_events() if e.kind == "undo"]
    assert undo == [
        "undo: roll back to revision 3",
        "undo rollback failed: rollback: 422 Invalid (stand-in)",
        "undo: scale back to 3 replicas",
    ]


# --------------------------------------------------------------------------- approval expiry


async def test_approval_nobody_gives_escalates_then_expires_and_the_run_needs_a_human(skipping_env):
    pb = playbook([{"name": "scale up", "approval": "always", "scale": {"delta": 1, "min_replicas": 1, "max_replicas": 10}}],
                  slack=SLACK)
    stand = StandIns()
    started = datetime.now(UTC)
    async with running_worker(skipping_env.client, stand.activities()) as queue:
        handle = await start_run(skipping_env.client, queue, pb)
        result = await handle.result()
        virtual_end = await skipping_env.get_current_time(handle)

    assert result.outcome == "needs_human"
    assert result.reason == "step 1 (scale up) was not approved by its deadline; it did not run"
    assert result.steps[0].status == "skipped"
    assert not [name for name in stand.names() if name in ACTIONS or name == "plan_mutation"]
    [request] = stand.inputs("post_approval_request")
    assert request.escalate_at - request.requested_at == timedelta(minutes=10)
    assert request.deadline - request.requested_at == timedelta(minutes=30)
    assert virtual_end >= request.deadline  # the 30 minutes passed on the run's clock...
    assert datetime.now(UTC) - started < timedelta(minutes=5)  # ...not on the wall's
    assert [o.status for o in stand.inputs("update_approval_message")] == ["escalated", "expired"]
    notices = stand.inputs("post_notice")
    assert [(n.kind, n.mention) for n in notices] == [("approval_escalation", "S0ONCALL"), ("needs_human", "S0ONCALL")]
    assert notices[1].reason == result.reason
    approvals = [e.message for e in stand.audit_events() if e.kind == "approval"]
    assert approvals[-2:] == [
        "no decision within 10m; escalated to the on-call",
        "no decision by the deadline (30m); the step did not run",
    ]


# --------------------------------------------------------------------------- cooldown


async def test_alerts_during_the_cooldown_are_recorded_and_the_run_ends_after_it(skipping_env):
    pb = playbook([{"name": "restart", "rollout_restart": {}}], cooldown="1h", verification_window="10m")
    stand = StandIns()
    first = alert()
    async with running_worker(skipping_env.client, stand.activities()) as queue:
        # Real time until the cooldown begins, so that alerts can be sent during it.
        with skipping_env.with_time_skipping_disabled():
            handle = await start_run(skipping_env.client, queue, pb, first)
        handle = skipping_env.client.get_workflow_handle(handle.id, result_type=RemediationResult)
        await until(lambda: stand.inputs("rollout_restart"), "the restart")
        await handle.signal("alert", alert_signal(first.model_copy(update={"status": "resolved"}), pb))
        await until(lambda: _phase(handle, "cooldown"), "the cooldown")
        # (the phase turns before the outcome's audit write is done)
        [outcome] = await until(lambda: [e for e in stand.audit_events() if e.kind == "outcome"], "the outcome")
        assert outcome.data["outcome"] == "healed"
        cooldown_until = datetime.fromisoformat(outcome.data["cooldown_until"])
        assert cooldown_until - outcome.at == timedelta(hours=1)

        # The same firing again (ignored: already seen), then a new firing of the same alert.
        await handle.signal("alert", alert_signal(first, pb))
        again = alert(starts="2026-11-21T06:00:00+00:00")
        await handle.signal("alert", alert_signal(again, pb))
        await until(lambda: _dispositions(stand) == ["started", "cooling_down"], "the cooldown alert to be recorded")
        # Half the cooldown later the run still cools down and records what comes.
        assert await skipping_env.fast_forward(handle, timedelta(minutes=30))
        assert await _phase(handle, "cooldown")
        later = alert(starts="2026-11-21T07:00:00+00:00")
        await handle.signal("alert", alert_signal(later, pb))
        await until(lambda: _dispositions(stand) == ["started", "cooling_down", "cooling_down"], "the second cooldown alert")

        await skipping_env.fast_forward(handle)  # the rest of the cooldown
        result = await handle.result()
        ended = await skipping_env.get_current_time(handle)

    assert result.outcome == "healed"
    assert ended >= cooldown_until
    assert sorted(result.alerts) == sorted(a.dedup_key for a in (first, again, later))
    assert len(stand.inputs("rollout_restart")) == 1  # nothing started during the cooldown
    cooling = [e for e in stand.audit_events() if e.kind == "alert" and e.data["disposition"] == "cooling_down"]
    assert [e.data["dedup_key"] for e in cooling] == [again.dedup_key, later.dedup_key]
    assert all(e.message.endswith(f"cooling down until {cooldown_until.isoformat()}") for e in cooling)
    with pytest.raises(RPCError):  # ended: the next alert goes to a new run, not this one
        await handle.signal("alert", alert_signal(alert(starts="2026-11-21T08:00:00+00:00"), pb))


async def _phase(handle, phase: str) -> bool:
    return (await handle.query("status", result_type=RemediationStatus)).phase == phase


def _dispositions(stand: StandIns) -> list[str]:
    return [e.data["disposition"] for e in stand.audit_events() if e.kind == "alert" and e.data["status"] == "firing"]


async def test_a_long_cooldown_under_a_stream_of_alerts_continues_as_new(skipping_env):
    """Past ``history_limit`` events the cooldown goes on in a fresh history (continue-as-new):
    the outcome, the alerts seen and the end of the cooldown carried over, the alerts recorded on
    the audit trail of the run that remediated."""
    pb = playbook([{"name": "restart", "rollout_restart": {}}], cooldown="1h", verification_window="10m")
    stand = StandIns()
    first = alert()
    async with running_worker(skipping_env.client, stand.activities()) as queue:
        with skipping_env.with_time_skipping_disabled():
            started = await start_run(skipping_env.client, queue, pb, first, history_limit=100)
        first_run = started.result_run_id
        handle = skipping_env.client.get_workflow_handle(started.id, result_type=RemediationResult)
        await until(lambda: stand.inputs("rollout_restart"), "the restart")
        await handle.signal("alert", alert_signal(first.model_copy(update={"status": "resolved"}), pb))
        await until(lambda: _phase(handle, "cooldown"), "the cooldown")
        sent = []
        for i in range(60):
            a = alert(fingerprint=f"c{i:03d}", starts="2026-11-21T06:00:00+00:00")
            sent.append(a.dedup_key)
            await handle.signal("alert", alert_signal(a, pb))
            await until(lambda: len(_dispositions(stand)) == i + 2, f"alert {i} recorded")
        desc = await handle.describe()
        assert desc.run_id != first_run  # continued as new at least once
        # Bounded: the limit, plus the events of the writes in flight when it was reached (the
        # run continues as new only after them, so a loaded machine overshoots by a few).
        assert desc.history_length < 150
        await skipping_env.fast_forward(handle)
        result = await handle.result()

    assert result.outcome == "healed"
    assert set(sent) <= set(result.alerts)
    writes = stand.inputs("audit_write")
    assert {w.run_id for w in writes} == {first_run}  # one audit trail, the remediating run's
    assert len(stand.inputs("rollout_restart")) == 1
