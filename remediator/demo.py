"""``remediator demo``: watch a real Alertmanager alert heal an (emulated) crash-looping Deployment.

What runs, all on 127.0.0.1 and in ``--state-dir``:

* the engine (worker + intake) with the embedded Temporal dev server and ``--simulate``:
  the emulated cluster seeded with ``prod/checkout`` (3 replicas, 2 revisions);
* a real Prometheus scraping the emulator's kube-state-metrics-style ``/metrics`` and
  evaluating the kube-prometheus rules in ``deploy/prometheus/`` (``for:`` shortened);
* a real Alertmanager whose webhook receiver is the intake.

Then the demo ships a bad release of ``checkout`` (its new image crash-loops), and prints
the remediation as it progresses (Prometheus fires KubePodCrashLooping, Alertmanager
delivers it, the playbook rolls the Deployment back, health checks pass, the alert
resolves) and finally the run's audit timeline.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path

from rich.console import Console

from remediator.config import Settings

console = Console()
ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "deploy" / "prometheus" / "kube-prometheus-rules.yml"
BAD_IMAGE = "registry.example/checkout:1.5.0"
TARGET_ID = "remediation/deployment/prod/checkout"


class DemoError(RuntimeError):
    """The demo could not run; the message says what is missing."""


def run_demo(state_dir: Path, keep_running: bool = False, timeout: float = 300.0) -> int:
    """Run the demo; returns 0 when the workload healed, 1 otherwise.

    Raises:
        DemoError: Alertmanager/Prometheus are not installed, or a component did not start.
    """
    return asyncio.run(_demo(state_dir, keep_running, timeout))


async def _demo(state_dir: Path, keep_running: bool, timeout: float) -> int:
    from remediator import procs
    from remediator.runtime import Engine, StartupError, setup_logging

    if state_dir.exists():
        shutil.rmtree(state_dir)
    state_dir.mkdir(parents=True)
    prom_port, am_port, intake_port = procs.free_port(), procs.free_port(), procs.free_port()
    temporal_port = procs.free_port()
    settings = Settings(
        simulate=True,
        no_auth=True,
        state_dir=state_dir,
        playbook_dir=ROOT / "playbooks",
        listen=f"127.0.0.1:{intake_port}",
        temporal_port=temporal_port,
        temporal_ui_port=procs.free_port(),
        prometheus_url=f"http://127.0.0.1:{prom_port}",
        alertmanager_url=f"http://127.0.0.1:{am_port}",
    )
    setup_logging(simulate=True)
    console.rule("[bold]remediator demo")
    console.print("[yellow]Everything below acts on the EMULATED cluster (--simulate), never a real one.[/]")
    engine = Engine(settings)
    managed: list = []
    try:
        try:
            await engine.start()
        except StartupError as err:
            raise DemoError(str(err)) from None
        run_task = asyncio.create_task(engine.run())
        emu = engine.emulator
        console.print(f"Temporal UI: {engine.ui_url}\nintake:      http://{settings.listen}/api/v1/alerts", highlight=False)
        try:
            prom = procs.start_prometheus(
                state_dir / "prometheus",
                scrape_targets={"kube-state-metrics": emu.url.removeprefix("http://")},
                rule_files=[RULES],
                alertmanager_url=settings.alertmanager_url,
                port=prom_port,
            )
            managed.append(prom)
            am = procs.start_alertmanager(
                state_dir / "alertmanager",
                webhook_url=f"http://{settings.listen}/api/v1/alerts",
                port=am_port,
            )
            managed.append(am)
        except (RuntimeError, FileNotFoundError) as err:
            raise DemoError(f"{err}\n(run `make demo`, which installs prometheus and prometheus-alertmanager)") from None
        console.print(f"Prometheus:  {prom.url}\nAlertmanager: {am.url}", highlight=False)

        deploy = emu.get("Deployment", "checkout", "prod")
        image = deploy["spec"]["template"]["spec"]["containers"][0]["image"]
        console.rule("1. a bad release")
        console.print(f"prod/checkout runs {image} (revision {deploy['metadata']['annotations'].get('deployment.kubernetes.io/revision')}); shipping {BAD_IMAGE}, which crash-loops")
        emu.fault_crashloop_image(BAD_IMAGE)
        container = deploy["spec"]["template"]["spec"]["containers"][0]["name"]
        _set_image(engine, container)

        console.rule("2. Prometheus fires KubePodCrashLooping, Alertmanager delivers it, the workflow remediates")
        outcome = await _follow(engine, timeout)
        console.rule("3. audit trail")
        from remediator.audit import render_run

        runs = engine.audit.list_runs(target="deployment/prod/checkout", limit=1)
        if runs:
            console.print(render_run(engine.audit, runs[0].run_id))
            console.print(f"\nAgain later: remediator audit show {runs[0].run_id[:8]} --state-dir {state_dir}")
        healed = outcome == "healed"
        console.rule("[green]healed[/]" if healed else f"[red]{outcome}[/]")
        if keep_running:
            console.print("Still running (Ctrl-C to stop).")
            await run_task
        else:
            engine.request_exit()
            await run_task
        return 0 if healed else 1
    finally:
        for p in reversed(managed):
            p.stop()
        await engine.stop()


def _set_image(engine, container: str) -> None:
    """Ship the bad release as ``kubectl set image`` would: a strategic-merge patch of the template."""
    from kubernetes import client

    apps = client.AppsV1Api(engine.emulator.api_client())
    apps.patch_namespaced_deployment(
        "checkout",
        "prod",
        {"spec": {"template": {"spec": {"containers": [{"name": container, "image": BAD_IMAGE}]}}}},
    )


async def _follow(engine, timeout: float) -> str:
    """Print the run's progress from the workflow's ``status`` query until it ends."""
    from temporalio.service import RPCError

    from remediator.models import RemediationStatus

    deadline = time.monotonic() + timeout
    shown: set[str] = set()
    status: RemediationStatus | None = None
    with console.status("waiting for the alert (Prometheus evaluates, Alertmanager groups)...") as spinner:
        while time.monotonic() < deadline:
            try:
                handle = engine.client.get_workflow_handle(TARGET_ID)
                status = await handle.query("status", result_type=RemediationStatus)
            except RPCError:
                await asyncio.sleep(0.5)
                continue
            lines = [f"alert(s) attached: {', '.join(status.alerts)}"]
            for s in status.steps:
                if s.status not in ("pending", "running"):
                    lines.append(f"step {s.index + 1} {s.name} ({s.action}): {s.status}: {s.message}")
                elif s.status == "running":
                    spinner.update(f"step {s.index + 1} {s.name} ({s.action}) running, attempt {s.attempts}...")
            if status.phase == "verifying":
                spinner.update("steps done; waiting for the alert to resolve (verification window)...")
            for line in lines:
                if line not in shown:
                    shown.add(line)
                    console.print("  " + line, highlight=False, markup=False)
            if status.outcome != "running":
                console.print(f"  outcome: {status.outcome}: {status.reason}", highlight=False, markup=False)
                return status.outcome
            await asyncio.sleep(0.5)
    return status.outcome if status else "no remediation started"
