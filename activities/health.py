"""Health checks as Temporal activities: one evaluation per call, the workflow polls.

``HealthActivities`` is built once by ``worker.py`` with the ApiClient from
``remediator.k8s.client.load_api_client`` and the optional Prometheus and Alertmanager URLs;
the workflow runs the step's check every ``interval`` until it passes, fails for good
(``final``) or its ``timeout`` runs out. Activity names:

* ``check_rollout_status`` - kubectl's rollout status viewers
  (pkg/polymorphichelpers/rollout_status.go) for Deployment, StatefulSet and DaemonSet,
  with kubectl's own messages;
* ``check_node_ready`` - the Node's ``Ready`` condition is ``True``;
* ``check_promql`` - a Prometheus instant query (``GET /api/v1/query``) whose every sample
  must satisfy ``<op> threshold``;
* ``check_alert_resolved`` - the alert that started the run is no longer active in
  Alertmanager (``GET /api/v2/alerts``).

Unreachable or failing Prometheus/Alertmanager raise a retryable ``ApplicationError``;
Kubernetes errors are classified by ``remediator.k8s``.
"""

from __future__ import annotations

import json
import math
import operator
from collections.abc import Callable
from typing import Any

import httpx
import kubernetes.client
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError
from temporalio import activity
from temporalio.exceptions import ApplicationError

from remediator.k8s.errors import api_errors
from remediator.domain.messages import HealthInput, HealthResult, TargetRef
from remediator.domain.playbook import PromQLCheck

PROMETHEUS_UNAVAILABLE = "PrometheusUnavailable"
ALERTMANAGER_UNAVAILABLE = "AlertmanagerUnavailable"
"""Retryable ApplicationError types: the monitoring system could not answer this time."""

HTTP_TIMEOUT = 10.0
"""Seconds for one Prometheus/Alertmanager request."""

TIMED_OUT_REASON = "ProgressDeadlineExceeded"

OPS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
}


# --------------------------------------------------------------------------- kubectl status viewers


def deployment_status(deployment: dict[str, Any]) -> tuple[str, bool, str | None]:
    """kubectl ``DeploymentStatusViewer.Status``: (message, done, error).

    ``error`` is set when the rollout failed for good (``ProgressDeadlineExceeded``).
    Messages are kubectl's without the trailing newline.
    """
    name = deployment["metadata"]["name"]
    spec, status = deployment.get("spec") or {}, deployment.get("status") or {}
    generation = deployment["metadata"].get("generation", 0)
    if generation <= status.get("observedGeneration", 0):
        for cond in status.get("conditions") or []:
            if cond.get("type") == "Progressing" and cond.get("reason") == TIMED_OUT_REASON:
                return "", False, f'deployment "{name}" exceeded its progress deadline'
        replicas = spec.get("replicas")
        updated = status.get("updatedReplicas", 0)
        if replicas is not None and updated < replicas:
            return (
                f'Waiting for deployment "{name}" rollout to finish: {updated} out of {replicas} '
                "new replicas have been updated...",
                False,
                None,
            )
        if status.get("replicas", 0) > updated:
            return (
                f'Waiting for deployment "{name}" rollout to finish: {status.get("replicas", 0) - updated} '
                "old replicas are pending termination...",
                False,
                None,
            )
        available = status.get("availableReplicas", 0)
        if available < updated:
            return (
                f'Waiting for deployment "{name}" rollout to finish: {available} of {updated} '
                "updated replicas are available...",
                False,
                None,
            )
        return f'deployment "{name}" successfully rolled out', True, None
    return "Waiting for deployment spec update to be observed...", False, None


def daemonset_status(daemon: dict[str, Any]) -> tuple[str, bool, str | None]:
    """kubectl ``DaemonSetStatusViewer.Status``: (message, done, error)."""
    name = daemon["metadata"]["name"]
    spec, status = daemon.get("spec") or {}, daemon.get("status") or {}
    if (spec.get("updateStrategy") or {}).get("type", "RollingUpdate") != "RollingUpdate":
        return "", True, "rollout status is only available for RollingUpdate strategy type"
    if daemon["metadata"].get("generation", 0) <= status.get("observedGeneration", 0):
        desired = status.get("desiredNumberScheduled", 0)
        updated = status.get("updatedNumberScheduled", 0)
        if updated < desired:
            return (
                f'Waiting for daemon set "{name}" rollout to finish: {updated} out of {desired} '
                "new pods have been updated...",
                False,
                None,
            )
        available = status.get("numberAvailable", 0)
        if available < desired:
            return (
                f'Waiting for daemon set "{name}" rollout to finish: {available} of {desired} '
                "updated pods are available...",
                False,
                None,
            )
        return f'daemon set "{name}" successfully rolled out', True, None
    return "Waiting for daemon set spec update to be observed...", False, None


