"""Approvals, evidence and escalation through the real workflow: a Temporal dev server, every
real activity, the Kubernetes API emulator and the Slack Web API emulator over HTTP.

Deadlines and escalation run on the time-skipping dev server (``skipping_env``), so the
10-minute and 30-minute timers pass in moments; everything else uses the session's ordinary
dev server and the shared ``worker`` and ``slack`` fixtures (tests/conftest.py).
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from temporalio.client import WorkflowFailureError, WorkflowUpdateFailedError
from temporalio.exceptions import CancelledError

from remediator.domain.messages import ApprovalDecision, RemediationStatus
from remediator.domain.playbook import Playbook
from remediator.sim.kube import Emulator
from remediator.sim.slack import SlackEmulator
from tests.support import (
    SLACK,
    alert,
    real_activities,
    running_worker,
    start_run,
    until,
)
from tests.support import playbook as _playbook
from workflows.remediation import RemediationWorkflow


def playbook(steps, **extra) -> Playbook:
    return _playbook(steps, **{"name": "approve-test", "slack": SLACK, "verification_window": "1s", **extra})


RESTART = {"name": "restart", "approval": "always", "rollout_restart": {}, "health": {"rollout_status": {}, "timeout": "20s", "interval": "200ms"}}


async def start(client, queue, pb: Playbook):
    return await start_run(
        client, queue, pb, alert(), ui_url="http://temporal-ui.example", public_url="http://remediator.example"
    )


async def waiting(handle, timeout: float = 30) -> RemediationStatus:
    async def asked() -> RemediationStatus | None:
        status = await handle.query("status", result_type=RemediationStatus)
        return status if status.waiting is not None else None

    return await until(asked, "the run to wait for approval", timeout)


def approval_posts(slack: SlackEmulator) -> list:
    return [
        c for c in slack.calls("chat.postMessage")
        if (c.params.get("metadata") or {}).get("event_type") == "remediator_approval_request"
    ]


def restart_patches(emu: Emulator) -> list:
    return [r for r in emu.requests(method="PATCH") if r.path.endswith("/deployments/checkout")]


def decision(status: RemediationStatus, user: str, verb: str = "approve") -> ApprovalDecision:
    return ApprovalDecision(request_id=status.waiting.request_id, decision=verb, user_id=user, via="slack")


async def test_approval_by_a_group_member_resumes_the_exact_step(client, worker, emulator, slack):
    emulator.clear_requests()
    handle = await start(client, worker, playbook([RESTART]))
    status = await waiting(handle)
    assert status.phase == "awaiting_approval" and status.current_step == 0
    assert restart_patches(emulator) == []  # nothing happens to the target while it waits
    # One Block Kit message with the evidence, the change, links and the two buttons.
    await until(lambda: len(approval_posts(slack)) == 1, "the approval message")
    post = approval_posts(slack)[0].params
    text = str(post["blocks"])
    assert "kubectl rollout restart" in text and "remediator_approve" in text and "remediator_reject" in text
    assert "http://temporal-ui.example/namespaces/default/workflows/" in text
    assert "http://remediator.example/runs/" in text and "prometheus.example" in text

    result = await handle.execute_update(RemediationWorkflow.decide, decision(status, "U0ALICE"))
    assert "approved by U0ALICE" in result.message
    outcome = await handle.result()
    assert [s.status for s in outcome.steps] == ["succeeded"]
    assert len(restart_patches(emulator)) == 1
    assert len(approval_posts(slack)) == 1
    # The message was rewritten in place: who approved, no buttons left.
    approval = next(m for m in slack.messages("sre-oncall") if (m.get("metadata") or {}).get("event_type") == "remediator_approval_request")
    assert "U0ALICE" in str(approval["blocks"])
    assert "remediator_approve" not in str(approval["blocks"])


async def test_reject_stops_the_step_and_the_run_needs_a_human(client, worker, emulator, slack, audit):
    emulator.clear_requests()
    handle = await start(client, worker, playbook([RESTART]))
    status = await waiting(handle)
    await handle.execute_update(RemediationWorkflow.decide, decision(status, "U0BOB", "reject"))
    outcome = await handle.result()
    assert outcome.outcome == "needs_human"
    assert "rejected by U0BOB" in outcome.reason
    assert restart_patches(emulator) == []
    # One notice when the run ends, saying how and why.
    notices = [e for e in audit.events(handle.result_run_id) if e.kind == "notice"]
    assert [e.data.get("notice_kind") for e in notices] == ["needs_human"]
    assert "rejected by U0BOB" in notices[0].message


async def test_unauthorised_stale_and_second_decisions_are_refused(client, worker, emulator, slack, audit):
    handle = await start(client, worker, playbook([RESTART]))
    status = await waiting(handle)
    with pytest.raises(WorkflowUpdateFailedError) as refused:
        await handle.execute_update(RemediationWorkflow.decide, decision(status, "U0MALLORY"))
    assert "not an approver" in str(refused.value.cause)
    stale = ApprovalDecision(request_id=status.waiting.request_id + "x", decision="approve", user_id="U0BOB", via="slack")
    with pytest.raises(WorkflowUpdateFailedError) as refused:
        await handle.execute_update(RemediationWorkflow.decide, stale)
    assert "stale request" in str(refused.value.cause)
    still = await handle.query("status", result_type=RemediationStatus)
    assert still.waiting is not None and restart_patches(emulator) == []
    await handle.execute_update(RemediationWorkflow.decide, decision(status, "U0BOB"))
    with pytest.raises(WorkflowUpdateFailedError) as refused:
        await handle.execute_update(RemediationWorkflow.decide, decision(status, "U0ALICE", "reject"))
    assert "already decided: approved by U0BOB" in str(refused.value.cause)
    await handle.result()
    approvals = [e for e in audit.events(handle.result_run_id) if e.kind == "approval" and e.data.get("decision")]
    assert [(e.data["decision"], e.data["user_id"]) for e in approvals] == [("approve", "U0BOB")]


async def test_high_confidence_needs_no_approval_low_confidence_asks(client, worker, emulator, slack):
    """The same playbook twice: evidence decides whether a human is asked."""
    steps = [dict(RESTART, approval={"below": 0.5}, name="restart")]
    evidence = {
        "diagnosis": [{"name": "rollout", "recent_rollout": {"within": "30m"}}],
        "confidence": {"expression": "evidence.rollout.signal ? 0.9 : 0.2"},
    }
    # The seed's last rollout is seconds old: evidence.rollout.signal is true, confidence 0.9.
    handle = await start(client, worker, playbook(steps, **evidence))
    outcome = await handle.result()
    assert outcome.steps[0].status == "succeeded"
    assert approval_posts(slack) == []
    low = dict(evidence, diagnosis=[{"name": "rollout", "recent_rollout": {"within": "0s"}}])
    handle = await start(client, worker, playbook(steps, **low))
    status = await waiting(handle)
    assert status.confidence == pytest.approx(0.2)
    assert "confidence 0.20 is below 0.50" in status.waiting.reason
    await handle.execute_update(RemediationWorkflow.decide, decision(status, "U0BOB", "reject"))
    assert (await handle.result()).outcome == "needs_human"


async def test_diagnosis_checks_run_concurrently(client, emulator, audit, slack_client, tmp_path):
    """Three PromQL evidence checks against a Prometheus API that answers no query until all three
    are in flight at once: the run gets its evidence only if the checks were dispatched
    concurrently, however slow the machine (gathered one by one, each would wait out the bound)."""
    server, state = _prometheus_holding_queries(expected=3, bound=15.0)
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        pb = playbook(
            [{"name": "restart", "rollout_restart": {}}],
            diagnosis=[{"name": f"q{i}", "promql": {"query": f"up{{i='{i}'}}", "op": ">", "threshold": 0}} for i in range(3)],
            confidence={"weights": {"q0": 1, "q1": 1, "q2": 1}},
        )
        activities = real_activities(emulator, audit, slack_client, tmp_path / "slack.db", prometheus_url=url)
        async with running_worker(client, activities) as queue:
            handle = await start(client, queue, pb)
            await handle.result()
        assert state["arrived"] == 3
        assert state["most"] == 3, f"at most {state['most']} queries were in flight at once"
        assert state["held_out"] == 0, "a query waited the whole bound for the others"
        evidence = [e for e in audit.events(handle.result_run_id) if e.kind == "evidence"]
        assert sorted(e.data["name"] for e in evidence) == ["q0", "q1", "q2"]
        assert all(e.data["signal"] for e in evidence)
    finally:
        server.shutdown()


async def test_no_answer_escalates_then_expires_with_skipped_time(skipping_env, emulator, audit, slack, slack_client, tmp_path):
    client = skipping_env.client
    emulator.clear_requests()
    async with running_worker(client, real_activities(emulator, audit, slack_client, tmp_path / "slack.db")) as queue:
        handle = await start(client, queue, playbook([RESTART]))
        outcome = await handle.result()
    assert outcome.outcome == "needs_human"
    assert "not approved by its deadline" in outcome.reason
    assert restart_patches(emulator) == []
    assert len(approval_posts(slack)) == 1
    messages = slack.messages("sre-oncall")
    approval = next(m for m in messages if (m.get("metadata") or {}).get("event_type") == "remediator_approval_request")
    # The escalation mentions the on-call group in the approval's thread, once.
    mentions = [m for m in messages if m.get("thread_ts") == approval["ts"] and "<!subteam^S0ONCALL>" in m.get("text", "")]
    assert len(mentions) == 1
    # The message was rewritten in place: no buttons, the outcome stated.
    assert "remediator_approve" not in str(approval["blocks"])
    assert "deadline" in str(approval["blocks"]).lower() or "expired" in str(approval["blocks"]).lower()
    kinds = [e.data.get("notice_kind") for e in audit.events(handle.result_run_id) if e.kind == "notice" and e.data.get("ts")]
    assert kinds == ["approval_escalation", "needs_human"]


def _prometheus_holding_queries(expected: int, bound: float):
    """A Prometheus HTTP API stand-in that holds every query until ``expected`` queries have
    been in flight at the same time (or ``bound`` seconds passed), then answers one sample.

    ``state``: ``arrived`` (queries received), ``most`` (most in flight at once), ``held_out``
    (queries answered only because the bound passed)."""
    cond = threading.Condition()
    state = {"arrived": 0, "inflight": 0, "most": 0, "held_out": 0}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            with cond:
                state["arrived"] += 1
                state["inflight"] += 1
                state["most"] = max(state["most"], state["inflight"])
                cond.notify_all()
                if not cond.wait_for(lambda: state["most"] >= expected, timeout=bound):
                    state["held_out"] += 1
                state["inflight"] -= 1
            body = b'{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[0,"1"]}]}}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, state


async def test_a_cancelled_run_records_its_outcome_and_posts_a_notice(client, worker, emulator, slack, audit):
    handle = await start(client, worker, playbook([RESTART]))
    await waiting(handle)
    await handle.cancel()
    with pytest.raises(WorkflowFailureError) as ended:
        await handle.result()
    assert isinstance(ended.value.cause, CancelledError)
    run = audit.get_run(handle.result_run_id)
    assert run.outcome == "cancelled" and run.cooldown_until is not None
    notices = [e for e in audit.events(run.run_id) if e.kind == "notice"]
    assert [e.data.get("notice_kind") for e in notices] == ["cancelled"]
    assert any("ended cancelled" in m.get("text", "") for m in slack.messages("sre-oncall"))
    assert restart_patches(emulator) == []
