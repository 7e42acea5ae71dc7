"""Several clusters on one Temporal namespace (issue 10): engines started with ``--cluster``.

End to end, everything real and separate as in production: one ``temporal server start-dev``,
two Kubernetes API emulators seeded alike (the same ``prod/checkout`` in each), and two
``python worker.py`` processes, ``--cluster east`` and ``--cluster west``, each pointed at its
emulator through a kubeconfig and with its own state directory. Each alert is remediated on
its own cluster only: the emulators' request logs show each mutation in the right one.

Then the parts on their own: the naming of runs (remediator.domain.runs), the intake's routing
(remediator.app.handoff) over real HTTP against the session's Temporal with a stand-in
workflow, and the audit trail, CLI and Slack messages naming the cluster.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from temporalio.client import Client
from temporalio.worker import UnsandboxedWorkflowRunner, Worker
from typer.testing import CliRunner

from remediator import cli
from remediator.app.config import Settings
from remediator.app.handoff import Handoff, group_workflow_id
from remediator.app.intake import create_app
from remediator.app.runtime import new_handoff_worker
from remediator.app.temporal import connect
from remediator.audit.store import AuditStore
from remediator.audit.view import render_runs
from remediator.domain.messages import AuditWriteInput, HandoffSummary, Notice, RunInfo
from remediator.domain.runs import (
    SA_CLUSTER,
    check_cluster_name,
    cluster_of,
    cluster_task_queue,
    qualified_target,
    target_key_of,
    workflow_id_for,
)
from remediator.playbook.loader import load_directory
from remediator.sim.kube import Emulator
from remediator.slack.blocks import notice_blocks, notice_metadata, notice_text
from tests.support import CHECKOUT, WorkerProcess, engine_kubeconfig, until
from tests.test_intake import BASIC, TOKEN, Intake, StandInRemediation, alert, assert_not_started, payload

PLAYBOOK = """\
name: restart-checkout
match: ['alertname="CheckoutDown"']
target:
  kind: Deployment
  namespace: '{{ labels.namespace }}'
  name: '{{ labels.deployment }}'
steps:
  - name: restart
    rollout_restart: {}
    health:
      rollout_status: {}
      timeout: 2m
      interval: 300ms
