"""``remediator demo``: watch real Alertmanager alerts heal an (emulated) cluster.

What runs, all on 127.0.0.1 and in ``--state-dir``:

* the engine (worker + intake) with the embedded Temporal dev server and ``--simulate``:
  the emulated cluster seeded with ``prod/checkout`` (3 replicas, 2 revisions), three
  nodes, a StatefulSet and a DaemonSet;
* a real Prometheus scraping the emulator's kube-state-metrics-style ``/metrics`` and
  evaluating the kube-prometheus rules in ``deploy/prometheus/`` (``for:`` shortened);
* a real Alertmanager whose webhook receiver is the intake;
* the Slack Web API emulator, where approval requests and notices are posted.

Scenario 1, high confidence: a bad release of ``checkout`` crash-loops; Prometheus fires
KubePodCrashLooping, the playbook's evidence says the Deployment changed minutes ago, so it
rolls back without asking; the alert resolves.

Scenario 2, low confidence, a human decides: a bad release of ``prod/cart`` is OOMKilled.
The evidence (rolled out recently, but the containers run out of memory, which undoing the
code may not fix) gives a confidence below the playbook's threshold, so the rollback waits for
approval. The demo shows the Slack message and the ``remediator approve`` command; run it
yourself, or let the demo run it when it is not attached to a terminal (``--auto-approve``).
Then the rollback runs and the alert resolves.

Each run's audit timeline is printed at the end of its scenario.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from kubernetes import client
from rich.console import Console
from temporalio.service import RPCError

from remediator.app.config import Settings
from remediator.k8s import rbac
from remediator.app.logs import setup_logging
from remediator.app.runtime import Engine, StartupError
from remediator.audit.view import render_run
from remediator.domain.messages import RemediationStatus
from remediator.sim import alerting
from remediator.sim.kube import Emulator
from remediator.sim.slack import SlackEmulator
from workflows.remediation import RemediationWorkflow

console = Console()
ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "kube-prometheus-rules.yml"
BAD_IMAGE = "registry.example/checkout:1.5.0"
CART_GOOD = "registry.example/cart:2.3.0"
CART_OOM = "registry.example/cart:2.4.0"
APPROVER = "U0DEMO"


ENGINE_TOKEN = "remediator-service-account-token"
"""The bearer token of the engine's service account (``remediator/remediator``) in an emulator."""


def engine_token(emu: Emulator) -> str:
    """Register on ``emu`` the engine's service account ``remediator/remediator``, bound to the
    engine's ClusterRole (``rbac.cluster_role()``, the rules of
    deploy/kubernetes/base/clusterrole.yaml); returns its token (``ENGINE_TOKEN``)."""
    emu.add_service_account_token(ENGINE_TOKEN, rbac.cluster_role()["rules"])
    return ENGINE_TOKEN


def engine_api_client(emu: Emulator) -> Any:
    """A ``kubernetes.client.ApiClient`` for the engine on ``emu``: the service account
    ``remediator/remediator`` bound to the engine's ClusterRole (``rbac.cluster_role()``, the rules
    of deploy/kubernetes/base/clusterrole.yaml), so the simulated engine has exactly the rights it
    has in a cluster, and a request the role does not allow is the API server's 403 there too.
    The kubeconfig written for people (``simulated-kubeconfig``) keeps full access."""
    return emu.api_client(token=engine_token(emu))


class DemoError(RuntimeError):
    """The demo could not run; the message says what is missing."""


def run_demo(state_dir: Path, keep_running: bool = False, timeout: float = 300.0, auto_approve: bool | None = None) -> int:
    """Run both scenarios; returns 0 when both ended ``healed``, 1 otherwise.

    ``auto_approve``: run the ``remediator approve`` command for the user; None: only when
    standard input is not a terminal (CI, tests).

    Raises:
        DemoError: Alertmanager/Prometheus are not installed, or a component did not start.
    """
    if auto_approve is None:
        auto_approve = not sys.stdin.isatty()
    return asyncio.run(_demo(state_dir, keep_running, timeout, auto_approve))


