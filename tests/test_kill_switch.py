"""The kill switch over its HTTP API (remediator.app.control), as an operator's script calls it.

The intake app is built as the worker process builds it (``create_app``, then the control
router mounted as remediator.app.runtime mounts it), served by uvicorn on loopback and spoken
to with httpx; pauses live in the real audit store, notices go to the Slack Web API emulator
over HTTP, and resume signals runs on the real Temporal dev server. ``python worker.py`` serves
the same API, and a pause outlives the worker and Temporal. The last test freezes a real run of
the real workflow (every real activity, the Kubernetes API emulator) and resumes it. The CLI
commands are tested in tests/test_cli.py.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio.client import Client, WorkflowExecutionStatus

from remediator.app.config import Settings
from remediator.app.control import Controller, router
from remediator.app.intake import create_app
from remediator.audit.brakes import Brakes
from remediator.audit.store import AuditStore
from remediator.domain.messages import GateInput, TargetRef
from remediator.playbook.loader import load_directory
from remediator.sim.kube import Emulator
from remediator.sim.slack import SlackEmulator
from tests.support import CHECKOUT, WorkerProcess, permissive_brakes, playbook, serve, start_run, until, wait_phase

TOKEN = "kill-switch-token"

PLAYBOOKS = {
    "restart-on-errors": """\
name: restart-on-errors
match: ['alertname="HighErrorRate"']
target: {kind: Deployment, namespace: '{{ labels.namespace }}', name: '{{ labels.service }}'}
steps:
  - name: restart
    rollout_restart: {}
slack: {channel: "#sre-oncall"}
""",
    "node-cordon": """\
name: node-cordon
match: ['alertname="KubeNodeNotReady"']
target: {kind: Node, name: '{{ labels.node }}'}
steps:
  - name: cordon
    cordon: {}
slack: {channel: "#nodes"}
""",
    "scale-up": """\
name: scale-up
match: ['alertname="CPUThrottlingHigh"']
target: {kind: Deployment, namespace: staging, name: '{{ labels.deployment }}'}
steps:
  - name: scale
    scale: {delta: 1, min_replicas: 1, max_replicas: 5}
""",
}
"""Three playbooks: announced in #sre-oncall (any namespace), in #nodes (Nodes: no namespace
pause covers them), and without Slack (namespace ``staging`` only)."""


@dataclass
class Switch:
    """The served app: its HTTP client (with the token), the brakes' store and the Slack emulator."""

    http: httpx.AsyncClient
    brakes: Brakes
    slack: SlackEmulator

    async def pause(self, **body: Any) -> httpx.Response:
        return await self.http.post("/api/v1/pause", json=body)

    async def resume(self, **body: Any) -> httpx.Response:
        return await self.http.post("/api/v1/resume", json=body)

    async def status(self) -> dict[str, Any]:
        resp = await self.http.get("/api/v1/status")
        assert resp.status_code == 200, resp.text
        return resp.json()

    def posted(self, channel: str) -> list[str]:
        return [m["text"] for m in self.slack.messages(channel)]


@contextlib.asynccontextmanager
async def switch_on(client: Client, audit: AuditStore, slack: SlackEmulator, slack_client: Any, tmp_path: Path,
                    brakes: Brakes | None = None) -> AsyncIterator[Switch]:
    d = tmp_path / "playbooks"
    d.mkdir(exist_ok=True)
    for name, text in PLAYBOOKS.items():
        (d / f"{name}.yaml").write_text(text)
    loaded = load_directory(d)
    brakes = brakes or permissive_brakes(audit)
    settings = Settings(auth_token=TOKEN)
    app = create_app(settings, client, loaded, audit, task_queue=f"unused-{uuid.uuid4()}", brakes=brakes)
    app.include_router(router(settings, Controller(brakes, client, loaded, slack_client)))
    async with serve(app) as url, httpx.AsyncClient(
        base_url=url, timeout=30, headers={"Authorization": f"Bearer {TOKEN}"}
    ) as http:
        yield Switch(http, brakes, slack)


@pytest.fixture
async def switch(client, audit, slack, slack_client, tmp_path) -> AsyncIterator[Switch]:
    slack.add_channel("nodes")
    async with switch_on(client, audit, slack, slack_client, tmp_path) as s:
        yield s


def frozen_by_the_gate(brakes: Brakes, workflow_id: str, run_id: str, namespace: str = "prod") -> None:
    """Freeze a run as its gate does before a mutation while a pause covers it."""
    verdict = brakes.gate(GateInput(
        key=f"{run_id}/0/1", run_id=run_id, workflow_id=workflow_id, playbook="restart-on-errors", action="rollout_restart",
        step=0, target=TargetRef(kind="Deployment", namespace=namespace, name="checkout"),
    ))
    assert verdict.verdict == "paused", verdict