verification_window: 2m
cooldown: 0s
"""


def restart_patches(emu: Emulator) -> list:
    return [r for r in emu.requests(method="PATCH") if r.path.endswith("/deployments/checkout") and "restartedAt" in str(r.body)]


def wait(predicate, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def two_clusters(tmp_path):
    """Two seeded emulators, ``east`` and ``west``: name -> (emulator, kubeconfig, engine dir)."""
    out = {}
    try:
        for name in ("east", "west"):
            emu = Emulator().start()
            emu.seed_demo()
            home = tmp_path / name
            (home / "playbooks").mkdir(parents=True)
            (home / "playbooks" / "restart-checkout.yaml").write_text(PLAYBOOK)
            out[name] = (emu, engine_kubeconfig(emu, home / "kubeconfig"), home)
        yield out
    finally:
        for emu, _, _ in out.values():
            emu.stop()


def test_each_alert_is_remediated_on_its_own_cluster_only(two_clusters, temporal):
    workers: dict[str, WorkerProcess] = {}
    try:
        # One after the other: the first registers the search attributes, the second finds them.
        for name, (_, kubeconfig, home) in two_clusters.items():
            workers[name] = WorkerProcess(home, temporal.address, kubeconfig, ["--cluster", name])
        east_emu, west_emu = two_clusters["east"][0], two_clusters["west"][0]
        east_emu.clear_requests()
        west_emu.clear_requests()

        # East's alert, to east's intake: east's checkout is restarted, west's is not touched.
        resp = workers["east"].post("firing", "CheckoutDown", "e1", cluster="east")
        assert resp.status_code == 200, resp.text
        [out] = resp.json()["alerts"]
        assert (out["disposition"], out["workflow_id"]) == ("started", "remediation/east/deployment/prod/checkout")
        assert out["target"] == "deployment/prod/checkout"
        wait(lambda: len(restart_patches(east_emu)) == 1, "east's checkout to be restarted")

        # West's alert sent to east's intake: not east's to remediate.
        resp = workers["east"].post("firing", "CheckoutDown", "w1", cluster="west")
        [out] = resp.json()["alerts"]
        assert (resp.status_code, out["disposition"], out["workflow_id"]) == (200, "unknown_cluster", None)
        assert "label cluster='west' names a cluster this intake does not route to (it routes to 'east')" in out["message"]

        # West's alert, to west's intake.
        resp = workers["west"].post("firing", "CheckoutDown", "w1", cluster="west")
        [out] = resp.json()["alerts"]
        assert (resp.status_code, out["disposition"], out["workflow_id"]) == (
            200, "started", "remediation/west/deployment/prod/checkout",
        )
        wait(lambda: len(restart_patches(west_emu)) == 1, "west's checkout to be restarted")

        # A cluster nobody serves: answered, recorded, nothing started anywhere.
        for worker in workers.values():
            resp = worker.post("firing", "CheckoutDown", "n1", cluster="north")
            [out] = resp.json()["alerts"]
            assert (resp.status_code, out["disposition"], out["run_id"]) == (200, "unknown_cluster", None)

        time.sleep(1)  # anything wrongly started would have restarted something by now
        assert len(restart_patches(east_emu)) == 1 and len(restart_patches(west_emu)) == 1
        # Every mutation of each emulator is its own cluster's run's.
        for emu in (east_emu, west_emu):
            assert {r.method for r in emu.requests()} <= {"GET", "PATCH"}

        async def described():
            client = await connect(temporal.address)
            found = {}
            for name in ("east", "west", "north"):
                async for wf in client.list_workflows(f'KubeCluster = "{name}"'):
                    found.setdefault(name, []).append(wf.id)
            desc = {n: await client.get_workflow_handle(workflow_id_for("deployment/prod/checkout", n)).describe()
                    for n in ("east", "west")}
            return found, desc

        async def indexed():
            deadline = time.monotonic() + 20
            while True:
                found, desc = await described()
                if len(found) == 2 or time.monotonic() > deadline:
                    return found, desc
                await asyncio.sleep(0.3)

        found, desc = asyncio.run(indexed())
        assert found == {
            "east": ["remediation/east/deployment/prod/checkout"],
            "west": ["remediation/west/deployment/prod/checkout"],
        }
        assert {n: d.task_queue for n, d in desc.items()} == {"east": "remediator-east", "west": "remediator-west"}
        assert {n: d.typed_search_attributes[SA_CLUSTER] for n, d in desc.items()} == {"east": "east", "west": "west"}

        # Each engine's audit trail: its own run, named by cluster, and the alerts it refused.
        for name in ("east", "west"):
            state = two_clusters[name][2] / "state"
            store = AuditStore(state / "audit.db")
            [run] = store.list_runs()
            assert (run.cluster, run.workflow_id) == (name, f"remediation/{name}/deployment/prod/checkout")
            refused = store.intake_records(kind="unknown_cluster")
            expected = {"north"} | ({"west"} if name == "east" else set())
            assert {r.alert["labels"]["cluster"] for r in refused} == expected
            store.close()
            listed = CliRunner().invoke(cli.app, ["audit", "list", "--state-dir", str(state), "-o", "json"])
            assert listed.exit_code == 0, listed.output
            assert [(r["cluster"], r["target"]) for r in json.loads(listed.output)] == [(name, "deployment/prod/checkout")]
            shown = CliRunner().invoke(cli.app, ["audit", "show", run.run_id, "--state-dir", str(state)], env={"COLUMNS": "120"})
            assert shown.exit_code == 0 and "Cluster" in shown.output and name in shown.output, shown.output
            intake = CliRunner().invoke(cli.app, ["audit", "intake", "--kind", "unknown_cluster", "--state-dir", str(state)],
                                        env={"COLUMNS": "120"})
            assert intake.exit_code == 0 and "unknown_cluster" in intake.output, intake.output
    finally:
        for worker in workers.values():
            worker.stop()


# --------------------------------------------------------------------------- naming


def test_one_intake_routes_each_alert_to_its_cluster_s_workers(two_clusters, temporal, tmp_path):
    """``remediator intake --clusters east,west`` in front of one ``worker --no-intake`` per
    cluster (one database: here one state directory on this host): each alert is started on
    its cluster's task queue and remediated by that cluster's worker only."""
    shared = tmp_path / "shared"
    (shared / "playbooks").mkdir(parents=True)
    (shared / "playbooks" / "restart-checkout.yaml").write_text(PLAYBOOK)
    processes: list[WorkerProcess] = []
    try:
        for name, (_, kubeconfig, _) in two_clusters.items():
            processes.append(WorkerProcess(shared, temporal.address, kubeconfig, ["--no-intake", "--cluster", name]))
        intake = WorkerProcess(shared, temporal.address, shared / "no-kubeconfig", ["--clusters", "east,west"],
                               command="intake")
        processes.append(intake)
        east_emu, west_emu = two_clusters["east"][0], two_clusters["west"][0]
        for name, emu in (("west", west_emu), ("east", east_emu)):
            resp = intake.post("firing", "CheckoutDown", f"{name}-1", cluster=name)
            [out] = resp.json()["alerts"]
            assert (resp.status_code, out["disposition"], out["workflow_id"], out["cluster"]) == (
                200, "started", f"remediation/{name}/deployment/prod/checkout", name), out
            wait(lambda: len(restart_patches(emu)) == 1, f"{name}'s checkout to be restarted")
        # Without the label, with several clusters routed to: no guess.
        resp = intake.post("firing", "CheckoutDown", "none-1")
        [out] = resp.json()["alerts"]
        assert (resp.status_code, out["disposition"]) == (200, "unknown_cluster")
        assert "has no label cluster and this intake routes to several clusters ('east', 'west')" in out["message"]
        resp = intake.post("firing", "CheckoutDown", "north-1", cluster="north")
        assert resp.json()["alerts"][0]["disposition"] == "unknown_cluster"
        time.sleep(1)
        assert len(restart_patches(east_emu)) == 1 and len(restart_patches(west_emu)) == 1

        async def queues() -> dict:
            client = await connect(temporal.address)
            return {n: (await client.get_workflow_handle(workflow_id_for("deployment/prod/checkout", n)).describe()).task_queue
                    for n in ("east", "west")}

        assert asyncio.run(queues()) == {"east": "remediator-east", "west": "remediator-west"}
    finally:
        for process in processes:
            process.stop()


def test_workflow_ids_with_and_without_a_cluster():
    assert workflow_id_for("deployment/prod/checkout") == "remediation/deployment/prod/checkout"
    assert workflow_id_for("deployment/prod/checkout", "east") == "remediation/east/deployment/prod/checkout"
    assert workflow_id_for("node/worker-1", "east") == "remediation/east/node/worker-1"
    for wf_id, cluster, key in [
        ("remediation/deployment/prod/checkout", None, "deployment/prod/checkout"),
        ("remediation/node/worker-1", None, "node/worker-1"),
        ("remediation/east/deployment/prod/checkout", "east", "deployment/prod/checkout"),
        ("remediation/east/node/worker-1", "east", "node/worker-1"),
        ("alert-handoff/abc", None, "alert-handoff/abc"),
    ]:
        assert (cluster_of(wf_id), target_key_of(wf_id)) == (cluster, key), wf_id
    assert qualified_target("node/worker-1", "east") == "east/node/worker-1"
    assert qualified_target("node/worker-1", None) == "node/worker-1"
    assert cluster_task_queue("remediator", None) == "remediator"
    assert cluster_task_queue("remediator", "east") == "remediator-east"


@pytest.mark.parametrize("name", ["east", "prod-eu-1", "a", "0", "x" * 40])
def test_cluster_names_accepted(name):
    assert check_cluster_name(name) is None


@pytest.mark.parametrize("name", ["East", "prod_eu", "-a", "a-", "a.b", "a/b", "", "x" * 41, "deployment", "node"])
def test_cluster_names_refused(name):
    assert check_cluster_name(name)


def test_large_groups_hand_off_on_their_cluster_s_own_workflow():
    from remediator.domain.messages import AlertRef

    a = AlertRef(fingerprint="f", starts_at=datetime(2026, 1, 1, tzinfo=UTC), status="firing", labels={"alertname": "X"})
    plain = group_workflow_id("{}:{}", [a])
    assert plain.startswith("alert-handoff/") and plain.count("/") == 1
    assert group_workflow_id("{}:{}", [a], "east") == plain.replace("alert-handoff/", "alert-handoff/east/")


# --------------------------------------------------------------------------- routing at the intake


@pytest.fixture
def playbook_dir(tmp_path: Path) -> Path:
    from tests.test_intake import PLAYBOOK as INTAKE_PLAYBOOK

    d = tmp_path / "playbooks"
    d.mkdir()
    (d / "restart-on-errors.yaml").write_text(INTAKE_PLAYBOOK)
    return d


async def serving_intake(client: Client, playbook_dir: Path, tmp_path: Path, **settings: str):
    s = Settings(auth_token=TOKEN, basic_auth=BASIC, task_queue=f"intake-{uuid.uuid4()}", **settings)
    audit = AuditStore(tmp_path / f"audit-{uuid.uuid4().hex[:6]}.db")
    app = create_app(s, client, load_directory(playbook_dir), audit, task_queue=s.engine_task_queue)
    return s, audit, app


def labelled(cluster: str | None, label: str = "cluster", **kw) -> dict:
    a = alert(**kw)
    if cluster is not None:
        a["labels"][label] = cluster
    return a


async def test_the_intake_routes_by_the_cluster_label(client: Client, playbook_dir: Path, tmp_path: Path) -> None:
    s, audit, app = await serving_intake(client, playbook_dir, tmp_path, cluster="east")
    namespace = f"ns-{uuid.uuid4().hex[:10]}"
    async with Worker(client, task_queue=s.engine_task_queue, workflows=[StandInRemediation],
                      workflow_runner=UnsandboxedWorkflowRunner()):
        async with Intake.serving(app, client, audit, namespace, s.engine_task_queue) as it:
            resp = await it.post(payload(namespace, alerts=[
                labelled("east", service="checkout", fingerprint="e000000000000001"),
                labelled(None, service="cart", fingerprint="e000000000000002"),
                labelled("", service="orders", fingerprint="e000000000000003"),
                labelled("north", service="payments", fingerprint="e000000000000004"),
                labelled("north", service="checkout", fingerprint="e000000000000005", status="resolved"),
            ]))
            assert resp.status_code == 200, resp.text
            outs = resp.json()["alerts"]
            assert [(o["disposition"], o["workflow_id"]) for o in outs] == [
                ("started", f"remediation/east/deployment/{namespace}/checkout"),
                ("started", f"remediation/east/deployment/{namespace}/cart"),  # no label: this engine's
                ("started", f"remediation/east/deployment/{namespace}/orders"),  # empty label: as absent
                ("unknown_cluster", None),
                ("unknown_cluster", None),
            ]
            assert [o["cluster"] for o in outs] == ["east", "east", "east", "north", "north"]
            assert outs[3]["message"] == (
                "label cluster='north' names a cluster this intake does not route to (it routes to 'east'); "
                "send the alert to the intake of cluster 'north', or add it to --clusters"
            )
            desc = await client.get_workflow_handle(outs[0]["workflow_id"]).describe()
            assert desc.task_queue == s.engine_task_queue == f"{s.task_queue}-east"
            assert desc.typed_search_attributes[SA_CLUSTER] == "east"
            for service in ("payments", "checkout"):
                await assert_not_started(client, workflow_id_for(f"deployment/{namespace}/{service}", "north"))
            await assert_not_started(client, workflow_id_for(f"deployment/{namespace}/payments", "east"))
            records = audit.intake_records(kind="unknown_cluster")
            assert sorted((r.fingerprint, r.status) for r in records) == [
                ("e000000000000004", "firing"), ("e000000000000005", "resolved"),
            ]
            assert 'disposition="unknown_cluster"' in (await it.http.get("/metrics")).text
    audit.close()


async def test_a_custom_cluster_label(client: Client, playbook_dir: Path, tmp_path: Path) -> None:
    s, audit, app = await serving_intake(client, playbook_dir, tmp_path, cluster="east", cluster_label="k8s_cluster")
    namespace = f"ns-{uuid.uuid4().hex[:10]}"
    async with Worker(client, task_queue=s.engine_task_queue, workflows=[StandInRemediation],
                      workflow_runner=UnsandboxedWorkflowRunner()):
        async with Intake.serving(app, client, audit, namespace, s.engine_task_queue) as it:
            resp = await it.post(payload(namespace, alerts=[
                labelled("west", "k8s_cluster", service="checkout", fingerprint="c000000000000001"),
                # The default label name means nothing here.
                labelled("west", "cluster", service="cart", fingerprint="c000000000000002"),
            ]))
            assert [o["disposition"] for o in resp.json()["alerts"]] == ["unknown_cluster", "started"]
            assert "label k8s_cluster='west'" in resp.json()["alerts"][0]["message"]
    audit.close()


async def test_without_cluster_labels_are_ignored_and_ids_are_as_before(client: Client, playbook_dir: Path, tmp_path: Path) -> None:
    s, audit, app = await serving_intake(client, playbook_dir, tmp_path)
    namespace = f"ns-{uuid.uuid4().hex[:10]}"
    async with Worker(client, task_queue=s.engine_task_queue, workflows=[StandInRemediation],
                      workflow_runner=UnsandboxedWorkflowRunner()):
        async with Intake.serving(app, client, audit, namespace, s.engine_task_queue) as it:
            resp = await it.post(payload(namespace, alerts=[labelled("north", service="checkout", fingerprint="d000000000000001")]))
            [out] = resp.json()["alerts"]
            assert (out["disposition"], out["workflow_id"]) == ("started", f"remediation/deployment/{namespace}/checkout")
            assert out["cluster"] is None
            desc = await client.get_workflow_handle(out["workflow_id"]).describe()
            assert desc.task_queue == s.task_queue
            assert SA_CLUSTER not in desc.typed_search_attributes
    audit.close()


async def test_a_large_group_is_handed_over_on_the_cluster_s_own_queues(client: Client, playbook_dir: Path, tmp_path: Path) -> None:
    """The hand-off path: a group too large to send one by one goes to an ``AlertHandoffWorkflow``
    of this cluster (its ID and task queue name it), whose activity starts the runs under the
    cluster's workflow IDs; the alert of another cluster is answered before any of it."""
    s = Settings(auth_token=TOKEN, task_queue=f"intake-{uuid.uuid4()}", cluster="east")
    audit = AuditStore(tmp_path / "audit.db")
    handoff = Handoff(s, client, load_directory(playbook_dir), audit, task_queue=s.engine_task_queue)
    app = create_app(s, client, handoff.playbooks, audit, task_queue=s.engine_task_queue, handoff=handoff, direct_max=1)
    namespace = f"ns-{uuid.uuid4().hex[:10]}"
    async with Worker(client, task_queue=s.engine_task_queue, workflows=[StandInRemediation],
                      workflow_runner=UnsandboxedWorkflowRunner()), new_handoff_worker(client, s.engine_task_queue, handoff):
        async with Intake.serving(app, client, audit, namespace, s.engine_task_queue) as it:
            resp = await it.post(payload(namespace, alerts=[
                labelled("east", service="checkout", fingerprint="b000000000000001"),
                labelled(None, service="cart", fingerprint="b000000000000002"),
                labelled("north", service="orders", fingerprint="b000000000000003"),
            ]))
            outs = resp.json()["alerts"]
            assert [o["disposition"] for o in outs] == ["handed_off", "handed_off", "unknown_cluster"]
            group_id = outs[0]["workflow_id"]
            assert group_id.startswith("alert-handoff/east/") and outs[1]["workflow_id"] == group_id
            summary = await client.get_workflow_handle(group_id, result_type=HandoffSummary).result()
            assert summary.dispositions == {"started": 2}
            desc = await client.get_workflow_handle(group_id).describe()
            assert desc.task_queue == f"{s.task_queue}-east-handoff"
            for service in ("checkout", "cart"):
                run = await client.get_workflow_handle(workflow_id_for(f"deployment/{namespace}/{service}", "east")).describe()
                assert (run.task_queue, run.typed_search_attributes[SA_CLUSTER]) == (s.engine_task_queue, "east")
    audit.close()