def statefulset_status(sts: dict[str, Any]) -> tuple[str, bool, str | None]:
    """kubectl ``StatefulSetStatusViewer.Status``: (message, done, error)."""
    spec, status = sts.get("spec") or {}, sts.get("status") or {}
    strategy = spec.get("updateStrategy") or {}
    if strategy.get("type", "RollingUpdate") != "RollingUpdate":
        return "", True, "rollout status is only available for RollingUpdate strategy type"
    observed = status.get("observedGeneration", 0)
    if observed == 0 or sts["metadata"].get("generation", 0) > observed:
        return "Waiting for statefulset spec update to be observed...", False, None
    replicas = spec.get("replicas")
    ready = status.get("readyReplicas", 0)
    if replicas is not None and ready < replicas:
        return f"Waiting for {replicas - ready} pods to be ready...", False, None
    updated = status.get("updatedReplicas", 0)
    rolling = strategy.get("rollingUpdate")
    if rolling is not None:
        partition = rolling.get("partition")
        if replicas is not None and partition is not None and updated < replicas - partition:
            return (
                f"Waiting for partitioned roll out to finish: {updated} out of {replicas - partition} "
                "new pods have been updated...",
                False,
                None,
            )
        return f"partitioned roll out complete: {updated} new pods have been updated...", True, None
    if status.get("updateRevision") != status.get("currentRevision"):
        return (
            f"waiting for statefulset rolling update to complete {updated} pods at revision "
            f"{status.get('updateRevision')}...",
            False,
            None,
        )
    return (
        f"statefulset rolling update complete {status.get('currentReplicas', 0)} pods at revision "
        f"{status.get('currentRevision')}...",
        True,
        None,
    )


STATUS_VIEWERS = {
    "Deployment": deployment_status,
    "DaemonSet": daemonset_status,
    "StatefulSet": statefulset_status,
}


def _format_value(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return f"{value:g}"


def _series(metric: dict[str, str]) -> str:
    """A sample's labels as Prometheus prints them: ``name{a="b"}``."""
    name = metric.get("__name__", "")
    labels = ",".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in sorted(metric.items()) if k != "__name__")
    return f"{name}{{{labels}}}"


