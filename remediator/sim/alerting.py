"""Start the real Alertmanager and Prometheus as child processes, on loopback only.

Used by ``remediator demo`` (remediator.cli) and by the end-to-end tests: both need the
genuine Alertmanager webhook notifier and the genuine Prometheus rule evaluator, not a
look-alike. Each process gets its own directory under the caller's state directory
(``<workdir>/alertmanager``, ``<workdir>/prometheus``) holding its generated config, its
storage and its log, and listens on ``127.0.0.1`` only. Alertmanager runs with
``--cluster.listen-address=`` (empty), which disables HA gossip so it binds no second port.

The binaries are the Debian packages ``prometheus-alertmanager`` (0.25, installed as
``/usr/bin/prometheus-alertmanager``) and ``prometheus`` (2.42), or upstream builds named
``alertmanager`` / ``prometheus`` on PATH. ``post_alerts`` speaks Alertmanager API v2
(``POST /api/v2/alerts``), the request Prometheus itself sends, so tests can inject alerts
without a Prometheus.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import yaml

from remediator.domain.durations import parse_duration

RECEIVER = "remediator"
"""Name of the one webhook receiver in the generated Alertmanager config; it appears as
``receiver`` in every webhook message."""

DEFAULT_GROUP_BY: tuple[str, ...] = ("alertname", "namespace")
"""Alertmanager ``group_by`` of the generated route. One notification per alert kind and
namespace is what an on-call engineer reads as "one incident"; the remediator handles every
alert of a message on its own, keyed by target, so grouping never hides an alert from it."""

LOG_TAIL_LINES = 40
_STARTUP_RETRIES = 3


class BinaryNotFoundError(FileNotFoundError):
    """The Alertmanager or Prometheus binary is not installed; the message says how to install it."""


class ProcessStartError(RuntimeError):
    """A child process exited or did not answer ``/-/ready`` in time; the message holds its log tail."""


class AlertmanagerAPIError(RuntimeError):
    """Alertmanager refused an API request; the message holds its status code and answer."""


# --------------------------------------------------------------------------- binaries


def _find_binary(names: Sequence[str], package: str, what: str) -> str:
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    raise BinaryNotFoundError(
        f"{what} was not found (looked for {', '.join(names)} on PATH); "
        f"install it with `apt-get install {package}`"
    )


def alertmanager_binary() -> str:
    """Path of the Alertmanager binary: ``prometheus-alertmanager`` (Debian) or ``alertmanager``.

    Raises:
        BinaryNotFoundError: neither is installed; the message says ``apt-get install prometheus-alertmanager``.
    """
    return _find_binary(
        ["prometheus-alertmanager", "/usr/bin/prometheus-alertmanager", "alertmanager"],
        "prometheus-alertmanager",
        "Alertmanager",
    )


def prometheus_binary() -> str:
    """Path of the Prometheus binary.

    Raises:
        BinaryNotFoundError: not installed; the message says ``apt-get install prometheus``.
    """
    return _find_binary(["prometheus", "/usr/bin/prometheus"], "prometheus", "Prometheus")


# --------------------------------------------------------------------------- processes


@dataclass
class ManagedProcess:
    """A started Alertmanager or Prometheus.

    ``url``: base URL without trailing slash, e.g. ``http://127.0.0.1:39093``.
    ``workdir``: the process's own directory (config, storage, log). Use as a context
    manager, or call ``stop()``; the process is not stopped when the object is collected.
    """

    name: str
    process: subprocess.Popen
    url: str
    workdir: Path
    log_path: Path
    config_path: Path

    @property
    def port(self) -> int:
        """The TCP port the web API listens on (on 127.0.0.1)."""
        return urlsplit(self.url).port or 80

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The last ``lines`` lines of the process's combined stdout/stderr."""
        return _tail(self.log_path, lines)

    def stop(self, timeout: float = 10) -> int | None:
        """Stop the process: SIGTERM, wait up to ``timeout`` seconds, then SIGKILL.

        Both binaries shut down cleanly on SIGTERM (Alertmanager snapshots silences and the
        notification log, Prometheus closes the TSDB). Safe to call twice.

        Returns:
            The exit code (negative signal number when killed), as ``Popen.returncode``.
        """
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def __enter__(self) -> "ManagedProcess":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago (the kernel's choice for port 0).

    Another process can take it before the caller binds it; the ``start_*`` functions retry
    with a new port when the process reports the address is in use and no port was given.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path: Path, lines: int) -> str:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return "(no log written)"
    return "\n".join(text.splitlines()[-lines:]) or "(log is empty)"