# --------------------------------------------------------------------------- audit, CLI, Slack


def _run(run_id: str, workflow_id: str) -> RunInfo:
    return RunInfo(
        run_id=run_id, workflow_id=workflow_id, alertname="CheckoutDown", namespace="prod",
        target="deployment/prod/checkout", playbook="restart-checkout", playbook_path="p.yaml",
        playbook_sha256="ab" * 32, simulate=False, started_at=datetime(2026, 11, 21, 5, tzinfo=UTC),
    )


def test_the_audit_trail_names_the_cluster(tmp_path):
    store = AuditStore(tmp_path / "audit.db")
    for run_id, wf_id in (("r-east", "remediation/east/deployment/prod/checkout"),
                          ("r-plain", "remediation/deployment/prod/checkout"),
                          ("r-east-2", "remediation/east-2/deployment/prod/checkout")):
        store.write(AuditWriteInput(run=_run(run_id, wf_id), run_id=run_id))
    assert [r.run_id for r in store.list_runs(cluster="east")] == ["r-east"]
    assert [r.run_id for r in store.list_runs(cluster="east-2")] == ["r-east-2"]
    row = store.get_run("r-east")
    assert (row.cluster, row.qualified_target) == ("east", "east/deployment/prod/checkout")
    assert row.model_dump(mode="json")["cluster"] == "east"
    assert store.get_run("r-plain").cluster is None
    assert store.verify().intact
    runs = CliRunner().invoke(cli.app, ["audit", "list", "--cluster", "east", "-o", "json", "--state-dir", str(tmp_path)])
    assert runs.exit_code == 0, runs.output
    assert [(r["run_id"], r["cluster"]) for r in json.loads(runs.output)] == [("r-east", "east")]
    from rich.console import Console

    console = Console(record=True, width=120)
    console.print(render_runs(store.list_runs()))
    text = console.export_text()
    assert "east/deployment/prod/checkout" in text and "-/deployment/prod/checkout" in text
    console = Console(record=True, width=120)
    console.print(render_runs([store.get_run("r-plain")]))
    assert "/deployment" not in console.export_text()  # a single-cluster trail reads as before
    store.close()


