"""Diagnosis as Temporal activities: gather evidence about the target, then assess it.

``DiagnosisActivities`` is built once by the worker (remediator.app.runtime ``build_activities``)
with the shared ``remediator.k8s.client.KubeClient`` and the optional Prometheus URL. Before the
first mutating step the workflow runs one activity per ``diagnosis`` entry of the playbook,
concurrently, then ``assess`` once. Activity names:

* ``diagnose_recent_rollout`` - the Deployment's revision and when its ReplicaSet was created;
* ``diagnose_container_status`` - the target's pods' ``containerStatuses`` (waiting and last
  termination reasons, exit codes, restart counts);
* ``diagnose_kube_events`` - v1 Events of the target and of its pods newer than ``since``;
* ``diagnose_node_conditions`` - conditions of the target Node, or of the nodes running its pods;
* ``diagnose_promql`` - a Prometheus instant query compared with a threshold;
* ``assess`` - the confidence and each step's CEL ``when`` (pure, no I/O; ``assess_evidence``).

Every ``diagnose_*`` takes a ``DiagnosisInput`` (``params``: the check's model, e.g.
``ContainerStatusEvidence``) and returns an ``Evidence`` whose ``signal`` means what that model
says (remediator.domain.playbook). They only read: Kubernetes through the KubeClient, Prometheus
through remediator.monitoring.prometheus. Evidence that cannot be gathered for good (404, 403,
a query Prometheus rejects, no Prometheus configured) is returned with ``error`` set and
``signal`` False, so the run goes on with less confidence; temporary failures (5xx, 409, 429,
connection errors, Prometheus unreachable) raise the retryable ``ApplicationError`` types of
remediator.domain.errors (``KubeTemporaryError``, ``PrometheusUnavailable``).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from temporalio import activity

from remediator.domain.durations import format_duration
from remediator.domain.errors import ClassifiedError
from remediator.domain.messages import (
    AlertRef,
    AssessInput,
    Assessment,
    DiagnosisInput,
    Evidence,
    TargetRef,
)
from remediator.domain.playbook import (
    DIAGNOSIS_KINDS,
    Confidence,
    ContainerStatusEvidence,
    KubeEventsEvidence,
    NodeConditionsEvidence,
    PromQLCheck,
    PromQLEvidence,
    RecentRolloutEvidence,
)
from remediator.k8s.client import KubeClient
from remediator.k8s.kubectl import controller_of, rfc3339, selector_string
from remediator.monitoring.prometheus import NOT_CONFIGURED, Prometheus, QueryRejected
from remediator.playbook import cel

P = TypeVar("P", bound=BaseModel)

CRASH_LOOP_REASON = "CrashLoopBackOff"
OOM_KILLED = "OOMKilled"
PRESSURE_CONDITIONS: tuple[str, ...] = ("MemoryPressure", "DiskPressure", "PIDPressure", "NetworkUnavailable")
"""Node conditions that are bad when ``True`` (kubelet and cloud route controller)."""

LISTED = 10
"""At most this many items (containers, events) are listed in an Evidence value."""


def _parse_time(text: Any) -> datetime | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _n(count: int, noun: str) -> str:
    """``3 pods``, ``1 pod``."""
    return f"{count} {noun}" + ("" if count == 1 else "s")


def _ago(delta: timedelta) -> str:
    return format_duration(timedelta(seconds=max(0, int(delta.total_seconds()))))


def event_time(event: dict[str, Any]) -> datetime | None:
    """When an Event was last seen: ``series.lastObservedTime``, ``lastTimestamp``,
    ``eventTime``, ``firstTimestamp`` or the object's creation, the first that is set
    (as ``kubectl events`` sorts them)."""
    meta = event.get("metadata") or {}
    for text in (
        (event.get("series") or {}).get("lastObservedTime"),
        event.get("lastTimestamp"),
        event.get("eventTime"),
        event.get("firstTimestamp"),
        meta.get("creationTimestamp"),
    ):
        moment = _parse_time(text)
        if moment is not None:
            return moment
    return None


@dataclass(frozen=True)
class Pods:
    """The target's pods as listed, and which names are (or were) its pods and ReplicaSets."""

    pods: list[dict[str, Any]]
    names: set[str]
    pattern: re.Pattern[str] | None
    replica_sets: set[str]

    def is_pod(self, name: str) -> bool:
        return name in self.names or (self.pattern is not None and self.pattern.fullmatch(name) is not None)