def _launch(
    name: str,
    argv_for_port: Callable[[int], list[str]],
    workdir: Path,
    config_path: Path,
    port: int | None,
    ready_timeout: float,
) -> ManagedProcess:
    """Start ``argv_for_port(port)`` with its output in ``<workdir>/<name>.log`` and wait for
    ``GET /-/ready`` to answer 200. Retries on a new port if the chosen one was taken."""
    attempts = 1 if port is not None else _STARTUP_RETRIES
    last_error: ProcessStartError | None = None
    for _ in range(attempts):
        chosen = port if port is not None else free_port()
        url = f"http://127.0.0.1:{chosen}"
        log_path = workdir / f"{name}.log"
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                argv_for_port(chosen),
                cwd=workdir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        managed = ManagedProcess(name, process, url, workdir, log_path, config_path)
        try:
            _wait_ready(managed, ready_timeout)
            return managed
        except ProcessStartError as exc:
            managed.stop()
            last_error = exc
            if "address already in use" not in managed.log_tail().lower():
                raise
        except BaseException:
            # Ctrl-C while waiting must not leave an orphan listening on the port.
            managed.stop()
            raise
    assert last_error is not None
    raise last_error


def _wait_ready(managed: ManagedProcess, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last = "no answer yet"
    with httpx.Client(timeout=2.0) as http:
        while True:
            code = managed.process.poll()
            if code is not None:
                raise ProcessStartError(
                    f"{managed.name} exited with code {code} before it was ready; "
                    f"last lines of {managed.log_path}:\n{managed.log_tail()}"
                )
            try:
                answer = http.get(f"{managed.url}/-/ready")
                # Checked again after the answer: a fixed port may belong to another
                # server, and then our process is the one that just failed to bind.
                if answer.status_code == 200 and managed.process.poll() is None:
                    return
                last = f"HTTP {answer.status_code}"
            except httpx.TransportError as exc:
                last = type(exc).__name__
            if time.monotonic() >= deadline:
                raise ProcessStartError(
                    f"{managed.name} did not answer {managed.url}/-/ready with 200 within "
                    f"{timeout:g}s (last: {last}); last lines of {managed.log_path}:\n{managed.log_tail()}"
                )
            time.sleep(0.05)


def _write_secret(path: Path, value: str) -> Path:
    """Write a credential readable by the owner only; the generated config points at it
    (``credentials_file`` / ``password_file``) so the YAML itself holds no secret."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value)
    return path


def _check_duration(field: str, value: str) -> str:
    try:
        parse_duration(value)
    except ValueError as exc:
        raise ValueError(f"{field}: {exc}") from None
    return value


def _check_http_url(field: str, url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{field} must be an http:// or https:// URL, got {url!r}")


# --------------------------------------------------------------------------- Alertmanager


def alertmanager_config(
    webhook_url: str | Sequence[str],
    *,
    bearer_token_file: Path | None = None,
    basic_auth: tuple[str, Path] | None = None,
    group_by: Sequence[str] = DEFAULT_GROUP_BY,
    group_wait: str = "1s",
    group_interval: str = "1s",
    repeat_interval: str = "1m",
    send_resolved: bool = True,
) -> dict[str, Any]:
    """The Alertmanager configuration (as a dict, dump it as YAML) with one receiver whose
    ``webhook_configs`` deliver to ``webhook_url`` (several URLs: one webhook config each, as a
    receiver lists the replicas of a webhook service).

    ``bearer_token_file`` becomes ``http_config.authorization`` (type ``Bearer``,
    ``credentials_file``); ``basic_auth`` ``(username, password_file)`` becomes
    ``http_config.basic_auth``; both as documented in Alertmanager's ``<http_config>``.
    Durations are Alertmanager's (``30s``, ``5m``).

    Raises:
        ValueError: both kinds of credentials, a URL that is not http(s), a bad duration,
            or an empty ``group_by``.
    """
    urls = [webhook_url] if isinstance(webhook_url, str) else list(webhook_url)
    if not urls:
        raise ValueError("webhook_url must name at least one URL")
    for url in urls:
        _check_http_url("webhook_url", url)
    if bearer_token_file is not None and basic_auth is not None:
        raise ValueError("give either a bearer token or basic auth, not both (Alertmanager refuses both)")
    if not group_by:
        raise ValueError("group_by must name at least one label")
    http_config: dict[str, Any] = {}
    if bearer_token_file is not None:
        http_config["authorization"] = {"type": "Bearer", "credentials_file": str(bearer_token_file)}
    if basic_auth is not None:
        username, password_file = basic_auth
        http_config["basic_auth"] = {"username": username, "password_file": str(password_file)}
    webhooks: list[dict[str, Any]] = []
    for url in urls:
        webhook: dict[str, Any] = {"url": url, "send_resolved": send_resolved}
        if http_config:
            webhook["http_config"] = http_config
        webhooks.append(webhook)
    return {
        "route": {
            "receiver": RECEIVER,
            "group_by": list(group_by),
            "group_wait": _check_duration("group_wait", group_wait),
            "group_interval": _check_duration("group_interval", group_interval),
            "repeat_interval": _check_duration("repeat_interval", repeat_interval),
        },
        "receivers": [{"name": RECEIVER, "webhook_configs": webhooks}],
    }


def start_alertmanager(
    workdir: Path,
    webhook_url: str | Sequence[str],
    *,
    bearer_token: str | None = None,
    basic_auth: tuple[str, str] | None = None,
    group_by: Sequence[str] = DEFAULT_GROUP_BY,
    group_wait: str = "1s",
    group_interval: str = "1s",
    repeat_interval: str = "1m",
    send_resolved: bool = True,
    port: int | None = None,
    ready_timeout: float = 30.0,
    cluster_port: int | None = None,
    cluster_peers: Sequence[str] = (),
) -> ManagedProcess:
    """Start Alertmanager on ``127.0.0.1`` delivering every alert to ``webhook_url`` (one URL
    or several: see ``alertmanager_config``).

    Writes ``<workdir>/alertmanager/alertmanager.yml`` (see ``alertmanager_config``; the
    credentials go to owner-only files next to it), keeps its state in
    ``<workdir>/alertmanager/data`` and its log in ``.../alertmanager.log``. Runs with
    ``--cluster.listen-address=`` (no gossip port) unless ``cluster_port`` is given, and
    ``--web.external-url`` set to its own URL, so ``externalURL`` in webhook messages is the
    returned ``url``.

    Args:
        bearer_token: sent as ``Authorization: Bearer <token>``.
        basic_auth: ``(username, password)``, sent as ``Authorization: Basic ...``.
        port: fixed port; None picks a free one.
        ready_timeout: seconds to wait for ``GET /-/ready`` to answer 200.
        cluster_port: an HA member: gossip on ``127.0.0.1:cluster_port``
            (``--cluster.listen-address``), with ``cluster_peers`` (``host:port`` of the other
            members, ``--cluster.peer``); the members then deduplicate notifications between
            them through their shared notification log, as an HA pair in production does.

    Returns:
        The running process; ``url`` is ``http://127.0.0.1:PORT``.

    Raises:
        BinaryNotFoundError: Alertmanager is not installed.
        ValueError: bad arguments (see ``alertmanager_config``).
        ProcessStartError: it exited or was not ready in time (the message holds its log tail).
    """
    home = Path(workdir).resolve() / "alertmanager"
    token_file = home / "bearer_token"
    password_file = home / "basic_auth_password"
    # Arguments are checked before anything is written or looked up.
    config = alertmanager_config(
        webhook_url,
        bearer_token_file=token_file if bearer_token is not None else None,
        basic_auth=(basic_auth[0], password_file) if basic_auth is not None else None,
        group_by=group_by,
        group_wait=group_wait,
        group_interval=group_interval,
        repeat_interval=repeat_interval,
        send_resolved=send_resolved,
    )
    binary = alertmanager_binary()
    home.mkdir(parents=True, exist_ok=True)
    if bearer_token is not None:
        _write_secret(token_file, bearer_token)
    if basic_auth is not None:
        _write_secret(password_file, basic_auth[1])
    config_path = home / "alertmanager.yml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    data = home / "data"
    data.mkdir(exist_ok=True)

    def argv(p: int) -> list[str]:
        return [
            binary,
            f"--config.file={config_path}",
            f"--storage.path={data}",
            f"--web.listen-address=127.0.0.1:{p}",
            f"--web.external-url=http://127.0.0.1:{p}",
            *(
                # Empty disables the HA cluster: no gossip listener on 0.0.0.0:9094.
                ["--cluster.listen-address="] if cluster_port is None
                else [f"--cluster.listen-address=127.0.0.1:{cluster_port}",
                      f"--cluster.advertise-address=127.0.0.1:{cluster_port}",
                      *(f"--cluster.peer={peer}" for peer in cluster_peers)]
            ),
        ]

    return _launch("alertmanager", argv, home, config_path, port, ready_timeout)


def _json_default(value: Any) -> str:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError(f"alert timestamps must carry a time zone, got {value.isoformat()}")
        return value.isoformat()
    raise TypeError(f"cannot send {type(value).__name__} to Alertmanager")


def post_alerts(alertmanager_url: str, alerts: list[Mapping[str, Any]], *, timeout: float = 10.0) -> None:
    """Send alerts to Alertmanager as Prometheus does: ``POST /api/v2/alerts``.

    Each alert is a ``postableAlert``: ``labels`` (required, with ``alertname``),
    ``annotations``, ``startsAt``, ``endsAt``, ``generatorURL``. Timestamps may be RFC 3339
    strings or timezone-aware datetimes. An ``endsAt`` in the past resolves the alert.

    Raises:
        AlertmanagerAPIError: Alertmanager answered other than 200 (422 for an alert without
            ``labels``, 400 for an invalid one); the message holds its answer.
        httpx.TransportError: Alertmanager could not be reached.
        ValueError: a naive datetime.
    """
    body = json.dumps(list(alerts), default=_json_default)
    answer = httpx.post(
        f"{alertmanager_url.rstrip('/')}/api/v2/alerts",
        content=body,
        headers={"Content-Type": "application/json"},
        timeout=timeout,
    )
    if answer.status_code != 200:
        raise AlertmanagerAPIError(
            f"Alertmanager refused the alerts: HTTP {answer.status_code}: {answer.text.strip()}"
        )


# --------------------------------------------------------------------------- Prometheus


def prometheus_config(
    *,
    scrape_targets: Mapping[str, str],
    rule_files: Sequence[Path] = (),
    alertmanager_url: str | None = None,
    scrape_interval: str = "1s",
    evaluation_interval: str = "1s",
) -> dict[str, Any]:
    """The Prometheus configuration (as a dict, dump it as YAML).

    One scrape job per ``scrape_targets`` entry (job name -> ``host:port``, scraped at
    ``/metrics`` over http), rule files by absolute path, and ``alerting.alertmanagers``
    pointing at ``alertmanager_url`` (its path, if any, becomes ``path_prefix``).

    Raises:
        ValueError: a target that is not ``host:port``, a missing rule file, a bad URL or duration.
    """
    scrape_configs = []
    for job, target in scrape_targets.items():
        host, _, port = target.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"scrape target of job {job!r} must be host:port, got {target!r}")
        scrape_configs.append({"job_name": job, "static_configs": [{"targets": [target]}]})
    for f in rule_files:
        # Prometheus reads rule_files as globs, so a missing file would silently load no rules.
        if not Path(f).is_file():
            raise ValueError(f"rule file {f} does not exist")
    config: dict[str, Any] = {
        "global": {
            "scrape_interval": _check_duration("scrape_interval", scrape_interval),
            "evaluation_interval": _check_duration("evaluation_interval", evaluation_interval),
        },
        "rule_files": [str(Path(f).resolve()) for f in rule_files],
        "scrape_configs": scrape_configs,
    }
    if alertmanager_url is not None:
        _check_http_url("alertmanager_url", alertmanager_url)
        parts = urlsplit(alertmanager_url)
        am: dict[str, Any] = {"scheme": parts.scheme, "static_configs": [{"targets": [parts.netloc]}]}
        if parts.path.strip("/"):
            am["path_prefix"] = parts.path
        config["alerting"] = {"alertmanagers": [am]}
    return config


def start_prometheus(
    workdir: Path,
    *,
    scrape_targets: Mapping[str, str],
    rule_files: Sequence[Path] = (),
    alertmanager_url: str | None = None,
    scrape_interval: str = "1s",
    evaluation_interval: str = "1s",
    resend_delay: str = "1s",
    port: int | None = None,
    ready_timeout: float = 60.0,
) -> ManagedProcess:
    """Start Prometheus on ``127.0.0.1`` scraping ``scrape_targets`` and evaluating ``rule_files``.

    Writes ``<workdir>/prometheus/prometheus.yml`` (see ``prometheus_config``), keeps the
    TSDB in ``<workdir>/prometheus/data`` and its log in ``.../prometheus.log``.
    ``--web.external-url`` is its own URL, so an alert's ``generatorURL`` points at it.

    Args:
        scrape_targets: job name -> ``host:port``, e.g. ``{"kube-state-metrics": "127.0.0.1:8080"}``.
        rule_files: alerting/recording rule files (Prometheus rule-file YAML).
        alertmanager_url: where firing alerts are sent (``http://127.0.0.1:PORT``).
        resend_delay: ``--rules.alert.resend-delay``, how often a still-firing alert is sent
            again (Prometheus' default is 1m). Prometheus learns its Alertmanagers and
            scrape targets through service discovery, which reports only every 5 s, so a
            first send can find no Alertmanager yet and is dropped; a short resend delay
            makes the next evaluation deliver it instead of a minute later.
        port: fixed port; None picks a free one.
        ready_timeout: seconds to wait for ``GET /-/ready`` to answer 200 (TSDB opened).

    Raises:
        BinaryNotFoundError: Prometheus is not installed.
        ValueError: bad arguments (see ``prometheus_config``).
        ProcessStartError: it exited (e.g. a rule file that does not parse) or was not ready
            in time; the message holds its log tail.
    """
    _check_duration("resend_delay", resend_delay)
    config = prometheus_config(
        scrape_targets=scrape_targets,
        rule_files=rule_files,
        alertmanager_url=alertmanager_url,
        scrape_interval=scrape_interval,
        evaluation_interval=evaluation_interval,
    )
    binary = prometheus_binary()
    home = Path(workdir).resolve() / "prometheus"
    home.mkdir(parents=True, exist_ok=True)
    config_path = home / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    data = home / "data"
    data.mkdir(exist_ok=True)

    def argv(p: int) -> list[str]:
        return [
            binary,
            f"--config.file={config_path}",
            f"--storage.tsdb.path={data}",
            f"--web.listen-address=127.0.0.1:{p}",
            f"--web.external-url=http://127.0.0.1:{p}",
            f"--rules.alert.resend-delay={resend_delay}",
        ]

    return _launch("prometheus", argv, home, config_path, port, ready_timeout)