async def _demo(state_dir: Path, keep_running: bool, timeout: float, auto_approve: bool) -> int:

    if state_dir.exists():
        shutil.rmtree(state_dir)
    state_dir.mkdir(parents=True)
    slack = SlackEmulator().start()
    slack.add_channel("sre-oncall")
    slack.add_user(APPROVER, "you")
    slack.add_usergroup("S0ONCALL", "oncall", [APPROVER])
    prom_port, am_port, intake_port = alerting.free_port(), alerting.free_port(), alerting.free_port()
    settings = Settings(
        simulate=True,
        no_auth=True,
        state_dir=state_dir,
        playbook_dir=ROOT / "playbooks",
        listen=f"127.0.0.1:{intake_port}",
        temporal_port=alerting.free_port(),
        temporal_ui_port=alerting.free_port(),
        prometheus_url=f"http://127.0.0.1:{prom_port}",
        alertmanager_url=f"http://127.0.0.1:{am_port}",
        slack_bot_token=slack.bot_token,
        slack_api_url=slack.url,
    )
    setup_logging(simulate=True)
    console.rule("[bold]remediator demo")
    console.print("[yellow]Everything below acts on the EMULATED cluster (--simulate), never a real one.[/]")
    emu = Emulator().start()
    emu.seed_demo()
    emu.write_kubeconfig(state_dir / "simulated-kubeconfig")
    engine = Engine(settings, engine_api_client(emu))
    managed: list = []
    try:
        try:
            await engine.start()
        except StartupError as err:
            raise DemoError(str(err)) from None
        run_task = asyncio.create_task(engine.run())
        try:
            managed.append(
                alerting.start_prometheus(
                    state_dir,
                    scrape_targets={"kube-state-metrics": emu.url.removeprefix("http://")},
                    rule_files=[RULES],
                    alertmanager_url=settings.alertmanager_url,
                    port=prom_port,
                )
            )
            managed.append(alerting.start_alertmanager(state_dir, webhook_url=f"http://{settings.listen}/api/v1/alerts", port=am_port))
        except (RuntimeError, FileNotFoundError) as err:
            raise DemoError(f"{err}\n(run `make demo`, which installs prometheus and prometheus-alertmanager)") from None
        console.print(
            f"Temporal UI:   {engine.ui_url}\nintake:        http://{settings.listen}/api/v1/alerts\n"
            f"Prometheus:    {managed[0].url}\nAlertmanager:  {managed[1].url}\nSlack (emulated): {slack.url}",
            highlight=False,
        )

        # ---------------------------------------------------------------- scenario 1
        deploy = emu.get("Deployment", "checkout", "prod")
        container = deploy["spec"]["template"]["spec"]["containers"][0]
        revision = deploy["metadata"]["annotations"].get("deployment.kubernetes.io/revision")
        console.rule("scenario 1: a bad release (high confidence, no human needed)")
        console.print(f"prod/checkout runs {container['image']} (revision {revision}); shipping {BAD_IMAGE}, which crash-loops", highlight=False)
        emu.fault_crashloop_image(BAD_IMAGE)
        _set_image(engine, "checkout", container["name"], BAD_IMAGE)
        console.print("Prometheus fires KubePodCrashLooping, Alertmanager delivers it, the workflow remediates:")
        first = await _follow(engine, "remediation/deployment/prod/checkout", timeout)
        _timeline(engine, "deployment/prod/checkout", state_dir)

        # ---------------------------------------------------------------- scenario 2
        console.rule("scenario 2: a release that runs out of memory (low confidence, a human decides)")
        _create_cart(emu)
        console.print(f"prod/cart runs {CART_GOOD}; shipping {CART_OOM}, whose containers are OOMKilled", highlight=False)
        emu.fault_crashloop_image(CART_OOM, reason="OOMKilled")
        _set_image(engine, "cart", "cart", CART_OOM)
        second = await _follow(
            engine, "remediation/deployment/prod/cart", timeout,
            on_waiting=lambda status: _ask_human(status, slack, state_dir, engine, auto_approve),
        )
        _timeline(engine, "deployment/prod/cart", state_dir)

        healed = first == "healed" and second == "healed"
        console.rule("[green]both healed[/]" if healed else f"[red]scenario 1: {first}, scenario 2: {second}[/]")
        if keep_running:
            console.print("Still running (Ctrl-C to stop).")
        else:
            engine.request_exit()
        await run_task
        return 0 if healed else 1
    finally:
        for p in reversed(managed):
            p.stop()
        await engine.stop()
        emu.stop()
        slack.stop()


def _set_image(engine, name: str, container: str, image: str) -> None:
    """Ship a release as ``kubectl set image`` would: a strategic-merge patch of the pod template."""

    apps = client.AppsV1Api(engine.api_client)
    apps.patch_namespaced_deployment(
        name, "prod", {"spec": {"template": {"spec": {"containers": [{"name": container, "image": image}]}}}}
    )