def _notice(workflow_id: str) -> Notice:
    return Notice(event_key="r1/healed", kind="healed", channel="#sre", target=CHECKOUT, run_id="r1",
                  workflow_id=workflow_id, playbook="restart-checkout")


def test_slack_notices_name_the_cluster_and_keep_one_thread_per_cluster():
    east = _notice("remediation/east/deployment/prod/checkout")
    plain = _notice("remediation/deployment/prod/checkout")
    blocks = json.dumps(notice_blocks(east), ensure_ascii=False)
    assert "*Cluster* `east` · *Target* `deployment/prod/checkout`" in blocks
    assert "east/deployment/prod/checkout healed by playbook restart-checkout" in blocks
    assert "east/deployment/prod/checkout" in notice_text(east)
    assert notice_metadata(east)["event_payload"]["target"] == "east/deployment/prod/checkout"
    assert "Cluster" not in json.dumps(notice_blocks(plain))
    assert notice_metadata(plain)["event_payload"]["target"] == "deployment/prod/checkout"


def test_log_lines_of_a_run_name_its_cluster():
    import logging

    from remediator.app.logs import _context_text, temporal_context

    record = logging.LogRecord("remediator", logging.INFO, __file__, 1, "restarted", None, None)
    record.temporal_workflow = {"workflow_id": "remediation/east/deployment/prod/checkout", "run_id": "0123456789"}
    ctx = temporal_context(record)
    assert (ctx["cluster"], ctx["target"]) == ("east", "deployment/prod/checkout")
    assert _context_text(ctx).startswith("east/deployment/prod/checkout run 01234567")
    record.temporal_workflow = {"workflow_id": "remediation/deployment/prod/checkout", "run_id": "0123456789"}
    ctx = temporal_context(record)
    assert "cluster" not in ctx and _context_text(ctx).startswith("deployment/prod/checkout run 01234567")