# --------------------------------------------------------------------------- pause, status, resume


async def test_pause_status_resume_round_trip_announced_in_slack_and_audited(switch: Switch) -> None:
    resp = await switch.pause(namespace="prod", reason="deploy freeze <!channel>", **{"as": "U0ALICE"})
    assert resp.status_code == 200, resp.text
    paused = resp.json()
    assert (paused["scope"], paused["created"], paused["in_flight"], paused["frozen"]) == ("namespace prod", True, 0, 0)
    assert {k: paused["pause"][k] for k in ("namespace", "playbook", "reason", "paused_by")} == {
        "namespace": "prod", "playbook": None, "reason": "deploy freeze <!channel>", "paused_by": "U0ALICE",
    }
    assert paused["slack"] == "posted to #sre-oncall"
    # Who and why, the reason escaped so it cannot ping the channel; not in #nodes: no
    # namespace pause covers a Node playbook.
    assert switch.posted("sre-oncall") == [
        ":octagonal_sign: remediator paused namespace prod — by <@U0ALICE>: deploy freeze &lt;!channel&gt;"
    ]
    assert switch.posted("nodes") == []

    again = await switch.pause(namespace="prod", reason="me too", **{"as": "U0BOB"})
    assert again.status_code == 200 and again.json()["created"] is False
    assert again.json()["pause"]["paused_by"] == "U0ALICE"  # the first pause stands
    assert len(switch.posted("sre-oncall")) == 1

    status = await switch.status()
    assert [(p["namespace"], p["paused_by"]) for p in status["pauses"]] == [("prod", "U0ALICE")]
    assert (status["frozen"], status["waiting"]) == ([], 0)

    resp = await switch.resume(namespace="prod", reason="freeze over", **{"as": "U0BOB"})
    assert resp.status_code == 200, resp.text
    resumed = resp.json()
    assert (resumed["resumed_by"], resumed["reason"], resumed["runs"], resumed["woken"]) == ("U0BOB", "freeze over", [], 0)
    assert resumed["pause"]["paused_by"] == "U0ALICE" and resumed["slack"] == "posted to #sre-oncall"
    assert switch.posted("sre-oncall")[1] == ":arrow_forward: remediator resumed namespace prod — by <@U0BOB>: freeze over"
    assert (await switch.status())["pauses"] == []

    # The audit's append-only brake log: each change once, with who and why.
    assert [(r.kind, r.namespace, r.playbook, r.actor, r.reason) for r in switch.brakes.log()] == [
        ("resume", "prod", None, "U0BOB", "freeze over"),
        ("pause", "prod", None, "U0ALICE", "deploy freeze <!channel>"),
    ]
    assert [r["kind"] for r in (await switch.status())["log"]] == ["resume", "pause"]


async def test_the_notice_goes_to_the_channel_of_every_playbook_in_scope(switch: Switch) -> None:
    resp = await switch.pause(reason="incident 4711", **{"as": "U0ALICE"})
    assert resp.status_code == 200 and resp.json()["scope"] == "every namespace and playbook"
    assert resp.json()["slack"] == "posted to #nodes, #sre-oncall"
    assert switch.posted("nodes") == switch.posted("sre-oncall") == [
        ":octagonal_sign: remediator paused every namespace and playbook — by <@U0ALICE>: incident 4711"
    ]
    # A playbook without a Slack section: nothing to post, and nothing is said to have been.
    resp = await switch.pause(playbook="scale-up", reason="noisy", **{"as": "ops-bot"})
    assert resp.status_code == 200 and resp.json()["slack"] is None
    assert len(switch.slack.calls("chat.postMessage")) == 2


async def test_a_slack_outage_does_not_undo_the_pause(switch: Switch) -> None:
    switch.slack.outage("chat.postMessage", count=5, status=503)
    resp = await switch.pause(namespace="prod", reason="deploy freeze", **{"as": "U0ALICE"})
    assert resp.status_code == 200, resp.text
    assert resp.json()["created"] is True
    assert resp.json()["slack"].startswith("could not post: chat.postMessage to #sre-oncall: Slack answered")
    assert [p["namespace"] for p in (await switch.status())["pauses"]] == ["prod"]


# --------------------------------------------------------------------------- refusals: nothing changes


@pytest.mark.parametrize("method, path", [("POST", "/api/v1/pause"), ("POST", "/api/v1/resume"), ("GET", "/api/v1/status")])
@pytest.mark.parametrize("authorization", [None, "Bearer wrong", "Basic dTpw"])
async def test_bad_credentials_get_401_and_change_nothing(switch: Switch, method, path, authorization) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    async with httpx.AsyncClient(base_url=str(switch.http.base_url), headers=headers) as anonymous:
        resp = await anonymous.request(method, path, json={"reason": "x", "as": "U0MALLORY"})
    assert resp.status_code == 401
    assert resp.headers["www-authenticate"] == 'Bearer realm="remediator"'
    assert resp.json()["error"]
    assert switch.brakes.pauses() == [] and switch.brakes.log() == []
    assert switch.slack.calls("chat.postMessage") == []


