"""The worker against a Temporal behind a real TLS-terminating proxy (Debian's HAProxy, see
tests/tls.py): server verification, mutual TLS, and the start-up refusals of a wrong CA, a wrong
server name and a missing client certificate, each a clear message and no traceback.

Everything is a separate process, as in production: ``temporal server start-dev``, HAProxy in
front of it, ``python worker.py`` with the ``--temporal-tls-*`` flags, the Kubernetes API emulator.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from remediator.app.config import TemporalSettings
from remediator.app.temporal import TemporalConnectError, TemporalConnection, describe_connect_error
from tests.support import WorkerProcess, debian_binary
from tests.test_durability import PLAYBOOK
from tests.tls import Pki, TlsProxy, make_pki

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    if not Path("/usr/sbin/haproxy").exists():  # not on a non-root PATH
        debian_binary("haproxy", "haproxy")
    return make_pki(tmp_path / "pki")


@pytest.fixture
def tls_temporal(temporal, pki: Pki, tmp_path: Path):
    """The dev server behind HAProxy: TLS with the test CA's server certificate."""
    with TlsProxy(temporal.address, pki, tmp_path) as proxy:
        yield proxy


@pytest.fixture
def mtls_temporal(temporal, pki: Pki, tmp_path: Path):
    """The dev server behind HAProxy requiring a client certificate signed by the test CA."""
    with TlsProxy(temporal.address, pki, tmp_path, require_client_cert=True) as proxy:
        yield proxy


def refused_start(tmp_path: Path, kubeconfig: Path, *args: str) -> str:
    """Run ``worker.py ARGS``, which must refuse to start: its output (exit code 2, no traceback)."""
    (tmp_path / "playbooks").mkdir(exist_ok=True)
    (tmp_path / "playbooks" / "durability.yaml").write_text(PLAYBOOK)
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, str(ROOT / "worker.py"), "--kubeconfig", str(kubeconfig), "--no-auth",
         "--state-dir", str(tmp_path / "state"), "--playbook-dir", str(tmp_path / "playbooks"), *args],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 2, output
    assert "Traceback" not in output, output
    # A TLS verification failure is not retried for 20 s: trying again cannot help.
    assert time.monotonic() - started < 15, output
    return output


def test_the_worker_remediates_through_tls_with_server_verification(tmp_path, cluster, tls_temporal, pki):
    emu, kubeconfig = cluster
    (tmp_path / "playbooks").mkdir(exist_ok=True)
    (tmp_path / "playbooks" / "durability.yaml").write_text(PLAYBOOK)
    worker = WorkerProcess(tmp_path, tls_temporal.address, kubeconfig, ["--temporal-tls-ca", str(pki.ca)])
    try:
        resp = worker.post("firing")
        assert resp.status_code == 200, resp.text
        assert [a["disposition"] for a in resp.json()["alerts"]] == ["started"]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not [
            r for r in emu.requests(method="PATCH") if r.path.endswith("/deployments/checkout")
        ]:
            time.sleep(0.2)
        assert [r for r in emu.requests(method="PATCH") if r.path.endswith("/deployments/checkout")]
    finally:
        worker.stop()


def test_a_wrong_ca_is_a_clear_start_up_refusal(tmp_path, cluster, tls_temporal, pki):
    _, kubeconfig = cluster
    out = refused_start(tmp_path, kubeconfig, "--temporal-address", tls_temporal.address,
                        "--temporal-tls-ca", str(pki.other_ca))
    assert (
        f"refusing to start: Temporal at {tls_temporal.address}: TLS: the server's certificate is not signed by a CA "
        f"trusted here (--temporal-tls-ca {pki.other_ca}); set --temporal-tls-ca to the CA that signed it"
    ) in out, out


def test_a_server_name_the_certificate_does_not_carry_is_a_clear_refusal(tmp_path, cluster, tls_temporal, pki):
    _, kubeconfig = cluster
    out = refused_start(tmp_path, kubeconfig, "--temporal-address", tls_temporal.address,
                        "--temporal-tls-ca", str(pki.ca), "--temporal-tls-server-name", "temporal.elsewhere")
    assert (
        "TLS: the server's certificate is not valid for the name 'temporal.elsewhere'; set "
        "--temporal-tls-server-name to a name it carries"
    ) in out, out


def test_mutual_tls_without_a_client_certificate_is_a_clear_refusal(tmp_path, cluster, mtls_temporal, pki):
    _, kubeconfig = cluster
    out = refused_start(tmp_path, kubeconfig, "--temporal-address", mtls_temporal.address,
                        "--temporal-tls-ca", str(pki.ca))
    # TLS 1.3: the server's CertificateRequired alert, or only the closed connection, whichever
    # reaches the client first.
    assert f"refusing to start: Temporal at {mtls_temporal.address}: the server " in out, out
    assert (
        "it may require a client certificate: set --temporal-tls-cert and --temporal-tls-key"
    ) in out, out