def _create_cart(emu) -> None:
    """A second Deployment, prod/cart, healthy at its first revision."""
    labels = {"app": "cart"}
    emu.create(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "cart", "namespace": "prod", "labels": labels},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {"containers": [{"name": "cart", "image": CART_GOOD, "resources": {"limits": {"memory": "256Mi"}}}]},
                },
            },
        }
    )
    emu.wait_until(lambda e: (e.get("Deployment", "cart", "prod").get("status") or {}).get("availableReplicas") == 2, timeout=30)


async def _ask_human(status, slack, state_dir: Path, engine, auto_approve: bool) -> None:
    """Show the Slack approval request and the CLI fallback; run it when nobody is at the terminal."""
    request = status.waiting
    for _ in range(50):
        if any((m.get("metadata") or {}).get("event_type") == "remediator_approval_request" for m in slack.messages("sre-oncall")):
            break
        await asyncio.sleep(0.1)
    posted = [m for m in slack.messages("sre-oncall") if (m.get("metadata") or {}).get("event_type") == "remediator_approval_request"]
    console.print("\n[bold]Slack #sre-oncall[/] (emulated) — the approval request, as the on-call sees it:")
    for line in _message_lines(posted[-1] if posted else {}):
        console.print("  │ " + line, highlight=False, markup=False)
    command = [
        "remediator", "approve", request.run_id[:8], "--as", APPROVER,
        "--temporal-address", engine.temporal_address, "--state-dir", str(state_dir),
    ]
    console.print("\nNo public URL for Slack's buttons here, so approve from the CLI (the same authorisation and audit):", highlight=False)
    console.print("  " + " ".join(command), highlight=False, markup=False)
    if not auto_approve:
        console.print("(run it in another terminal; the run waits durably)")
        return
    await asyncio.sleep(2)
    console.print("[dim]not attached to a terminal: running it for you[/]")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "remediator.cli", *command[1:], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=ROOT
    )
    out, _ = await proc.communicate()
    console.print("  " + out.decode().strip(), highlight=False, markup=False)


def _message_lines(message: dict) -> list[str]:
    lines: list[str] = []
    for block in message.get("blocks", []):
        if block.get("type") in ("header", "section", "context"):
            texts = [block.get("text", {}).get("text", "")] + [e.get("text", "") for e in block.get("elements", []) if isinstance(e, dict)]
            texts += [f.get("text", "") for f in block.get("fields", [])]
            lines += [t for text in texts for t in text.splitlines() if t]
        elif block.get("type") == "actions":
            lines.append("   ".join(f"[ {e.get('text', {}).get('text', '')} ]" for e in block.get("elements", [])))
    return lines


def _timeline(engine, target: str, state_dir: Path) -> None:

    runs = engine.audit.list_runs(target=target, limit=1)
    if runs:
        console.print(render_run(engine.audit, runs[0].run_id))
        console.print(f"Again later: remediator audit show {runs[0].run_id[:8]} --state-dir {state_dir}\n", highlight=False)


async def _follow(engine, workflow_id: str, timeout: float, on_waiting=None) -> str:
    """Print the run's progress from the workflow's ``status`` query until it ends."""


    deadline = time.monotonic() + timeout
    shown: set[str] = set()
    status: RemediationStatus | None = None
    asked = False
    with console.status("waiting for the alert (Prometheus evaluates, Alertmanager groups)...") as spinner:
        while time.monotonic() < deadline:
            try:
                status = await engine.client.get_workflow_handle(workflow_id).query(RemediationWorkflow.status)
            except RPCError:
                await asyncio.sleep(0.5)
                continue
            lines = [f"alert(s) attached: {', '.join(status.alerts)}"]
            lines += [f"evidence {e.name} ({e.check}): {e.summary}" for e in status.evidence]
            if status.confidence is not None:
                lines.append(f"confidence {status.confidence:.2f}")
            for s in status.steps:
                if s.status not in ("pending", "running"):
                    lines.append(f"step {s.index + 1} {s.name} ({s.action}): {s.status}: {s.message}")
                elif s.status == "running":
                    spinner.update(f"step {s.index + 1} {s.name} ({s.action}) running, attempt {s.attempts}...")
            for line in lines:
                if line not in shown:
                    shown.add(line)
                    console.print("  " + line, highlight=False, markup=False)
            if status.waiting is not None and not asked and on_waiting is not None:
                asked = True
                spinner.stop()
                await on_waiting(status)
                spinner.start()
                spinner.update("waiting for the approval...")
            if status.phase == "verifying":
                spinner.update("steps done; waiting for the alert to resolve (verification window)...")
            if status.outcome != "running":
                console.print(f"  outcome: {status.outcome}: {status.reason}", highlight=False, markup=False)
                return status.outcome
            await asyncio.sleep(0.5)
    return status.outcome if status else "no remediation started"