async def test_not_json_is_415_or_400_and_an_oversized_body_413(switch: Switch) -> None:
    resp = await switch.http.post("/api/v1/pause", content=b"reason=x", headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert resp.status_code == 415
    assert resp.json() == {"error": "Content-Type must be application/json, got application/x-www-form-urlencoded"}
    resp = await switch.http.post("/api/v1/pause", content=b'{"reason": ', headers={"Content-Type": "application/json"})
    assert resp.status_code == 400 and resp.json()["error"].startswith("body is not valid JSON")
    resp = await switch.pause(reason="x" * 70_000, **{"as": "U0ALICE"})
    assert resp.status_code == 413
    assert switch.brakes.pauses() == []


@pytest.mark.parametrize(
    "body, problems",
    [
        ({}, [("reason", "Field required"), ("as", "Field required")]),
        ({"namespace": "Prod_1", "reason": "r", "as": "U1"},
         [("namespace", "must be a namespace name (DNS-1123 label: at most 63 lower-case letters, digits and '-', "
                        "starting and ending with a letter or digit), or left out for every namespace; got 'Prod_1'")]),
        ({"namespace": "a" * 64, "reason": "r", "as": "U1"}, [("namespace", None)]),
        ({"namespace": "", "reason": "r", "as": "U1"}, [("namespace", None)]),
        ({"playbook": " ", "reason": "r", "as": "U1"}, [("playbook", "must be a playbook name, or left out for every playbook; got an empty name")]),
        ({"reason": "  ", "as": "U1"}, [("reason", "must not be empty: say why, for the audit trail and the Slack notice")]),
        ({"reason": "x" * 501, "as": "U1"}, [("reason", "must be at most 500 characters, got 501")]),
        ({"reason": "r", "as": ""}, [("as", "must not be empty: who asks (your Slack user ID, e.g. U0ALICE)")]),
        ({"reason": "r", "as": "U1 U2"}, [("as", None)]),
        ({"namespace": 7, "reason": "r", "as": "U1"}, [("namespace", "Input should be a valid string")]),
        # A misspelt field must not widen the pause to every namespace.
        ({"namespce": "prod", "reason": "r", "as": "U1"}, [("namespce", "Extra inputs are not permitted")]),
        (["prod"], [("(body)", None)]),
    ],
)
@pytest.mark.parametrize("path", ["/api/v1/pause", "/api/v1/resume"])
async def test_invalid_fields_get_422_with_their_path(switch: Switch, path, body, problems) -> None:
    resp = await switch.http.post(path, json=body)
    assert resp.status_code == 422, resp.text
    got = [(p["field"], p["message"]) for p in resp.json()["problems"]]
    assert [f for f, _ in got] == [f for f, _ in problems]
    for (_, message), (_, expected) in zip(got, problems):
        assert expected is None or message == expected
    assert resp.json()["error"] == "; ".join(f"{f}: {m}" for f, m in got)
    assert switch.brakes.pauses() == [] and switch.slack.calls("chat.postMessage") == []


async def test_an_unknown_playbook_is_422_listing_the_known_ones(switch: Switch) -> None:
    for path in ("/api/v1/pause", "/api/v1/resume"):
        resp = await switch.http.post(path, json={"playbook": "restart", "reason": "r", "as": "U0ALICE"})
        assert resp.status_code == 422
        assert resp.json()["error"] == "playbook: no playbook named 'restart'; known: node-cordon, restart-on-errors, scale-up"
    assert switch.brakes.pauses() == []


async def test_resume_of_a_scope_not_paused_is_404_naming_the_pauses_in_force(switch: Switch) -> None:
    assert (await switch.pause(namespace="prod", reason="deploy freeze", **{"as": "U0ALICE"})).status_code == 200
    # Only the exact scope of a pause lifts it: resuming everything does not lift prod's.
    resp = await switch.resume(reason="all clear", **{"as": "U0BOB"})
    assert resp.status_code == 404
    assert resp.json()["error"] == (
        "no pause of exactly every namespace and playbook to lift; pauses in force: namespace prod (by U0ALICE: deploy freeze)"
    )
    assert [p["namespace"] for p in resp.json()["paused"]] == ["prod"]
    assert [p.namespace for p in switch.brakes.pauses()] == ["prod"]
    assert [r.kind for r in switch.brakes.log()] == ["pause"]


async def test_status_lists_frozen_runs_and_resume_tells_what_became_of_each(switch: Switch) -> None:
    await switch.pause(reason="incident", **{"as": "U0ALICE"})
    await switch.pause(namespace="prod", reason="deploy freeze", **{"as": "U0ALICE"})
    in_prod, in_shop = str(uuid.uuid4()), str(uuid.uuid4())
    frozen_by_the_gate(switch.brakes, f"remediation/deployment/prod/checkout-{in_prod}", in_prod)
    frozen_by_the_gate(switch.brakes, f"remediation/deployment/shop/checkout-{in_shop}", in_shop, namespace="shop")
    status = await switch.status()
    assert [(r["run_id"], r["target"], r["playbook"], r["step"], r["scope"]) for r in status["frozen"]] == [
        (in_prod, "deployment/prod/checkout", "restart-on-errors", 0, "namespace=* playbook=*"),
        (in_shop, "deployment/shop/checkout", "restart-on-errors", 0, "namespace=* playbook=*"),
    ]

    # The global pause lifted: prod's run stays frozen by prod's pause (not signalled); shop's
    # is signalled, and Temporal answers NOT_FOUND (no such run: it has ended).
    resp = await switch.resume(reason="incident over", **{"as": "U0BOB"})
    assert resp.status_code == 200, resp.text
    runs = {r["run_id"]: (r["state"], r["message"]) for r in resp.json()["runs"]}
    assert runs[in_prod] == ("still_paused", "also paused: namespace prod by U0ALICE")
    assert runs[in_shop][0] == "ended"
    assert resp.json()["woken"] == 0 and resp.json()["warning"] is None


# --------------------------------------------------------------------------- the worker process


def test_the_worker_serves_the_kill_switch_and_a_pause_outlives_it(tmp_path, cluster, temporal) -> None:
    """``python worker.py`` mounts the API (remediator.app.runtime); the pause is in the state
    directory, so a worker killed and started again, and a restarted Temporal, still see it."""
    _, kubeconfig = cluster
    for name, text in PLAYBOOKS.items():
        (tmp_path / "playbooks" / f"{name}.yaml").write_text(text)
    first = WorkerProcess(tmp_path, temporal.address, kubeconfig)
    try:
        resp = httpx.post(f"{first.url}/api/v1/pause", json={"namespace": "prod", "reason": "deploy freeze", "as": "U0ALICE"})
        assert resp.status_code == 200, resp.text
        assert resp.json()["slack"] == "not posted to #sre-oncall: Slack is not configured (SLACK_BOT_TOKEN)"
        first.kill()
    finally:
        first.stop()
    temporal.stop()
    temporal.start()
    second = WorkerProcess(tmp_path, temporal.address, kubeconfig)
    try:
        status = httpx.get(f"{second.url}/api/v1/status").json()
        assert [(p["namespace"], p["paused_by"], p["reason"]) for p in status["pauses"]] == [("prod", "U0ALICE", "deploy freeze")]
        resp = httpx.post(f"{second.url}/api/v1/resume", json={"namespace": "prod", "reason": "freeze over", "as": "U0BOB"})
        assert resp.status_code == 200, resp.text
        assert httpx.get(f"{second.url}/api/v1/status").json()["pauses"] == []
    finally:
        second.stop()


# --------------------------------------------------------------------------- a real run


async def test_pause_freezes_a_run_in_flight_before_its_change_and_resume_continues_it_at_once(
    client, emulator: Emulator, audit, slack, slack_client, worker, tmp_path
) -> None:
    """The real workflow on the ``worker`` fixture's queue (its brakes on the same audit store)."""
    async with switch_on(client, audit, slack, slack_client, tmp_path) as switch:
        assert (await switch.pause(namespace="prod", reason="deploy freeze", **{"as": "U0ALICE"})).status_code == 200
        handle = await start_run(client, worker, playbook([{"name": "restart", "rollout_restart": {}}]), target=CHECKOUT)
        try:
            await wait_phase(handle, "paused")
            restarts = [r for r in emulator.requests(method="PATCH") if "restartedAt" in str(r.body)]
            assert restarts == []  # frozen before the mutation
            [frozen] = (await switch.status())["frozen"]
            assert (frozen["workflow_id"], frozen["run_id"], frozen["step"]) == (handle.id, handle.result_run_id, 0)

            started = time.monotonic()
            resp = await switch.resume(namespace="prod", reason="freeze over", **{"as": "U0BOB"})
            assert resp.status_code == 200, resp.text
            assert [(r["run_id"], r["state"]) for r in resp.json()["runs"]] == [(handle.result_run_id, "signalled")]
            await until(
                lambda: [r for r in emulator.requests(method="PATCH") if "restartedAt" in str(r.body)],
                "the rollout restart after the resume",
            )
            # The signal, not the frozen run's own poll (first one 5 s after freezing), woke it.
            assert time.monotonic() - started < 4
        finally:
            if (await handle.describe()).status == WorkflowExecutionStatus.RUNNING:
                await handle.terminate()
