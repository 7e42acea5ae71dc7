"""RemediationWorkflow: one remediation of one Kubernetes object, driven by a playbook.

Started by the intake with signal-with-start on the workflow ID ``remediation/<target key>``
(remediator.temporal.workflow_id_for), so at most one remediation runs per target: later
alerts for the same target arrive as ``alert`` signals and are attached to this run.

The run, in order (every decision goes to the audit trail through the ``audit_write``
activity, with deterministic event keys so retries write nothing twice):

1. record the run and its first alert(s); read the target once (``describe_target``);
2. for each step: evaluate ``when``, record the intent, run the action (a mutating
   activity that does what kubectl does), record the exact change, then poll the step's
   health check until it passes, fails for good or times out; retry the step up to
   ``retries`` times; on failure ``stop``, ``continue`` or ``rollback`` (run the undo actions
   of this run's changes, newest first);
3. verify: wait up to the playbook's ``verification_window`` for every attached alert to
   resolve (resolved notification, or the Alertmanager API) -> ``healed`` / ``not_healed``;
4. cool down: stay alive for the playbook's ``cooldown`` so further alerts for the target
   are recorded and start nothing, then return.

Deterministic: only ``workflow.now()``, timers, activities and signals; no I/O.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from remediator.models import (
        AlertRef,
        AlertSignal,
        AuditEvent,
        AuditWriteInput,
        DescribeTargetInput,
        HealthInput,
        HealthResult,
        MutationInput,
        MutationResult,
        RemediationInput,
        RemediationResult,
        RemediationStatus,
        RunInfo,
        StepRecord,
        TargetState,
        UndoAction,
    )
    from remediator.durations import format_duration as fmt
    from remediator.kube import NON_RETRYABLE_ERROR_TYPES
    from remediator.playbook import Step
    from remediator.temporal import SA_ALERTNAME, SA_NAMESPACE, SA_OUTCOME, SA_PLAYBOOK, SA_TARGET

# Error types an activity raises that retrying cannot fix (remediator.kube).
NON_RETRYABLE = list(NON_RETRYABLE_ERROR_TYPES)

KUBE_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=6,
    non_retryable_error_types=NON_RETRYABLE,
)
HEALTH_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    maximum_interval=timedelta(seconds=10),
    maximum_attempts=3,
    non_retryable_error_types=NON_RETRYABLE,
)
AUDIT_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30))
VERIFY_POLL = timedelta(seconds=5)


class StepFailed(Exception):
    """A step did not succeed; ``refused`` marks a safety refusal (never retried)."""

    def __init__(self, message: str, *, refused: bool = False) -> None:
        super().__init__(message)
        self.refused = refused


@workflow.defn(name="RemediationWorkflow")
class RemediationWorkflow:
    """Runs one playbook against one target; see the module docstring for the phases."""

    @workflow.init
    def __init__(self, inp: RemediationInput) -> None:
        self._inp = inp
        self._inbox: list[AlertSignal] = []
        self._seen: set[str] = set()
        self._firing: dict[str, AlertRef] = {}  # dedup_key -> alert attached to this run
        self._resolved: set[str] = set()
        self._phase = "diagnosing"
        self._outcome = "running"
        self._reason = ""
        self._current: int | None = None
        self._steps = [
            StepRecord(index=i, name=s.name, action=s.action) for i, s in enumerate(inp.playbook.steps)
        ]
        self._seq = 0
        self._buffer: list[AuditEvent] = []
        self._undo: list[UndoAction] = []
        self._state: TargetState | None = None
        self._run_pending: RunInfo | None = None

    # ------------------------------------------------------------------ messages

    @workflow.signal(name="alert")
    def alert(self, sig: AlertSignal) -> None:
        """An alert for this target (firing or resolved); handled in the run loop."""
        self._inbox.append(sig)

    @workflow.query(name="status")
    def status(self) -> RemediationStatus:
        """The run as it stands; reads only."""
        return RemediationStatus(
            run_id=workflow.info().run_id,
            target=self._inp.target,
            playbook=self._inp.playbook.name,
            phase=self._phase,  # type: ignore[arg-type]
            outcome=self._outcome,  # type: ignore[arg-type]
            reason=self._reason,
            current_step=self._current,
            steps=self._steps,
            alerts=sorted(self._seen),
            simulate=self._inp.simulate,
        )

    # ------------------------------------------------------------------ run

    @workflow.run
    async def run(self, inp: RemediationInput) -> RemediationResult:
        info = workflow.info()
        self._log("remediation of %s with playbook %s (%s)", inp.target.key, inp.playbook.name, inp.playbook_ref.sha256[:12])
        # Signal-with-start delivers the first alert with the start; wait briefly otherwise.
        await self._sleep_or_signal(timedelta(seconds=10) if not self._inbox else timedelta(0))
        self._event(
            "run_started",
            f"remediation of {inp.target.key} with playbook {inp.playbook.name}",
            playbook=inp.playbook_ref.model_dump(),
            target=inp.target.model_dump(),
            steps=[s.name for s in inp.playbook.steps],
        )
        self._drain_inbox()
        first = next(iter(self._firing.values()), None)
        workflow.upsert_search_attributes(
            [
                SA_ALERTNAME.value_set(first.alertname if first else ""),
                SA_NAMESPACE.value_set(inp.target.namespace or ""),
                SA_TARGET.value_set(inp.target.key),
                SA_PLAYBOOK.value_set(inp.playbook.name),
                SA_OUTCOME.value_set("running"),
            ]
        )
        # Written with the first flush, which comes before any mutation.
        self._run_pending = self._run_info(first)

        try:
            await self._remediate()
        except StepFailed as failure:
            # Outcome already set by the step logic; the message is the reason.
            if self._outcome == "running":
                self._finish("refused" if failure.refused else "failed", str(failure))
        if self._outcome == "running":
            await self._verify()

        self._phase = "done" if inp.playbook.cooldown <= timedelta(0) else "cooldown"
        workflow.upsert_search_attributes([SA_OUTCOME.value_set(self._outcome)])
        self._event("outcome", f"{self._outcome}: {self._reason}", outcome=self._outcome, reason=self._reason)
        ended = workflow.now()
        await self._flush(run=self._run_info(first, outcome=self._outcome, ended=ended))
        self._log("remediation of %s ended %s: %s", inp.target.key, self._outcome, self._reason)

        await self._cooldown(ended)
        self._phase = "done"
        return RemediationResult(
            run_id=info.run_id,
            target=inp.target,
            playbook=inp.playbook.name,
            outcome=self._outcome,  # type: ignore[arg-type]
            reason=self._reason,
            steps=self._steps,
            alerts=sorted(self._seen),
        )

    # ------------------------------------------------------------------ phases

    async def _remediate(self) -> None:
        inp = self._inp
        self._state = await workflow.execute_activity(
            "describe_target",
            DescribeTargetInput(target=inp.target),
            result_type=TargetState,
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=KUBE_RETRY,
        )
        self._event("decision", f"target {inp.target.key}: {self._state.summary}", state=self._state.model_dump(mode="json"))
        if not self._state.exists:
            self._finish("refused", f"{inp.target.key} does not exist")
            return
        self._phase = "remediating"
        for index, step in enumerate(inp.playbook.steps):
            if self._alerts_resolved() and inp.playbook.on_resolved == "stop":
                for rest in self._steps[index:]:
                    rest.status = "skipped"
                self._event("decision", "alert resolved before the remaining steps ran; playbook says stop")
                self._finish("resolved", "the alert resolved before the remaining steps ran")
                return
            self._current = index
            skip = self._skip_reason(step)
            if skip:
                self._steps[index].status = "skipped"
                self._steps[index].message = skip
                self._event("decision", f"step {index + 1} ({step.name}) skipped: {skip}", step=index)
                continue
            try:
                await self._run_step(index, step)
            except StepFailed as failure:
                record = self._steps[index]
                record.status = "refused" if failure.refused else "failed"
                record.message = str(failure)
                if failure.refused:
                    self._finish("refused", f"step {index + 1} ({step.name}) refused: {failure}")
                    return
                if step.on_failure == "continue":
                    self._event("decision", f"step {index + 1} ({step.name}) failed; on_failure: continue", step=index)
                    continue
                if step.on_failure == "rollback":
                    self._event("decision", f"step {index + 1} ({step.name}) failed; on_failure: rollback", step=index)
                    await self._undo_all()
                    self._finish("rolled_back", f"step {index + 1} ({step.name}) failed: {failure}; this run's changes were undone")
                    return
                self._finish("failed", f"step {index + 1} ({step.name}) failed: {failure}")
                return
        self._current = None

    async def _run_step(self, index: int, step: Step) -> None:
        record = self._steps[index]
        record.status = "running"
        params = step.params.model_dump(mode="json")
        check = step.health.check if step.health else None
        self._event(
            "step_intent",
            f"step {index + 1} ({step.name}): {step.action} {self._inp.target.key}"
            + (f", then check {check}" if check else ""),
            step=index,
            action=step.action,
            params=params,
            health=step.health.model_dump(mode="json") if step.health else None,
        )
        last_error = ""
        for attempt in range(1, step.retries + 2):
            record.attempts = attempt
            await self._flush()
            result = await self._mutate(step.action, params, index, attempt, step.timeout, step)
            self._event(
                "mutation",
                result.message,
                step=index,
                attempt=attempt,
                changed=result.changed,
                requests=[r.model_dump(mode="json") for r in result.requests],
                resource_version_before=result.resource_version_before,
                resource_version_after=result.resource_version_after,
                state_before=result.state_before,
                state_after=result.state_after,
            )
            if result.undo is not None and result.changed:
                self._undo.append(result.undo)
            if step.health is None:
                record.status = "succeeded"
                record.message = result.message
                await self._flush()
                return
            healthy, message = await self._check(index, attempt, step)
            if healthy:
                record.status = "succeeded"
                record.message = message
                await self._flush()
                return
            last_error = message
            if attempt <= step.retries:
                self._event("decision", f"step {index + 1} ({step.name}) health check failed: {message}; retrying", step=index)
        raise StepFailed(last_error)

    async def _mutate(
        self, action: str, params: dict[str, Any], index: int, attempt: int, timeout: timedelta, step: Step | None
    ) -> MutationResult:
        inp = self._inp
        heartbeat = timedelta(seconds=30) if action == "drain" else None
        if action == "drain":
            drain_timeout = step.drain.timeout if step and step.drain else timedelta(minutes=5)
            timeout = max(timeout, drain_timeout + timedelta(minutes=1))
        try:
            return await workflow.execute_activity(
                action,
                MutationInput(
                    target=inp.target,
                    params=params,
                    request_id=f"{workflow.info().run_id}/{index}/{attempt}",
                    now=workflow.now(),
                    simulate=inp.simulate,
                ),
                result_type=MutationResult,
                start_to_close_timeout=timeout,
                heartbeat_timeout=heartbeat,
                retry_policy=KUBE_RETRY,
            )
        except ActivityError as err:
            cause = err.cause
            refused = isinstance(cause, ApplicationError) and cause.type == "SafetyRefusal"
            message = cause.message if isinstance(cause, ApplicationError) else str(cause or err)
            # A partly done action (a drain that timed out on a PodDisruptionBudget) reports what it
            # already sent and how to undo it: record both so on_failure: rollback can restore.
            partial = cause.details[0] if isinstance(cause, ApplicationError) and cause.details else None
            partial = partial if isinstance(partial, dict) else {}
            if partial.get("undo"):
                self._undo.append(UndoAction.model_validate(partial["undo"]))
            self._event(
                "decision",
                f"{action} failed: {message}",
                step=index,
                attempt=attempt,
                error_type=getattr(cause, "type", None),
                requests=partial.get("requests", []),
            )
            raise StepFailed(message, refused=refused) from err

    async def _check(self, index: int, attempt: int, step: Step) -> tuple[bool, str]:
        """Poll the step's health check every ``interval`` until it passes, fails for good or times out."""
        assert step.health is not None
        health = step.health
        name = health.check
        deadline = workflow.now() + health.timeout
        polls = 0
        result = HealthResult(healthy=False, message="not evaluated")
        while True:
            polls += 1
            if name == "alert_resolved" and self._alerts_resolved():
                result = HealthResult(healthy=True, final=True, message="resolved notification received")
            else:
                result = await self._evaluate(name, getattr(health, name).model_dump(mode="json"))
            if result.healthy or result.final or workflow.now() >= deadline:
                break
            remaining = deadline - workflow.now()
            await self._sleep_or_signal(min(health.interval, remaining))
            self._drain_inbox()
        timed_out = not result.healthy and not result.final
        message = result.message + (f" (timed out after {fmt(health.timeout)})" if timed_out else "")
        self._event(
            "health",
            message,
            step=index,
            attempt=attempt,
            check=name,
            healthy=result.healthy,
            polls=polls,
            observed=result.observed,
        )
        return result.healthy, message

    async def _evaluate(self, name: str, params: dict[str, Any]) -> HealthResult:
        primary = next(iter(self._firing.values()), None)
        try:
            return await workflow.execute_activity(
                f"check_{name}",
                HealthInput(target=self._inp.target, check=name, params=params, alert=primary),
                result_type=HealthResult,
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=HEALTH_RETRY,
            )
        except ActivityError as err:
            cause = err.cause
            message = cause.message if isinstance(cause, ApplicationError) else str(cause or err)
            final = isinstance(cause, ApplicationError) and cause.non_retryable
            return HealthResult(healthy=False, final=final, message=f"check could not be evaluated: {message}")

    async def _undo_all(self) -> None:
        while self._undo:
            undo = self._undo.pop()
            self._event("undo", f"undo: {undo.description or undo.action}", action=undo.action, params=undo.params)
            await self._flush()
            try:
                result = await self._mutate(undo.action, undo.params, -1, len(self._undo) + 1, timedelta(minutes=2), None)
            except StepFailed as failure:
                self._event("undo", f"undo {undo.action} failed: {failure}", action=undo.action)
                continue
            self._event(
                "mutation",
                result.message,
                undo=True,
                changed=result.changed,
                requests=[r.model_dump(mode="json") for r in result.requests],
                resource_version_before=result.resource_version_before,
                resource_version_after=result.resource_version_after,
            )

    async def _verify(self) -> None:
        """Wait up to the verification window for every attached alert to stop firing."""
        self._phase = "verifying"
        window = self._inp.playbook.verification_window
        deadline = workflow.now() + window
        self._event("decision", f"steps done; verifying for up to {fmt(window)} that the alert resolves")
        while not self._alerts_resolved():
            remaining = deadline - workflow.now()
            if remaining <= timedelta(0):
                break
            await self._sleep_or_signal(min(VERIFY_POLL, remaining))
            self._drain_inbox()
            if self._alerts_resolved():
                break
            result = await self._evaluate("alert_resolved", {})
            if result.healthy:
                for key in self._firing:
                    self._resolved.add(key)
                self._event("health", result.message, check="alert_resolved", healthy=True)
        if self._alerts_resolved():
            self._finish("healed", "every step succeeded and the alert resolved")
        else:
            self._finish("not_healed", f"the alert was still firing {fmt(window)} after the last step")

    async def _cooldown(self, ended) -> None:
        cooldown = self._inp.playbook.cooldown
        until = ended + cooldown
        while workflow.now() < until:
            await self._sleep_or_signal(until - workflow.now())
            if self._inbox:
                self._drain_inbox(cooldown_until=until)
                await self._flush()

    # ------------------------------------------------------------------ helpers

    def _drain_inbox(self, cooldown_until=None) -> None:
        """Fold pending signals into the run: dedup firings, attach new ones, note resolutions."""
        while self._inbox:
            sig = self._inbox.pop(0)
            alert = sig.alert
            key = alert.dedup_key
            if alert.status == "resolved":
                if key in self._firing and key not in self._resolved:
                    self._resolved.add(key)
                    self._event("alert", f"alert {alert.alertname} {alert.fingerprint} resolved", dedup_key=key, status="resolved", disposition="resolved")
                continue
            if key in self._seen:
                continue  # the same firing delivered again (repeat, HA peer, resend)
            self._seen.add(key)
            if cooldown_until is not None:
                disposition = "cooldown"
                message = f"alert {alert.alertname} {alert.fingerprint} for {self._inp.target.key} recorded, no new remediation: cooling down until {cooldown_until.isoformat()}"
            else:
                self._firing[key] = alert
                disposition = "started" if len(self._firing) == 1 else "attached"
                message = (
                    f"alert {alert.alertname} {alert.fingerprint} firing since {alert.starts_at.isoformat()}"
                    if disposition == "started"
                    else f"alert {alert.alertname} {alert.fingerprint} attached to the running remediation"
                )
            self._event(
                "alert",
                message,
                dedup_key=key,
                status="firing",
                disposition=disposition,
                playbook=sig.playbook,
                alert=alert.model_dump(mode="json"),
            )

    def _alerts_resolved(self) -> bool:
        return bool(self._firing) and all(k in self._resolved for k in self._firing)

    def _skip_reason(self, step: Step) -> str | None:
        if step.when is None:
            return None
        last = self._state.last_rollout if self._state else None
        if last is None:
            return "the target's last rollout time is unknown" if step.when.rollout_within else None
        age = workflow.now() - last
        if step.when.rollout_within is not None and age > step.when.rollout_within:
            return f"last rollout was {_human(age)} ago, not within {fmt(step.when.rollout_within)}"
        if step.when.no_rollout_within is not None and age <= step.when.no_rollout_within:
            return f"last rollout was {_human(age)} ago, within {fmt(step.when.no_rollout_within)}"
        return None

    async def _sleep_or_signal(self, duration: timedelta) -> None:
        """Sleep up to ``duration``, waking early when a signal arrives."""
        if duration <= timedelta(0):
            return
        try:
            await workflow.wait_condition(lambda: bool(self._inbox), timeout=duration)
        except TimeoutError:
            pass

    def _finish(self, outcome: str, reason: str) -> None:
        self._outcome = outcome
        self._reason = reason
        self._event("decision", f"run ends {outcome}: {reason}", outcome=outcome)

    def _event(self, kind: str, message: str, **data: Any) -> None:
        self._seq += 1
        if self._inp.simulate:
            data["simulated_cluster"] = True
        self._buffer.append(
            AuditEvent(key=f"{self._seq:05d}-{kind}", at=workflow.now(), kind=kind, message=message, data=data)  # type: ignore[arg-type]
        )

    async def _flush(self, run: RunInfo | None = None) -> None:
        """Append the buffered events (and run columns) to the audit trail.

        A local activity: a short, idempotent SQLite write in this worker's process, with no
        round trip through the task queue on the path from alert to first mutation.
        """
        run = run or self._run_pending
        if not self._buffer and run is None:
            return
        events, self._buffer, self._run_pending = self._buffer, [], None
        await workflow.execute_local_activity(
            "audit_write",
            AuditWriteInput(run=run, run_id=workflow.info().run_id, events=events),
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=AUDIT_RETRY,
        )

    def _run_info(self, first: AlertRef | None, outcome: str = "running", ended=None) -> RunInfo:
        info = workflow.info()
        inp = self._inp
        return RunInfo(
            run_id=info.run_id,
            workflow_id=info.workflow_id,
            alertname=first.alertname if first else "",
            namespace=inp.target.namespace,
            target=inp.target.key,
            playbook=inp.playbook.name,
            playbook_path=inp.playbook_ref.path,
            playbook_sha256=inp.playbook_ref.sha256,
            simulate=inp.simulate,
            started_at=info.start_time,
            outcome=outcome,
            ended_at=ended,
        )

    def _log(self, msg: str, *args: Any) -> None:
        # In --simulate mode the process's log filter prefixes every line with [simulated cluster].
        workflow.logger.info(msg, *args)


def _human(delta: timedelta) -> str:
    return fmt(timedelta(seconds=int(delta.total_seconds())))