def test_mutual_tls_with_a_client_certificate_starts_and_serves(tmp_path, cluster, mtls_temporal, pki):
    _, kubeconfig = cluster
    (tmp_path / "playbooks").mkdir(exist_ok=True)
    (tmp_path / "playbooks" / "durability.yaml").write_text(PLAYBOOK)
    worker = WorkerProcess(tmp_path, mtls_temporal.address, kubeconfig, [
        "--temporal-tls-ca", str(pki.ca), "--temporal-tls-cert", str(pki.client_cert),
        "--temporal-tls-key", str(pki.client_key),
    ])
    try:
        assert httpx.get(f"{worker.url}/healthz", timeout=5).json() == {"status": "ok"}
        resp = worker.post("firing")
        assert [a["disposition"] for a in resp.json()["alerts"]] == ["started"], resp.text
    finally:
        worker.stop()


def test_an_unreadable_tls_file_is_named(tmp_path, cluster, tls_temporal):
    _, kubeconfig = cluster
    missing = tmp_path / "nope.pem"
    out = refused_start(tmp_path, kubeconfig, "--temporal-address", tls_temporal.address, "--temporal-tls-ca", str(missing))
    assert f"refusing to start: --temporal-tls-ca: cannot read {missing}: No such file or directory" in out, out


def test_tls_flags_without_an_external_temporal_are_refused(tmp_path, cluster, pki):
    _, kubeconfig = cluster
    out = refused_start(tmp_path, kubeconfig, "--temporal-tls-ca", str(pki.ca))
    assert "--temporal-tls-ca need --temporal-address (REMEDIATOR_TEMPORAL_ADDRESS)" in out, out


def test_a_client_certificate_without_its_key_is_refused(tmp_path, cluster, pki):
    _, kubeconfig = cluster
    out = refused_start(tmp_path, kubeconfig, "--temporal-address", "127.0.0.1:1", "--temporal-tls-cert", str(pki.client_cert))
    assert "--temporal-tls-cert and --temporal-tls-key go together" in out, out


async def test_the_cli_reads_tls_from_the_environment_as_the_worker(monkeypatch, mtls_temporal, pki):
    """``remediator approve``/``reject``/``resume`` connect with the worker's variables."""
    monkeypatch.setenv("REMEDIATOR_TEMPORAL_TLS_CA", str(pki.ca))
    conn = TemporalConnection.from_settings(TemporalSettings(temporal_address=mtls_temporal.address))
    with pytest.raises(TemporalConnectError, match="may require a client certificate") as refused:
        await conn.connect()
    assert refused.value.retryable is False
    monkeypatch.setenv("REMEDIATOR_TEMPORAL_TLS_CERT", str(pki.client_cert))
    monkeypatch.setenv("REMEDIATOR_TEMPORAL_TLS_KEY", str(pki.client_key))
    client = await TemporalConnection.from_settings(TemporalSettings(temporal_address=mtls_temporal.address)).connect()
    assert await client.service_client.check_health()


@pytest.mark.parametrize("raw", [
    # the forms a TLS 1.3 server refusing a missing client certificate after the handshake takes
    # through the SDK (tonic/hyper/rustls); the first verbatim from a CI run against HAProxy
    "Failed client connect: `get_system_info` call error after connection: Status { code: Unknown, "
    'message: "transport error", source: Some(tonic::transport::Error(Transport, hyper::Error(Io, '
    'Custom { kind: BrokenPipe, error: "stream closed because of a broken pipe" }))) }',
    "Failed client connect: `get_system_info` call error after connection: received fatal alert: "
    "CertificateRequired",
    "Failed client connect: `get_system_info` call error after connection: connection closed",
])
def test_a_refused_client_certificate_is_said_whatever_form_the_sdk_gives_it(raw):
    conn = TemporalConnection(address="temporal:7233", namespace="default", tls=True, ca_file="/ca.pem")
    message, retryable = describe_connect_error(raw, conn)
    assert "may require a client certificate" in message and not retryable


def test_a_dropped_plain_connection_is_an_outage_to_retry():
    raw = ("Failed client connect: `get_system_info` call error after connection: Status { code: Unknown, "
           'message: "transport error", source: Some(hyper::Error(Io, Custom { kind: BrokenPipe })) }')
    message, retryable = describe_connect_error(raw, TemporalConnection(address="temporal:7233",
                                                                         namespace="default"))
    assert "set --temporal-tls" in message and retryable