class NotGathered(Exception):
    """Evidence that cannot be gathered for good (wrong kind, target gone, no Prometheus, a
    query Prometheus rejects); ``str()`` becomes the Evidence's ``error``."""


class DiagnosisActivities:
    """The evidence activities and ``assess``, sharing the worker's KubeClient.

    ``kube``: every Kubernetes read goes through it. ``prometheus_url``: base URL
    (``http://prometheus:9090``) for ``promql`` evidence, None when not configured. ``clock``:
    the wall clock (aware UTC) used for ages and ``since`` windows; tests move it forward
    instead of waiting.
    """

    def __init__(
        self,
        kube: KubeClient,
        prometheus_url: str | None = None,
        *,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.kube = kube
        self.prometheus = Prometheus(prometheus_url) if prometheus_url else None
        self.clock = clock or (lambda: datetime.now(timezone.utc))

    # ------------------------------------------------------------------ plumbing

    def _gather(self, input: DiagnosisInput, model: type[P], gather: Callable[[P], Evidence]) -> Evidence:
        """Run ``gather`` with the check's params (a ``model``); a permanent failure becomes
        Evidence with ``error``, a temporary one is raised for the workflow's RetryPolicy.

        Raises:
            ApplicationError: a retryable ``ClassifiedError`` (``KubeTemporaryError``,
                ``PrometheusUnavailable``), converted.
        """
        check = input.check
        try:
            kinds = DIAGNOSIS_KINDS.get(check)
            if kinds is not None and input.target.kind not in kinds:
                raise NotGathered(f"{check} cannot examine a {input.target.kind}; it works on {', '.join(kinds)}")
            if not isinstance(input.params, model):
                raise NotGathered(
                    f"invalid {check} parameters: expected {model.__name__}, got {type(input.params).__name__}"
                )
            evidence = gather(input.params)
        except ClassifiedError as exc:
            if not exc.non_retryable:
                raise exc.to_application_error() from exc
            return self._not_gathered(input, exc.message)
        except NotGathered as exc:
            return self._not_gathered(input, str(exc))
        activity.logger.info("evidence %s (%s): signal %s, %s", input.name, check, evidence.signal, evidence.summary)
        return evidence

    @staticmethod
    def _not_gathered(input: DiagnosisInput, error: str) -> Evidence:
        activity.logger.warning("evidence %s (%s) not gathered: %s", input.name, input.check, error)
        return Evidence(
            name=input.name, check=input.check, signal=False, summary=f"could not be gathered: {error}", error=error,
        )

    def _pods(self, target: TargetRef) -> Pods:
        """The target's pods now, and which pod and ReplicaSet names are (or were) its own.

        Deployment: pods whose controller is a ReplicaSet the Deployment controls (as
        kubectl's deploymentutil); StatefulSet / DaemonSet: pods they control; Node: every
        pod bound to it (``fieldSelector=spec.nodeName=<node>``). ``is_pod`` also accepts
        pods already gone: ``<replicaset>-<5>`` of the Deployment's ReplicaSets,
        ``<statefulset>-<ordinal>``, ``<daemonset>-<5>``, so their Events still count.

        Raises:
            KubeError: by reason (``NotFound`` when the target is gone).
        """
        if target.kind == "Node":
            pods = self.kube.list("Pod", field_selector=f"spec.nodeName={target.name}")
            return Pods(pods, {p["metadata"]["name"] for p in pods}, None, set())
        owner = self.kube.get(target.kind, target.name, target.namespace)
        uid = owner["metadata"].get("uid")
        selector = selector_string((owner.get("spec") or {}).get("selector"))
        namespace = target.namespace
        owner_uids = {uid}
        replica_sets: set[str] = set()
        if target.kind == "Deployment":
            owned = self.kube.owned_replica_sets(owner)
            owner_uids = {rs["metadata"].get("uid") for rs in owned}
            replica_sets = {rs["metadata"]["name"] for rs in owned}
            patterns = [rf"{re.escape(name)}-[a-z0-9]{{5}}" for name in sorted(replica_sets)]
        elif target.kind == "StatefulSet":
            patterns = [rf"{re.escape(target.name)}-(0|[1-9][0-9]*)"]
        else:
            patterns = [rf"{re.escape(target.name)}-[a-z0-9]{{5}}"]
        listed = self.kube.list("Pod", namespace, label_selector=selector)
        pods = [p for p in listed if (controller_of(p) or {}).get("uid") in owner_uids]
        pattern = re.compile("|".join(f"(?:{p})" for p in patterns)) if patterns else None
        return Pods(pods, {p["metadata"]["name"] for p in pods}, pattern, replica_sets)

    # ------------------------------------------------------------------ recent rollout

    @activity.defn
    def diagnose_recent_rollout(self, input: DiagnosisInput) -> Evidence:
        """Did the Deployment roll out within ``within`` (RecentRolloutEvidence)?

        The rollout time is the creationTimestamp of the ReplicaSet carrying the
        Deployment's current ``deployment.kubernetes.io/revision`` (read as
        ``KubeClient.describe``). signal True when that is at most ``within`` ago; False
        when older or unknown. value: ``revision``, ``rolled_out_at`` (RFC 3339),
        ``age_seconds``, ``within_seconds``.

        Raises:
            ApplicationError: ``KubeTemporaryError`` (retryable) from the API.
        """

        def gather(params: RecentRolloutEvidence) -> Evidence:
            state = self.kube.describe(input.target)
            if not state.exists:
                raise NotGathered(f"{input.target.key} not found")
            within = params.within
            value: dict[str, Any] = {
                "revision": state.revision,
                "rolled_out_at": rfc3339(state.last_rollout) if state.last_rollout else None,
                "age_seconds": None,
                "within_seconds": within.total_seconds(),
            }
            if state.last_rollout is None:
                return Evidence(
                    name=input.name, check=input.check, signal=False, value=value,
                    summary=f"revision {state.revision}: when it rolled out is unknown (no ReplicaSet of that revision)",
                )
            age = self.clock() - state.last_rollout
            value["age_seconds"] = max(0, int(age.total_seconds()))
            recent = age <= within
            return Evidence(
                name=input.name, check=input.check, signal=recent, value=value,
                summary=(
                    f"revision {state.revision} rolled out {_ago(age)} ago ("
                    + ("within " if recent else "not within ") + f"{format_duration(within)})"
                ),
            )

        return self._gather(input, RecentRolloutEvidence, gather)

    # ------------------------------------------------------------------ container status

    @activity.defn
    def diagnose_container_status(self, input: DiagnosisInput) -> Evidence:
        """Waiting and termination reasons of the target's containers (ContainerStatusEvidence).

        Reads each pod's ``status.containerStatuses`` (init containers too): a container is
        crashing when it waits in ``CrashLoopBackOff`` or its ``lastState.terminated`` (or
        ``state.terminated``) has a non-zero exit code. signal True when at least one
        container is crashing and none of the crashing ones was ``OOMKilled`` (a memory
        limit is not fixed by a rollback or a restart). value: ``pods``, ``restarts``
        (sum of restartCount), ``waiting`` {reason: containers}, ``reasons`` {termination
        reason: containers}, ``exit_codes`` {code: containers}, ``crashing`` (up to 10 of
        ``{pod, container, waiting, reason, exit_code, restarts}``).

        Raises:
            ApplicationError: ``KubeTemporaryError`` (retryable) from the API.
        """

        def gather(params: ContainerStatusEvidence) -> Evidence:
            pods = self._pods(input.target).pods
            waiting: Counter[str] = Counter()
            reasons: Counter[str] = Counter()
            exit_codes: Counter[str] = Counter()
            crashing: list[dict[str, Any]] = []
            restarts = 0
            for pod in pods:
                status = pod.get("status") or {}
                for cs in (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or []):
                    restarts += int(cs.get("restartCount") or 0)
                    state = cs.get("state") or {}
                    wait_reason = (state.get("waiting") or {}).get("reason")
                    if wait_reason:
                        waiting[wait_reason] += 1
                    terminated = state.get("terminated") or (cs.get("lastState") or {}).get("terminated") or {}
                    reason, code = terminated.get("reason"), terminated.get("exitCode")
                    if reason:
                        reasons[reason] += 1
                    if code is not None:
                        exit_codes[str(code)] += 1
                    if wait_reason == CRASH_LOOP_REASON or (code not in (None, 0)):
                        crashing.append({
                            "pod": pod["metadata"]["name"],
                            "container": cs.get("name"),
                            "waiting": wait_reason,
                            "reason": reason,
                            "exit_code": code,
                            "restarts": int(cs.get("restartCount") or 0),
                        })
            oom = [c for c in crashing if c["reason"] == OOM_KILLED]
            signal = bool(crashing) and not oom
            value = {
                "pods": len(pods),
                "restarts": restarts,
                "waiting": dict(waiting),
                "reasons": dict(reasons),
                "exit_codes": dict(exit_codes),
                "crashing": crashing[:LISTED],
            }
            if not pods:
                summary = "no pods"
            elif not crashing:
                summary = f"{_n(len(pods), 'pod')}, no container crashing ({_n(restarts, 'restart')})"
            else:
                by_reason = ", ".join(
                    f"{r} {n}" for r, n in Counter(c["reason"] or c["waiting"] or "unknown" for c in crashing).most_common()
                )
                summary = (
                    f"{_n(len(crashing), 'container')} crashing in {_n(len(pods), 'pod')} "
                    f"({by_reason}; {_n(restarts, 'restart')})"
                )
                if oom:
                    summary += "; OOMKilled points at a memory limit, not the code"
            return Evidence(name=input.name, check=input.check, signal=signal, value=value, summary=summary)

        return self._gather(input, ContainerStatusEvidence, gather)

    # ------------------------------------------------------------------ events

    @activity.defn
    def diagnose_kube_events(self, input: DiagnosisInput) -> Evidence:
        """v1 Events of the target and of its pods seen within ``since`` (KubeEventsEvidence).

        Lists Events with ``fieldSelector`` ``involvedObject.kind/name/namespace`` for the
        target and ``involvedObject.kind=Pod`` (plus ReplicaSet for a Deployment) for its
        pods, as ``kubectl describe`` and ``kubectl events --for`` do; an Event counts when
        its last sighting (``event_time``) is within ``since`` and its ``type`` matches.
        signal True when at least one counts. value: ``count`` (Events), ``occurrences``
        (sum of their ``count``), ``reasons`` {reason: occurrences}, ``events`` (up to 10,
        newest first: ``{type, reason, object, message, count, last_seen}``).

        Raises:
            ApplicationError: ``KubeTemporaryError`` (retryable) from the API.
        """

        def gather(params: KubeEventsEvidence) -> Evidence:
            target = input.target
            since = self.clock() - params.since
            found: list[dict[str, Any]] = []
            if target.kind == "Node":
                # the kubelet and node controller record Node events in the "default"
                # namespace; ask every namespace as kubectl describe node does
                found += self._events(None, f"involvedObject.kind=Node,involvedObject.name={target.name}")
            else:
                namespace = target.namespace
                found += self._events(
                    namespace,
                    f"involvedObject.kind={target.kind},involvedObject.name={target.name},"
                    f"involvedObject.namespace={namespace}",
                )
                pods = self._pods(target)
                for ev in self._events(namespace, f"involvedObject.kind=Pod,involvedObject.namespace={namespace}"):
                    if pods.is_pod((ev.get("involvedObject") or {}).get("name", "")):
                        found.append(ev)
                if pods.replica_sets:
                    selector = f"involvedObject.kind=ReplicaSet,involvedObject.namespace={namespace}"
                    for ev in self._events(namespace, selector):
                        if (ev.get("involvedObject") or {}).get("name") in pods.replica_sets:
                            found.append(ev)
            counted = []
            for ev in found:
                seen = event_time(ev)
                if seen is None or seen < since:
                    continue
                if params.type != "any" and ev.get("type") != params.type:
                    continue
                counted.append((seen, ev))
            counted.sort(key=lambda pair: pair[0], reverse=True)
            reasons: Counter[str] = Counter()
            for _, ev in counted:
                reasons[ev.get("reason") or ""] += int(ev.get("count") or 1)
            listed = [
                {
                    "type": ev.get("type"),
                    "reason": ev.get("reason"),
                    "object": f"{(ev.get('involvedObject') or {}).get('kind', '').lower()}/"
                              f"{(ev.get('involvedObject') or {}).get('name', '')}",
                    "message": ev.get("message") or ev.get("note") or "",
                    "count": int(ev.get("count") or 1),
                    "last_seen": rfc3339(seen),
                }
                for seen, ev in counted[:LISTED]
            ]
            kind = "" if params.type == "any" else f"{params.type} "
            window = format_duration(params.since)
            if counted:
                top = ", ".join(f"{r} x{n}" for r, n in reasons.most_common(3))
                summary = f"{_n(len(counted), kind + 'event')} in the last {window}: {top}"
            else:
                summary = f"no {kind}events in the last {window}"
            value = {
                "count": len(counted),
                "occurrences": sum(reasons.values()),
                "reasons": dict(reasons),
                "events": listed,
                "since_seconds": params.since.total_seconds(),
            }
            return Evidence(name=input.name, check=input.check, signal=bool(counted), value=value, summary=summary)

        return self._gather(input, KubeEventsEvidence, gather)

    def _events(self, namespace: str | None, field_selector: str) -> list[dict[str, Any]]:
        """v1 Events in ``namespace`` (None: every namespace) matching ``field_selector``."""
        return self.kube.list("Event", namespace, field_selector=field_selector)

    # ------------------------------------------------------------------ node conditions

    @activity.defn
    def diagnose_node_conditions(self, input: DiagnosisInput) -> Evidence:
        """Conditions of the target Node, or of the nodes the target's pods run on
        (NodeConditionsEvidence).

        signal True when every such node is ``Ready=True`` and none has ``MemoryPressure``,
        ``DiskPressure``, ``PIDPressure`` or ``NetworkUnavailable`` ``True`` (the node is not
        the cause); False otherwise, and False when there is no node to look at (no pod
        scheduled). value: ``nodes`` {name: {condition: status}}, ``not_ready`` [names],
        ``pressure`` {name: [conditions]}, ``missing`` [nodes that no longer exist].

        Raises:
            ApplicationError: ``KubeTemporaryError`` (retryable) from the API.
        """

        def gather(params: NodeConditionsEvidence) -> Evidence:
            target = input.target
            missing: list[str] = []
            if target.kind == "Node":
                nodes = [self.kube.get("Node", target.name)]
            else:
                pods = self._pods(target).pods
                names = sorted({(p.get("spec") or {}).get("nodeName") for p in pods} - {None, ""})
                nodes = []
                for name in names:
                    node = self.kube.get_or_none("Node", name)
                    if node is None:
                        missing.append(name)
                    else:
                        nodes.append(node)
            table: dict[str, dict[str, str]] = {}
            not_ready: list[str] = []
            pressure: dict[str, list[str]] = {}
            details: list[str] = []
            for node in nodes:
                name = node["metadata"]["name"]
                conditions = {c.get("type"): c for c in (node.get("status") or {}).get("conditions") or []}
                table[name] = {t: str(c.get("status")) for t, c in conditions.items()}
                ready = conditions.get("Ready") or {}
                if ready.get("status") != "True":
                    not_ready.append(name)
                    why = " - ".join(x for x in (ready.get("reason"), ready.get("message")) if x)
                    details.append(f"{name} Ready={ready.get('status', 'missing')}" + (f" ({why})" if why else ""))
                bad = [t for t in PRESSURE_CONDITIONS if (conditions.get(t) or {}).get("status") == "True"]
                if bad:
                    pressure[name] = bad
                    details.append(f"{name} {', '.join(bad)}")
            not_ready += missing
            details += [f"{m} no longer exists" for m in missing]
            signal = bool(table) and not not_ready and not pressure
            if not table and not missing:
                summary = "no node to examine: no pod of the target is scheduled"
            elif signal:
                summary = f"{len(table)} nodes Ready, no pressure: " + ", ".join(sorted(table))
                if len(table) == 1:
                    summary = f"node {next(iter(table))} Ready, no pressure"
            else:
                summary = "; ".join(details)
            value = {"nodes": table, "not_ready": not_ready, "pressure": pressure, "missing": missing}
            return Evidence(name=input.name, check=input.check, signal=signal, value=value, summary=summary)

        return self._gather(input, NodeConditionsEvidence, gather)

    # ------------------------------------------------------------------ promql

    @activity.defn
    def diagnose_promql(self, input: DiagnosisInput) -> Evidence:
        """A Prometheus instant query (``GET /api/v1/query``, as the ``promql`` health check).

        signal True when there is at least one sample and every sample satisfies
        ``<op> threshold``. value: ``samples`` [{metric, value}], ``op``, ``threshold``.
        A query Prometheus rejects, a result that is not a vector or scalar, or no
        Prometheus configured: ``error`` set.

        Raises:
            ApplicationError: ``PrometheusUnavailable`` (retryable) when Prometheus is
                unreachable or answers 5xx.
        """

        def gather(params: PromQLEvidence) -> Evidence:
            if self.prometheus is None:
                raise NotGathered(NOT_CONFIGURED)
            check = PromQLCheck(query=params.query, op=params.op, threshold=params.threshold, on_empty="fail")
            try:
                verdict = self.prometheus.evaluate(check)
            except QueryRejected as exc:
                raise NotGathered(str(exc)) from exc
            summary = verdict.message
            if not verdict.samples:
                summary = f"query {params.query!r} returned no samples"
            return Evidence(
                name=input.name, check=input.check, signal=verdict.passed, value=verdict.observed, summary=summary,
            )

        return self._gather(input, PromQLEvidence, gather)

    # ------------------------------------------------------------------ assess

    @activity.defn
    def assess(self, input: AssessInput) -> Assessment:
        """Confidence from the evidence, and each step's CEL ``when`` (pure: no I/O).

        See ``assess_evidence``.
        """
        result = assess_evidence(input)
        activity.logger.info("assessment: %s", result.reason)
        return result


# --------------------------------------------------------------------------- assessment


def cel_context(evidence: list[Evidence], alert: AlertRef | None) -> dict[str, Any]:
    """The names a playbook's CEL sees: ``evidence`` (name -> {signal, value, summary,
    error}) and ``alert`` ({labels, annotations, status, fingerprint})."""
    return {
        "evidence": {
            e.name: {"signal": e.signal, "value": e.value, "summary": e.summary, "error": e.error} for e in evidence
        },
        "alert": {
            "labels": dict(alert.labels) if alert else {},
            "annotations": dict(alert.annotations) if alert else {},
            "status": alert.status if alert else "",
            "fingerprint": alert.fingerprint if alert else "",
        },
    }


def _number(value: float) -> str:
    return f"{value:g}"


def _weights(weights: dict[str, float], evidence: dict[str, Evidence]) -> tuple[float, str]:
    total = sum(weights.values())
    terms, gained, absent = [], 0.0, []
    for name, weight in weights.items():
        found = evidence.get(name)
        signal = bool(found and found.signal and not found.error)
        gained += weight if signal else 0.0
        terms.append(f"{name} {_number(weight)}·{int(signal)}")
        if found is None or found.error:
            absent.append(name)
    if total <= 0:
        return 0.0, f"confidence 0 (fail closed): the weights sum to 0 ({' + '.join(terms)})"
    confidence = gained / total
    reason = f"confidence {confidence:.2f} = ({' + '.join(terms)}) / {_number(total)}"
    if absent:
        reason += f"; not gathered, counted as 0: {', '.join(absent)}"
    return confidence, reason


def _expression(text: str, context: dict[str, Any]) -> tuple[float, str]:
    try:
        value = cel.evaluate(text, context)
    except ValueError as exc:  # CELError, or a syntax error the loader should have caught
        return 0.0, f"confidence 0 (fail closed): expression {text!r} failed: {exc}"
    if not cel.is_number(value):
        return 0.0, f"confidence 0 (fail closed): expression {text!r} = {cel.shown(value)}, not a number in [0, 1]"
    if not 0 <= value <= 1:
        return 0.0, f"confidence 0 (fail closed): expression {text!r} = {cel.shown(value)}, outside [0, 1]"
    return float(value), f"expression {text!r} = {_number(float(value))}"


def _condition(text: str, context: dict[str, Any]) -> tuple[bool, str]:
    try:
        value = cel.evaluate(text, context)
    except ValueError as exc:
        return False, f"when {text!r} failed: {exc}; the step is skipped (fail closed)"
    if not isinstance(value, bool):
        return False, f"when {text!r} = {cel.shown(value)}, not a bool; the step is skipped (fail closed)"
    return value, f"when {text!r} = {cel.shown(value)}"


def assess_evidence(input: AssessInput) -> Assessment:
    """Confidence in [0, 1] and the value of each step's CEL ``when``.

    Confidence (``input.confidence``, a remediator.domain.playbook.Confidence as a dict):

    * None: 1.0 (the playbook does not weigh evidence);
    * ``weights``: sum of the weights of evidence whose signal is true (and that was
      gathered) / sum of all weights;
    * ``expression``: the CEL expression's value, which must be a number in [0, 1].

    Anything else fails closed: a failing expression, a result that is not a number or is
    outside [0, 1], weights summing to 0, an invalid rule - confidence 0, so a step with an
    approval policy asks people. ``reason`` says how the number came about, e.g.
    ``confidence 0.50 = (recent_rollout 0.5·0 + container_status 0.3·1 + kube_events 0.2·1) / 1``.

    Conditions: for each entry of ``input.conditions``, None stays None (no CEL ``when``);
    a CEL expression must yield a bool; an error or another type is False (the step is
    skipped), with the reason in ``condition_reasons`` (empty for None).
    """
    context = cel_context(input.evidence, input.alert)
    if input.confidence is None:
        confidence, reason = 1.0, "confidence 1 (the playbook does not weigh evidence)"
    else:
        try:
            rule = Confidence.model_validate(input.confidence)
        except ValidationError as exc:
            rule = None
            confidence, reason = 0.0, f"confidence 0 (fail closed): invalid confidence rule: {exc.errors()[0]['msg']}"
        if rule is not None and rule.weights is not None:
            confidence, reason = _weights(rule.weights, {e.name: e for e in input.evidence})
        elif rule is not None and rule.expression is not None:
            confidence, reason = _expression(rule.expression, context)
    values: list[bool | None] = []
    reasons: list[str] = []
    for text in input.conditions:
        if text is None:
            values.append(None)
            reasons.append("")
            continue
        value, why = _condition(text, context)
        values.append(value)
        reasons.append(why)
    return Assessment(confidence=confidence, reason=reason, conditions=values, condition_reasons=reasons)
