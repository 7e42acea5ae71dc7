"""The engine's roles as separate processes, as the Kubernetes manifests run them:
``remediator intake`` (HTTP only, no cluster credentials) and ``remediator worker --no-intake``
(the Temporal worker only, ``/healthz`` for probes), on one external Temporal; and the start-up
refusals that keep them from running where they would each start their own Temporal.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx

from remediator.sim.kube import Emulator
from tests.support import WorkerProcess, free_port
from tests.test_durability import PLAYBOOK

ROOT = Path(__file__).resolve().parent.parent


def checkout_patches(emu: Emulator) -> list:
    return [r for r in emu.requests(method="PATCH") if r.path.endswith("/deployments/checkout")]


def test_the_intake_and_a_worker_without_intake_remediate_as_two_processes(tmp_path, cluster, temporal):
    emu, kubeconfig = cluster
    (tmp_path / "playbooks" / "durability.yaml").write_text(PLAYBOOK)
    worker = WorkerProcess(tmp_path, temporal.address, kubeconfig, ["--no-intake"])
    # The intake needs no cluster: a kubeconfig that does not exist is never read.
    intake = WorkerProcess(tmp_path, temporal.address, tmp_path / "no-such-kubeconfig", command="intake")
    try:
        # The worker serves probes only: no webhook there.
        assert httpx.get(f"{worker.url}/healthz", timeout=5).json() == {"status": "ok"}
        assert worker.post("firing").status_code == 404
        resp = intake.post("firing")
        assert resp.status_code == 200, resp.text
        assert [a["disposition"] for a in resp.json()["alerts"]] == ["started"]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not checkout_patches(emu):
            time.sleep(0.2)
        assert len(checkout_patches(emu)) == 1
        # The same firing again, while the run is on: folded into it, nothing new.
        again = intake.post("firing")
        assert [a["disposition"] for a in again.json()["alerts"]] in (["attached"], ["duplicate"])
    finally:
        intake.stop()
        worker.stop()
    assert "intake only: remediation runs on the workers of task queue 'remediator'" in intake.log.read_text()
    assert "no intake here (--no-intake): GET /healthz" in worker.log.read_text()


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "remediator.cli", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


def test_separate_roles_without_an_external_temporal_are_refused(tmp_path):
    for args, role in ((["intake"], "remediator intake"), (["worker", "--no-intake", "--simulate"],
                                                            "remediator worker --no-intake")):
        p = run_cli(*args, "--no-auth", "--state-dir", str(tmp_path / "state"), "--listen", f"127.0.0.1:{free_port()}")
        assert p.returncode == 2, p.stdout + p.stderr
        assert p.stderr.strip().splitlines()[-1] == (
            f"error: refusing to start: {role} runs one role of the engine, and its other role runs in another "
            "process that must share its Temporal: set --temporal-address (the embedded dev server serves only the "
            "process that starts it)"
        )
        assert "Traceback" not in p.stderr
    # A shared database means replicas: each would start its own embedded Temporal.
    p = run_cli("worker", "--simulate", "--no-auth", "--state-dir", str(tmp_path / "state"),
                "--database-url", "postgresql://remediator@127.0.0.1:1/remediator", "--listen", f"127.0.0.1:{free_port()}")
    assert p.returncode == 2, p.stdout + p.stderr
    assert p.stderr.strip().splitlines()[-1] == (
        "error: refusing to start: a shared database (--database-url postgresql://...) is for several replicas, and "
        "several replicas need one external Temporal (--temporal-address): with the embedded dev server each "
        "replica would start its own Temporal, and its own run of every alert"
    )
    p = run_cli("intake", "--no-intake", "--no-auth", "--temporal-address", "127.0.0.1:1")
    assert p.returncode == 2 and "remediator intake with --no-intake would serve nothing" in p.stderr


def test_a_second_engine_with_an_embedded_temporal_on_one_state_directory_is_refused(tmp_path):
    state = tmp_path / "state"
    first_port = free_port()
    first = subprocess.Popen(
        [sys.executable, str(ROOT / "worker.py"), "--simulate", "--no-auth", "--state-dir", str(state),
         "--listen", f"127.0.0.1:{first_port}", "--temporal-port", str(free_port()), "--temporal-ui-port", str(free_port())],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{first_port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        second = run_cli("worker", "--simulate", "--no-auth", "--state-dir", str(state),
                         "--listen", f"127.0.0.1:{free_port()}", "--temporal-port", str(free_port()),
                         "--temporal-ui-port", str(free_port()))
        assert second.returncode == 2, second.stdout + second.stderr
        assert (f"error: refusing to start: another remediator engine (pid {first.pid}) runs an embedded Temporal on "
                f"state directory {state}. Several replicas need one external Temporal (--temporal-address)") in second.stderr
        assert "Traceback" not in second.stderr
    finally:
        first.terminate()
        first.wait(30)
