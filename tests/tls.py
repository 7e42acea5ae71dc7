"""TLS in front of a Temporal dev server for the tests: a throwaway PKI and Debian's HAProxy.

``make_pki(dir)`` writes a CA, a server certificate for ``127.0.0.1``/``localhost`` and a client
certificate signed by it, plus a second, unrelated CA (the "wrong CA"), as PEM files.
``TlsProxy(upstream, pki, require_client_cert=...)`` terminates TLS on a free loopback port and
forwards the plain gRPC stream to the dev server, as a TLS-terminating proxy (Envoy, an ingress,
HAProxy) does in front of a self-hosted Temporal.

Why HAProxy and not stunnel4: gRPC clients negotiate HTTP/2 with ALPN, and the Temporal SDK's
core (tonic, rustls) refuses a server that does not answer ``h2`` (``H2NotNegotiated``);
stunnel has no ALPN option, HAProxy's ``bind ... alpn h2`` has.
"""

from __future__ import annotations

import datetime
import ipaddress
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ))
    path.chmod(0o600)


def _ca(cn: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn)).issuer_name(_name(cn))
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
            key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False,
        ), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _leaf(cn: str, ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, *, server: bool) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn)).issuer_name(ca.subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage(
            [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
        ), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
    )
    if server:
        builder = builder.add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"), x509.DNSName("temporal.test"), x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        ]), critical=False)
    return builder.sign(ca_key, hashes.SHA256()), key


def make_pki(directory: Path) -> Pki:
    directory.mkdir(parents=True, exist_ok=True)
    ca, ca_key = _ca("remediator test CA")
    other, _ = _ca("some other CA")
    server, server_key = _leaf("temporal.test", ca, ca_key, server=True)
    client, client_key = _leaf("remediator-worker", ca, ca_key, server=False)
    pki = Pki(
        ca=directory / "ca.pem", server_cert=directory / "server.pem", server_key=directory / "server.key",
        client_cert=directory / "client.pem", client_key=directory / "client.key", other_ca=directory / "other-ca.pem",
    )
    for cert, path in ((ca, pki.ca), (other, pki.other_ca), (server, pki.server_cert), (client, pki.client_cert)):
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(server_key, pki.server_key)
    _write_key(client_key, pki.client_key)
    return pki


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TlsProxy:
    """HAProxy (TCP mode) terminating TLS on ``127.0.0.1:port`` for ``upstream``, ALPN ``h2``.

    ``require_client_cert``: the client must present a certificate signed by the PKI's CA
    (mutual TLS); otherwise any client may connect. Use as a context manager.
    """

    def __init__(self, upstream: str, pki: Pki, workdir: Path, *, require_client_cert: bool = False) -> None:
        self.upstream = upstream
        self.pki = pki
        self.workdir = workdir
        self.require_client_cert = require_client_cert
        self.port = _free_port()
        self.process: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def __enter__(self) -> "TlsProxy":
        binary = shutil.which("haproxy") or ("/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").exists() else None)
        if binary is None:
            raise RuntimeError("haproxy is not installed (make system-deps installs it)")
        bundle = self.workdir / f"server-{self.port}.pem"  # HAProxy wants certificate and key in one file
        bundle.write_bytes(self.pki.server_cert.read_bytes() + self.pki.server_key.read_bytes())
        bind = f"bind 127.0.0.1:{self.port} ssl crt {bundle} alpn h2"
        if self.require_client_cert:
            bind += f" ca-file {self.pki.ca} verify required"
        conf = self.workdir / f"haproxy-{self.port}.cfg"
        conf.write_text("\n".join([
            "global",
            "  maxconn 256",
            "defaults",
            "  mode tcp",
            "  timeout connect 5s",
            "  timeout client 10m",
            "  timeout server 10m",
            "frontend temporal",
            f"  {bind}",
            "  default_backend dev",
            "backend dev",
            f"  server dev {self.upstream}",
            "",
        ]))
        self.process = subprocess.Popen(
            [binary, "-db", "-f", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"haproxy exited: {self.process.stderr.read().decode() if self.process.stderr else ''}")
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return self
            time.sleep(0.05)
        raise RuntimeError("haproxy did not listen within 10 s")

    def __exit__(self, *exc: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(5)