class HealthActivities:
    """The health-check activities.

    ``prometheus_url`` / ``alertmanager_url``: base URLs (``http://prometheus:9090``); None
    when not configured. Each check is one evaluation; the workflow does the polling.
    """

    def __init__(
        self,
        api_client: kubernetes.client.ApiClient,
        prometheus_url: str | None = None,
        alertmanager_url: str | None = None,
    ) -> None:
        self.api_client = api_client
        self.core = kubernetes.client.CoreV1Api(api_client)
        self.apps = kubernetes.client.AppsV1Api(api_client)
        self.prometheus_url = prometheus_url.rstrip("/") if prometheus_url else None
        self.alertmanager_url = alertmanager_url.rstrip("/") if alertmanager_url else None

    def _read(self, target: TargetRef) -> dict[str, Any] | None:
        """The target as the API server sent it, or None on 404."""
        read = {
            "Deployment": self.apps.read_namespaced_deployment,
            "StatefulSet": self.apps.read_namespaced_stateful_set,
            "DaemonSet": self.apps.read_namespaced_daemon_set,
        }.get(target.kind)
        try:
            with api_errors(f"GET {target.key}"):
                if target.kind == "Node":
                    response = self.core.read_node(target.name, _preload_content=False)
                else:
                    response = read(target.name, target.namespace, _preload_content=False)  # type: ignore[misc]
                return json.loads(response.data)
        except ApplicationError as exc:
            if isinstance(exc.__cause__, ApiException) and exc.__cause__.status == 404:
                return None
            raise

    # ------------------------------------------------------------------ rollout status

    @activity.defn
    def check_rollout_status(self, input: HealthInput) -> HealthResult:
        """``kubectl rollout status`` evaluated once, with kubectl's messages.

        healthy True when kubectl would say "successfully rolled out" (or "partitioned roll
        out complete"); ``final`` True with healthy False on ``ProgressDeadlineExceeded``
        ('deployment "x" exceeded its progress deadline'), on a non-RollingUpdate strategy,
        or when the target is gone.

        Raises:
            ApplicationError: Kubernetes API errors as classified by remediator.k8s.
        """
        target = input.target
        viewer = STATUS_VIEWERS.get(target.kind)
        if viewer is None:
            return HealthResult(
                healthy=False, final=True, message=f"no status viewer has been implemented for {target.kind}"
            )
        obj = self._read(target)
        if obj is None:
            return HealthResult(healthy=False, final=True, message=f"{target.key} not found")
        message, done, error = viewer(obj)
        observed = {
            "generation": obj["metadata"].get("generation"),
            "resourceVersion": obj["metadata"].get("resourceVersion"),
            "status": {k: v for k, v in (obj.get("status") or {}).items() if k != "conditions"},
        }
        if error is not None:
            return HealthResult(healthy=False, final=True, message=error, observed=observed)
        activity.logger.info("rollout status %s: %s", target.key, message)
        return HealthResult(healthy=done, final=False, message=message, observed=observed)

    # ------------------------------------------------------------------ node ready

    @activity.defn
    def check_node_ready(self, input: HealthInput) -> HealthResult:
        """The Node's ``Ready`` condition is ``True``. Never final: a node may come back.

        Raises:
            ApplicationError: Kubernetes API errors as classified by remediator.k8s.
        """
        target = input.target
        node = self._read(target)
        if node is None:
            return HealthResult(healthy=False, final=True, message=f"node {target.name} not found")
        conditions = (node.get("status") or {}).get("conditions") or []
        ready = next((c for c in conditions if c.get("type") == "Ready"), None)
        observed = {
            "ready": ready,
            "unschedulable": bool((node.get("spec") or {}).get("unschedulable", False)),
        }
        if ready is None:
            return HealthResult(healthy=False, message=f"node {target.name} reports no Ready condition", observed=observed)
        if ready.get("status") == "True":
            return HealthResult(healthy=True, message=f"node {target.name} is Ready", observed=observed)
        detail = " - ".join(x for x in (ready.get("reason"), ready.get("message")) if x)
        return HealthResult(
            healthy=False,
            message=f"node {target.name} is not Ready (Ready={ready.get('status')})" + (f": {detail}" if detail else ""),
            observed=observed,
        )

    # ------------------------------------------------------------------ promql

    @activity.defn
    def check_promql(self, input: HealthInput) -> HealthResult:
        """A Prometheus instant query; healthy when every sample satisfies ``<op> threshold``.

        ``params`` (PromQLCheck): ``query``, ``op``, ``threshold``, ``on_empty``. An empty
        result is healthy only with ``on_empty: pass``. A query Prometheus rejects (400
        ``bad_data``) is a final failure with Prometheus' own error text; no Prometheus
        configured is a final failure too.

        Raises:
            ApplicationError: type ``PrometheusUnavailable`` (retryable) when Prometheus is
                unreachable, answers 5xx/422 or something that is not its API.
        """
        try:
            check = PromQLCheck.model_validate(input.params)
        except ValidationError as exc:
            return HealthResult(healthy=False, final=True, message=f"invalid promql check: {exc.errors()[0]['msg']}")
        if not self.prometheus_url:
            return HealthResult(
                healthy=False,
                final=True,
                message="the promql check needs a Prometheus: set --prometheus-url (REMEDIATOR_PROMETHEUS_URL)",
            )
        url = f"{self.prometheus_url}/api/v1/query"
        try:
            response = httpx.get(url, params={"query": check.query}, timeout=HTTP_TIMEOUT)
        except httpx.HTTPError as exc:
            raise ApplicationError(
                f"Prometheus at {self.prometheus_url} unreachable: {exc}", type=PROMETHEUS_UNAVAILABLE
            ) from exc
        try:
            payload = response.json()
        except ValueError:
            payload = None
        if not isinstance(payload, dict) or "status" not in payload:
            raise ApplicationError(
                f"Prometheus at {self.prometheus_url} answered HTTP {response.status_code} without its API's JSON",
                type=PROMETHEUS_UNAVAILABLE,
            )
        if payload["status"] != "success":
            error = f"{payload.get('errorType', 'error')}: {payload.get('error', '')}"
            if response.status_code == 400 or payload.get("errorType") == "bad_data":
                return HealthResult(
                    healthy=False, final=True, message=f"Prometheus rejected the query {check.query!r}: {error}"
                )
            raise ApplicationError(
                f"Prometheus query {check.query!r} failed (HTTP {response.status_code}): {error}",
                type=PROMETHEUS_UNAVAILABLE,
            )
        return self._judge(check, payload.get("data") or {})

    @staticmethod
    def _judge(check: PromQLCheck, data: dict[str, Any]) -> HealthResult:
        result_type, result = data.get("resultType"), data.get("result")
        if result_type == "scalar":
            samples = [({}, result)]
        elif result_type == "vector":
            samples = [(s.get("metric") or {}, s.get("value")) for s in result or []]
        else:
            return HealthResult(
                healthy=False,
                final=True,
                message=f"query {check.query!r} returned a {result_type}; an instant vector or scalar is needed",
            )
        observed = {
            "samples": [{"metric": m, "value": v[1] if v else None} for m, v in samples],
            "op": check.op,
            "threshold": check.threshold,
        }
        condition = f"{check.op} {_format_value(check.threshold)}"
        if not samples:
            healthy = check.on_empty == "pass"
            return HealthResult(
                healthy=healthy,
                message=f"query {check.query!r} returned no samples (on_empty: {check.on_empty})",
                observed=observed,
            )
        compare = OPS[check.op]
        failing = []
        for metric, value in samples:
            number = float(value[1])  # Prometheus sends "NaN", "+Inf" as strings float() reads
            if not compare(number, check.threshold):
                failing.append(f"{_series(metric)} = {_format_value(number)}")
        if failing:
            return HealthResult(
                healthy=False,
                message=f"{len(failing)} of {len(samples)} samples not {condition}: " + ", ".join(failing[:5])
                + (" ..." if len(failing) > 5 else ""),
                observed=observed,
            )
        return HealthResult(healthy=True, message=f"all {len(samples)} samples {condition}", observed=observed)

    # ------------------------------------------------------------------ alert resolved

    @activity.defn
    def check_alert_resolved(self, input: HealthInput) -> HealthResult:
        """The alert that started the run (by fingerprint) is no longer active in Alertmanager.

        Asks ``GET /api/v2/alerts?active=true&filter=alertname="..."`` and looks for the
        fingerprint; Alertmanager's API lists no resolved alert, so absent means resolved.
        Without an Alertmanager URL it returns healthy False, final False: the workflow then
        relies on the ``resolved`` webhook notification it also watches for.

        Raises:
            ApplicationError: type ``AlertmanagerUnavailable`` (retryable) when Alertmanager
                is unreachable or answers 5xx.
        """
        alert = input.alert
        if alert is None:
            return HealthResult(healthy=False, final=True, message="no alert is attached to this run")
        if not self.alertmanager_url:
            return HealthResult(
                healthy=False,
                final=False,
                message=(
                    f"no Alertmanager API configured (--alertmanager-url); waiting for the resolved "
                    f"notification of {alert.alertname or 'the alert'} ({alert.fingerprint})"
                ),
            )
        params: list[tuple[str, str]] = [("active", "true")]
        if alert.alertname:
            params.append(("filter", f"alertname={json.dumps(alert.alertname, ensure_ascii=False)}"))
        url = f"{self.alertmanager_url}/api/v2/alerts"
        try:
            response = httpx.get(url, params=params, timeout=HTTP_TIMEOUT)
        except httpx.HTTPError as exc:
            raise ApplicationError(
                f"Alertmanager at {self.alertmanager_url} unreachable: {exc}", type=ALERTMANAGER_UNAVAILABLE
            ) from exc
        if response.status_code >= 500:
            raise ApplicationError(
                f"Alertmanager answered HTTP {response.status_code}: {response.text.strip()[:300]}",
                type=ALERTMANAGER_UNAVAILABLE,
            )
        if response.status_code != 200:
            return HealthResult(
                healthy=False,
                final=True,
                message=f"Alertmanager refused the query (HTTP {response.status_code}): {response.text.strip()[:300]}",
            )
        try:
            alerts = response.json()
        except ValueError as exc:
            raise ApplicationError(
                "Alertmanager answered something that is not JSON", type=ALERTMANAGER_UNAVAILABLE
            ) from exc
        match = next((a for a in alerts if a.get("fingerprint") == alert.fingerprint), None)
        if match is None:
            return HealthResult(
                healthy=True,
                message=f"alert {alert.alertname} ({alert.fingerprint}) is no longer active",
                observed={"active_with_same_name": len(alerts)},
            )
        state = (match.get("status") or {}).get("state", "active")
        return HealthResult(
            healthy=False,
            message=f"alert {alert.alertname} ({alert.fingerprint}) is still firing (state {state})",
            observed={"status": match.get("status"), "endsAt": match.get("endsAt")},
        )
