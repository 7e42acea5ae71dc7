"""The emulated control plane: kube-controller-manager, kube-scheduler and the kubelets.

``Controllers.reconcile()`` runs one pass of every loop, under the store lock; the
``Emulator`` calls it after each write and from a background thread every tick. One pass
does, in this order:

* nodes: status (Ready and the usual pressure conditions, taints), following node faults;
* deployments (pkg/controller/deployment): a ReplicaSet per pod template, named
  ``<deployment>-<pod-template-hash>``, revisions in ``deployment.kubernetes.io/revision``
  (an old ReplicaSet whose template comes back, as after ``kubectl rollout undo``, is reused
  and renumbered, its old number going to ``revision-history``), RollingUpdate within
  maxSurge/maxUnavailable or Recreate (which waits until no old pod runs), revisionHistoryLimit,
  and status with the Available and Progressing conditions (NewReplicaSetCreated,
  ReplicaSetUpdated, NewReplicaSetAvailable, ProgressDeadlineExceeded). As syncDeployment, a
  paused Deployment, or one whose replicas changed (a scaling event), only goes through
  ``sync``: its ReplicaSets are scaled (proportionally across them mid-rollout, sync.go
  ``scale``) and no new one is created, so a paused Deployment still scales;
* replicasets (terminating pods are not counted, so a replacement is created at once),
  statefulsets (stateful_set_control.go: ordinal pods, OrderedReady waiting for a terminating
  pod before recreating it under its name, rolling update from the highest ordinal down to
  ``rollingUpdate.partition``, a pod below the partition recreated at the current revision,
  template history in ControllerRevisions) and daemonsets (one pod per node, tolerating
  unschedulable nodes, waiting for a terminating pod, rolling update within maxUnavailable,
  ControllerRevisions);
* the scheduler: round-robin onto Ready, schedulable nodes whose labels match nodeSelector;
* the kubelets: Pending -> Running, Ready after ``pod_ready_seconds``, and the faults
  (CrashLoopBackOff with growing restartCount and BackOff events; readiness that never
  comes for a stalled rollout; NotReady pods on a NotReady node); and graceful termination
  (SyncTerminatingPod): a pod with ``deletionTimestamp`` gets SIGTERM (a ``Killing`` event);
  the emulated containers exit ``termination_seconds`` later, or at the end of the grace
  period if that is sooner; the kubelet then posts the terminal phase (Succeeded, or Failed if
  a container did not exit 0) and deletes the pod. Until its containers exit the pod keeps
  the status the kubelet last reported (Running, and Ready if it was: without a readiness
  probe a running container stays ready). A node whose kubelet stopped posting status
  (NodeStatusUnknown) terminates nothing: its pods stay terminating;
* disruption: PodDisruptionBudget status (pkg/controller/disruption/disruption.go): the
  expected count from the controllers' scale (getExpectedScale: unmanaged pods count for
  nothing, a controller that cannot be found or has no scale subresource is a sync error
  answered by ``failSafe``), no disruption allowed when expectedCount <= 0 (so none for a
  policy/v1 budget with neither minAvailable nor maxUnavailable), terminating pods never
  healthy.

Deleting a pod (``delete_pod``) is graceful as the apiserver makes it for every client: the
controllers, the garbage collector, a DELETE, an eviction.

Events are recorded as v1 Events like the real components (ScalingReplicaSet,
SuccessfulCreate, SuccessfulDelete, Scheduled, BackOff, Killing, UnmanagedPods,
CalculateExpectedPodCountFailed), repeated ones counted.
"""

from __future__ import annotations

import copy
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from remediator.sim.kube.defaults import apply_defaults
from remediator.sim.kube.kinds import BY_KIND, Kind
from remediator.sim.kube.names import random_suffix, template_hash
from remediator.sim.kube.selectors import matches_label_selector, parse_label_selector
from remediator.sim.kube.store import Store, now_iso, parse_iso

NAMESPACE, NODE, POD, EVENT = (BY_KIND[k] for k in ("Namespace", "Node", "Pod", "Event"))
DEPLOYMENT, REPLICASET, STATEFULSET, DAEMONSET, PDB, CONTROLLER_REVISION = (
    BY_KIND[k] for k in ("Deployment", "ReplicaSet", "StatefulSet", "DaemonSet", "PodDisruptionBudget",
                         "ControllerRevision"))

REVISION = "deployment.kubernetes.io/revision"
REVISION_HISTORY = "deployment.kubernetes.io/revision-history"
DESIRED_REPLICAS = "deployment.kubernetes.io/desired-replicas"
MAX_REPLICAS = "deployment.kubernetes.io/max-replicas"
POD_TEMPLATE_HASH = "pod-template-hash"
CONTROLLER_REVISION_HASH = "controller-revision-hash"
REVISION_HASH_LABEL = "controller.kubernetes.io/hash"
"""The label pkg/controller/history puts on a StatefulSet's ControllerRevisions."""
CRASH_RESTART_SECONDS = 1.0
DELETION_TIMEOUT_SECONDS = 120
"""pkg/controller/disruption DeletionTimeout: how long an eviction's disruptedPods entry counts."""
CRASH_EXIT_CODES = {"Error": 1, "OOMKilled": 137}
"""Exit code the kubelet reports with each termination reason (OOMKilled: SIGKILL, 128 + 9)."""


@dataclass
class ApiErrorFault:
    """The next ``count`` requests with ``method`` whose path matches ``path_regex`` fail."""

    method: str
    path_regex: str
    status: int
    count: int


@dataclass
class Faults:
    """Injected faults; see the ``Emulator.fault_*`` methods for their meaning."""

    crashloop_images: set[str] = field(default_factory=set)
    crashloop_pod_uids: set[str] = field(default_factory=set)
    crash_image_reasons: dict[str, str] = field(default_factory=dict)
    crash_pod_reasons: dict[str, str] = field(default_factory=dict)
    """Termination reason of a crash-looping image / pod UID when not ``Error`` (e.g. ``OOMKilled``)."""
    stalled_deployments: set[tuple[str, str]] = field(default_factory=set)
    stalled_replicaset_uids: set[str] = field(default_factory=set)
    nodes_not_ready: dict[str, str] = field(default_factory=dict)
    api_errors: list[ApiErrorFault] = field(default_factory=list)

    def clear(self) -> None:
        self.crashloop_images.clear()
        self.crashloop_pod_uids.clear()
        self.crash_image_reasons.clear()
        self.crash_pod_reasons.clear()
        self.stalled_deployments.clear()
        self.stalled_replicaset_uids.clear()
        self.nodes_not_ready.clear()
        self.api_errors.clear()


# --------------------------------------------------------------------------- helpers


def owner_reference(obj: dict[str, Any]) -> dict[str, Any]:
    """A controller ownerReference to ``obj``, as controllers set it."""
    return {
        "apiVersion": obj["apiVersion"],
        "kind": obj["kind"],
        "name": obj["metadata"]["name"],
        "uid": obj["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def controller_uid(obj: dict[str, Any]) -> str | None:
    for ref in obj["metadata"].get("ownerReferences") or []:
        if ref.get("controller"):
            return ref.get("uid")
    return None


def controller_of(obj: dict[str, Any]) -> dict[str, Any] | None:
    for ref in obj["metadata"].get("ownerReferences") or []:
        if ref.get("controller"):
            return ref
    return None


def pod_active(pod: dict[str, Any]) -> bool:
    """controller.IsPodActive: not finished and not being deleted."""
    return not pod_terminal(pod) and not pod_terminating(pod)


def pod_terminating(pod: dict[str, Any]) -> bool:
    """The pod has a ``deletionTimestamp``: it is being deleted."""
    return bool(pod["metadata"].get("deletionTimestamp"))


def pod_terminal(pod: dict[str, Any]) -> bool:
    """Phase Succeeded or Failed."""
    return (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")


def pod_ready(pod: dict[str, Any]) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])


def node_ready(node: dict[str, Any]) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (node.get("status") or {}).get("conditions") or [])


def scaled_value(value: Any, total: int, round_up: bool) -> int:
    """intstr.GetScaledValueFromIntOrPercent: an int, or "N%" of ``total``."""
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.endswith("%"):
        raw = int(value[:-1]) * total / 100
        return math.ceil(raw) if round_up else math.floor(raw)
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return 0


def _template_without_hash(template: dict[str, Any]) -> dict[str, Any]:
    t = copy.deepcopy(template)
    labels = (t.get("metadata") or {}).get("labels")
    if labels:
        labels.pop(POD_TEMPLATE_HASH, None)
    return t


def revision_of(obj: dict[str, Any]) -> int:
    try:
        return int((obj["metadata"].get("annotations") or {}).get(REVISION, "0"))
    except ValueError:
        return 0


def _condition(conditions: list[dict[str, Any]], ctype: str) -> dict[str, Any] | None:
    return next((c for c in conditions if c.get("type") == ctype), None)


def set_status_condition(conditions: list[dict[str, Any]], ctype: str, status: str, reason: str, message: str,
                         observed_generation: int) -> None:
    """In place: apimachinery meta.SetStatusCondition (lastTransitionTime moves only when the
    status changes)."""
    cur = _condition(conditions, ctype)
    cond = {"type": ctype, "status": status, "reason": reason, "message": message,
            "observedGeneration": observed_generation,
            "lastTransitionTime": cur["lastTransitionTime"] if cur and cur["status"] == status else now_iso()}
    if cur is None:
        conditions.append(cond)
    else:
        conditions[conditions.index(cur)] = cond


def update_disruption_allowed_condition(status: dict[str, Any]) -> None:
    """In place: component-helpers poddisruptionbudget.UpdateDisruptionAllowedCondition."""
    conditions = status.setdefault("conditions", [])
    if status.get("disruptionsAllowed", 0) > 0:
        set_status_condition(conditions, "DisruptionAllowed", "True", "SufficientPods", "",
                             status.get("observedGeneration", 0))
    else:
        set_status_condition(conditions, "DisruptionAllowed", "False", "InsufficientPods", "",
                             status.get("observedGeneration", 0))


def _ordinal(set_name: str, pod: dict[str, Any]) -> int:
    """statefulset getOrdinal: the pod name's ``<set>-<n>`` suffix, -1 if it has none."""
    prefix, _, suffix = pod["metadata"]["name"].rpartition("-")
    return int(suffix) if prefix == set_name and suffix.isdigit() else -1


def _running_and_ready(pod: dict[str, Any]) -> bool:
    """statefulset isRunningAndReady."""
    return (pod.get("status") or {}).get("phase") == "Running" and pod_ready(pod)


def _revision_template(revision: dict[str, Any]) -> dict[str, Any]:
    """The pod template a ControllerRevision records (its ``data`` patch)."""
    template = copy.deepcopy(revision["data"]["spec"]["template"])
    template.pop("$patch", None)
    return template


def _go_label_selector(selector: dict[str, Any] | None) -> str:
    """A *metav1.LabelSelector as Go's %v prints it in events."""
    if selector is None:
        return "nil"
    labels = ",".join(f"{k}: {v}" for k, v in sorted((selector.get("matchLabels") or {}).items()))
    exprs = ",".join(
        "LabelSelectorRequirement{{Key:{},Operator:{},Values:[]string{{{}}},}}".format(
            e.get("key"), e.get("operator"), ",".join(e.get("values") or []))
        for e in selector.get("matchExpressions") or [])
    return (f"&LabelSelector{{MatchLabels:map[string]string{{{labels + ',' if labels else ''}}},"
            f"MatchExpressions:[]LabelSelectorRequirement{{{exprs + ',' if exprs else ''}}},}}")


class _SyncError(Exception):
    """The disruption controller could not compute a budget's expected pod count."""


# --------------------------------------------------------------------------- controllers


class Controllers:
    """One reconcile pass over the whole cluster (see the module docstring)."""

    def __init__(self, store: Store, faults: Faults, pod_ready_seconds: float,
                 termination_seconds: float = 0.5) -> None:
        self.store = store
        self.faults = faults
        self.pod_ready_seconds = pod_ready_seconds
        self.termination_seconds = termination_seconds
        self.instant = False  # seeding: pods are Ready at once, deleted pods gone at once
        self._pod_seen: dict[str, float] = {}
        self._terminating_since: dict[str, float] = {}  # pod UID -> when its deletion began
        self._killed: set[str] = set()  # terminating pods whose containers got SIGTERM
        self._stopped: set[str] = set()  # terminating pods whose terminal status was posted
        self._crash_since: dict[tuple[str, str], float] = {}
        self._rr = 0
        self._lock = threading.RLock()

    # ------------------------------------------------------------------ plumbing

    def _write(self, kind: Kind, obj: dict[str, Any]) -> dict[str, Any]:
        return self.store.put(kind, obj)

    def create_pod(self, pod: dict[str, Any]) -> dict[str, Any]:
        apply_defaults(POD, pod)
        created = self.store.create(POD, pod)
        self._pod_seen[created["metadata"]["uid"]] = -1e9 if self.instant else time.monotonic()
        return created

    def delete_pod(self, pod: dict[str, Any], grace_seconds: int | None = None, *,
                   dry_run: bool = False) -> dict[str, Any]:
        """Delete a pod as the apiserver does it for any client (a DELETE, an eviction, the
        controllers, the garbage collector): pkg/registry/core/pod/strategy.go
        CheckGracefulDelete and k8s.io/apiserver rest.BeforeDelete.

        The grace period is ``grace_seconds`` (the request's ``gracePeriodSeconds``), else the
        pod's ``spec.terminationGracePeriodSeconds``; it is 0 for a pod never scheduled or
        already finished, and 1 when negative. With a grace period the pod gets
        ``metadata.deletionTimestamp`` (now + grace period) and ``deletionGracePeriodSeconds``
        and stays, terminating, until its kubelet has stopped it (``_terminate``); with 0 the
        deletion is written and the pod removed at once. A pod already terminating keeps its
        deletion, unless ``grace_seconds`` is shorter than what is left (0: removed at once).
        Returns the pod as a DELETE answers it: the terminating pod, or the removed one.
        ``dry_run``: nothing is written; the answer is the pod as the deletion would mark it
        (``deletionTimestamp``, ``deletionGracePeriodSeconds``, the stored resourceVersion),
        as genericregistry Store.Delete answers a dry run.
        """
        meta = pod["metadata"]
        current = self.store.get(POD, meta["namespace"], meta["name"])
        if current is None or current["metadata"]["uid"] != meta["uid"]:
            return copy.deepcopy(pod)
        if grace_seconds is not None and grace_seconds < 0:
            grace_seconds = 1
        if self.instant and not dry_run:
            return self._remove_pod(current)
        cur = current["metadata"]
        if cur.get("deletionTimestamp"):
            period = cur.get("deletionGracePeriodSeconds")
            if not period:
                return copy.deepcopy(current) if dry_run else self._remove_pod(current)
            if grace_seconds is None or grace_seconds >= period:
                return copy.deepcopy(current)  # graceful deletion pending: nothing changes
            # Only a shorter grace period may be given; the deadline moves with it.
            return self._mark_deleted(current, grace_seconds,
                                      parse_iso(cur["deletionTimestamp"]) - period + grace_seconds, dry_run)
        spec = current.get("spec") or {}
        period = grace_seconds if grace_seconds is not None else spec.get("terminationGracePeriodSeconds", 0)
        if not spec.get("nodeName") or pod_terminal(current):
            period = 0
        if period < 0:
            period = 1
        return self._mark_deleted(current, period, time.time() + period, dry_run)

    def _mark_deleted(self, pod: dict[str, Any], period: int, at: float, dry_run: bool = False) -> dict[str, Any]:
        new = copy.deepcopy(pod)
        new["metadata"]["deletionTimestamp"] = now_iso(at)
        new["metadata"]["deletionGracePeriodSeconds"] = period
        if dry_run:
            return new
        written = self._write(POD, new)
        if period == 0:
            # genericregistry Store.Delete: a graceless deletion is written, then the object removed.
            return self._remove_pod(written)
        self._terminating_since.setdefault(pod["metadata"]["uid"], time.monotonic())
        return copy.deepcopy(written)

    def _remove_pod(self, pod: dict[str, Any]) -> dict[str, Any]:
        """Remove a pod from the store at once; returns it as removed."""
        meta = pod["metadata"]
        removed = copy.deepcopy(pod)
        current = self.store.get(POD, meta["namespace"], meta["name"])
        if current is not None and current["metadata"]["uid"] == meta["uid"]:
            removed = self.store.delete(POD, meta["namespace"], meta["name"])
        for seen in (self._pod_seen, self._terminating_since):
            seen.pop(meta["uid"], None)
        self._killed.discard(meta["uid"])
        self._stopped.discard(meta["uid"])
        return removed

    def event(self, obj: dict[str, Any], reason: str, message: str, *, type_: str = "Normal",
              component: str = "controllermanager", host: str | None = None) -> None:
        """Record a v1 Event about ``obj``; a repeat of the same reason and message is counted."""
        meta = obj["metadata"]
        ns = meta.get("namespace") or "default"
        for ev in self.store.list(EVENT, ns):
            io = ev.get("involvedObject") or {}
            if io.get("uid") == meta.get("uid") and ev.get("reason") == reason and ev.get("message") == message:
                updated = copy.deepcopy(ev)
                updated["count"] = ev.get("count", 1) + 1
                updated["lastTimestamp"] = now_iso()
                self._write(EVENT, updated)
                return
        source: dict[str, Any] = {"component": component}
        if host:
            source["host"] = host
        self.store.create(EVENT, {
            "metadata": {"name": f"{meta['name']}.{random_suffix(16)}", "namespace": ns},
            "involvedObject": {
                "kind": obj["kind"], "namespace": meta.get("namespace", ""), "name": meta["name"],
                "uid": meta["uid"], "apiVersion": obj["apiVersion"],
                "resourceVersion": meta.get("resourceVersion", ""),
            },
            "reason": reason,
            "message": message,
            "source": source,
            "firstTimestamp": now_iso(),
            "lastTimestamp": now_iso(),
            "count": 1,
            "type": type_,
            "eventTime": None,
            "reportingComponent": component if component != "controllermanager" else "",
            "reportingInstance": host or "",
        })

    def terminate_namespace(self, ns: dict[str, Any]) -> dict[str, Any]:
        """DELETE of a Namespace, as the API server and the namespace controller do it
        (pkg/controller/namespace/deletion): ``deletionTimestamp`` and ``status.phase:
        Terminating`` now; every object in it deleted, pods gracefully; the namespace removed
        once no pod is left (``_namespaces``). Until then NamespaceLifecycle admission refuses
        any create in it (``namespace_terminating``). Returns the namespace as it is now."""
        current = copy.deepcopy(self.store.must_get(NAMESPACE, None, ns["metadata"]["name"]))
        if not current["metadata"].get("deletionTimestamp"):
            current["metadata"]["deletionTimestamp"] = now_iso()
            current.setdefault("status", {})["phase"] = "Terminating"
            self.store.put(NAMESPACE, current)
        self._empty_namespace(current["metadata"]["name"])
        return copy.deepcopy(self.store.must_get(NAMESPACE, None, current["metadata"]["name"]))

    def namespace_terminating(self, namespace: str | None) -> bool:
        """Whether ``namespace`` is being deleted (NamespaceLifecycle admission refuses creates)."""
        if not namespace:
            return False
        ns = self.store.get(NAMESPACE, None, namespace)
        return bool(ns and ns["metadata"].get("deletionTimestamp"))

    def _empty_namespace(self, name: str) -> None:
        for kind in BY_KIND.values():
            if not kind.namespaced:
                continue
            for obj in self.store.list(kind, name):
                if kind is POD:
                    if not obj["metadata"].get("deletionTimestamp"):
                        self.delete_pod(obj, None)
                elif self.store.get(kind, name, obj["metadata"]["name"]) is not None:
                    self.store.delete(kind, name, obj["metadata"]["name"])

    def _namespaces(self) -> None:
        """The namespace controller: finish what a namespace deletion started."""
        for ns in self.store.list(NAMESPACE):
            if not ns["metadata"].get("deletionTimestamp"):
                continue
            name = ns["metadata"]["name"]
            self._empty_namespace(name)
            if not self.store.list(POD, name):
                self.store.delete(NAMESPACE, None, name)

    def reconcile(self) -> None:
        """One pass of every loop; safe to call at any time and repeatedly."""
        with self.store.lock, self._lock:
            self._nodes()
            for d in self.store.list(DEPLOYMENT):
                self._deployment(d)
            for rs in self.store.list(REPLICASET):
                self._replicaset(rs)
            for sts in self.store.list(STATEFULSET):
                self._statefulset(sts)
            for ds in self.store.list(DAEMONSET):
                self._daemonset(ds)
            self._schedule()
            self._kubelet()
            for rs in self.store.list(REPLICASET):
                self._replicaset_status(rs)
            for d in self.store.list(DEPLOYMENT):
                self._deployment_status(d)
            for sts in self.store.list(STATEFULSET):
                self._statefulset_status(sts)
            for ds in self.store.list(DAEMONSET):
                self._daemonset_status(ds)
            for pdb in self.store.list(PDB):
                self.pdb_status(pdb)
            self._forget_gone_pods()
            self._namespaces()

    def settle(self, passes: int = 30) -> None:
        """Reconcile until nothing changes (bounded), e.g. after seeding."""
        for _ in range(passes):
            before = self.store.resource_version
            self.reconcile()
            if self.store.resource_version == before:
                return

    # ------------------------------------------------------------------ nodes

    def _nodes(self) -> None:
        for node in self.store.list(NODE):
            new = copy.deepcopy(node)
            name = node["metadata"]["name"]
            status = new.setdefault("status", {})
            conditions = status.setdefault("conditions", [])
            reason = self.faults.nodes_not_ready.get(name)
            ready = _condition(conditions, "Ready")
            now = now_iso()
            if reason is None:
                want = ("True", "KubeletReady", "kubelet is posting ready status")
            elif reason == "NodeStatusUnknown":
                want = ("Unknown", reason, "Kubelet stopped posting node status.")
            else:
                want = ("False", reason, "container runtime network not ready: NetworkReady=false "
                        "reason:NetworkPluginNotReady message:Network plugin returns error: cni plugin not initialized")
            if ready is None or (ready["status"], ready["reason"], ready["message"]) != want:
                if ready is None:
                    ready = {"type": "Ready", "lastTransitionTime": now}
                    conditions.append(ready)
                if ready.get("status") != want[0]:
                    ready["lastTransitionTime"] = now
                ready.update(status=want[0], reason=want[1], message=want[2], lastHeartbeatTime=now)
            taints = [t for t in new["spec"].get("taints") or []
                      if t.get("key") not in ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable",
                                              "node.kubernetes.io/unschedulable")]
            if reason is not None:
                key = "node.kubernetes.io/unreachable" if want[0] == "Unknown" else "node.kubernetes.io/not-ready"
                old = {t.get("key"): t for t in node["spec"].get("taints") or []}
                taints.append(old.get(key) or {"key": key, "effect": "NoSchedule", "timeAdded": now})
            if new["spec"].get("unschedulable"):
                old = {t.get("key"): t for t in node["spec"].get("taints") or []}
                taints.append(old.get("node.kubernetes.io/unschedulable") or
                              {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule", "timeAdded": now})
            if taints:
                new["spec"]["taints"] = taints
            else:
                new["spec"].pop("taints", None)
            if new != node:
                self._write(NODE, new)

    def schedulable_nodes(self) -> list[dict[str, Any]]:
        return [n for n in self.store.list(NODE) if node_ready(n) and not n["spec"].get("unschedulable")]

    # ------------------------------------------------------------------ deployments

    def _owned_replicasets(self, d: dict[str, Any]) -> list[dict[str, Any]]:
        uid = d["metadata"]["uid"]
        return [rs for rs in self.store.list(REPLICASET, d["metadata"]["namespace"])
                if controller_uid(rs) == uid]

    def _scale_rs(self, d: dict[str, Any], rs: dict[str, Any], replicas: int, *,
                  operation: str | None = None) -> dict[str, Any]:
        """deployment controller scaleReplicaSetAndRecordEvent (``operation`` None: only when the
        size changes) or scaleReplicaSet (``operation`` "up"/"down"/"": also when the
        desired-replicas/max-replicas annotations are out of date)."""
        current = rs["spec"].get("replicas", 0)
        if current == replicas and operation is None:
            return rs
        desired = d["spec"].get("replicas", 1)
        want = {DESIRED_REPLICAS: str(desired), MAX_REPLICAS: str(desired + self._max_surge(d))}
        annotations = rs["metadata"].get("annotations") or {}
        if current == replicas and all(annotations.get(k) == v for k, v in want.items()):
            return rs
        new = copy.deepcopy(rs)
        new["spec"]["replicas"] = replicas
        new["metadata"].setdefault("annotations", {}).update(want)
        rs = self._write(REPLICASET, new)
        if current != replicas:
            direction = operation or ("up" if replicas > current else "down")
            self.event(d, "ScalingReplicaSet",
                       f"Scaled {direction} replica set {rs['metadata']['name']} from {current} to {replicas}",
                       component="deployment-controller")
        return rs

    def _deployment(self, d: dict[str, Any]) -> None:
        """deployment_controller.go syncDeployment, one pass."""
        spec = d["spec"]
        ns, name = d["metadata"]["namespace"], d["metadata"]["name"]
        rss = self._owned_replicasets(d)
        template = spec["template"]
        new_rs = next((rs for rs in rss if _template_without_hash(rs["spec"]["template"]) == template), None)
        max_rev = max((revision_of(rs) for rs in rss), default=0)
        desired = spec.get("replicas", 1)
        # A paused Deployment, or a scaling event, goes through sync(): scale, never roll out.
        sync_only = bool(spec.get("paused")) or self._is_scaling_event(d, rss)
        if new_rs is None and not sync_only:
            collision = (d.get("status") or {}).get("collisionCount", 0)
            pod_hash = template_hash(template, collision)
            rs_template = copy.deepcopy(template)
            rs_template.setdefault("metadata", {}).setdefault("labels", {})[POD_TEMPLATE_HASH] = pod_hash
            selector = copy.deepcopy(spec["selector"])
            selector.setdefault("matchLabels", {})[POD_TEMPLATE_HASH] = pod_hash
            annotations = {k: v for k, v in (d["metadata"].get("annotations") or {}).items()
                           if k not in (REVISION, REVISION_HISTORY, "kubectl.kubernetes.io/last-applied-configuration")}
            annotations.update({REVISION: str(max_rev + 1), DESIRED_REPLICAS: str(desired),
                                MAX_REPLICAS: str(desired + self._max_surge(d))})
            rs_obj = {
                "metadata": {
                    "name": f"{name}-{pod_hash}",
                    "namespace": ns,
                    "labels": dict(rs_template["metadata"]["labels"]),
                    "annotations": annotations,
                    "ownerReferences": [owner_reference(d)],
                },
                "spec": {"replicas": 0, "minReadySeconds": spec.get("minReadySeconds", 0),
                         "selector": selector, "template": rs_template},
                "status": {"replicas": 0},
            }
            apply_defaults(REPLICASET, rs_obj)
            new_rs = self.store.create(REPLICASET, rs_obj)
            if (ns, name) in self.faults.stalled_deployments:
                self.faults.stalled_replicaset_uids.add(new_rs["metadata"]["uid"])
            self._set_progressing(d, "True", "NewReplicaSetCreated",
                                  f'Created new replica set "{new_rs["metadata"]["name"]}"', progress=True)
            rss.append(new_rs)
        elif new_rs is not None and revision_of(new_rs) < max_rev:
            updated = copy.deepcopy(new_rs)
            annotations = updated["metadata"].setdefault("annotations", {})
            history = [h for h in annotations.get(REVISION_HISTORY, "").split(",") if h]
            history.append(str(revision_of(new_rs)))
            annotations[REVISION_HISTORY] = ",".join(history)
            annotations[REVISION] = str(max_rev + 1)
            new_rs = self._write(REPLICASET, updated)
            rss = [new_rs if rs["metadata"]["uid"] == new_rs["metadata"]["uid"] else rs for rs in rss]
        if new_rs is not None:
            # The Deployment's revision annotation follows its new ReplicaSet.
            rev = (new_rs["metadata"].get("annotations") or {}).get(REVISION)
            if (d["metadata"].get("annotations") or {}).get(REVISION) != rev:
                d2 = copy.deepcopy(self.store.get(DEPLOYMENT, ns, name))
                d2["metadata"].setdefault("annotations", {})[REVISION] = rev
                d = self._write(DEPLOYMENT, d2)
        old_rss = [rs for rs in rss if new_rs is None or rs["metadata"]["uid"] != new_rs["metadata"]["uid"]]
        if sync_only:
            self._scale(d, new_rs, old_rss)
            if spec.get("paused"):
                self._cleanup_history(d, old_rss)
            return
        assert new_rs is not None
        if spec.get("strategy", {}).get("type") == "Recreate":
            for rs in old_rss:
                self._scale_rs(d, rs, 0)
            # recreate.go oldPodsRunning: a pod of an old ReplicaSet that has not finished
            # (terminating ones included) holds the new one back.
            old_pods = [p for rs in old_rss for p in self.store.owned_by(rs["metadata"]["uid"], POD)
                        if not pod_terminal(p)]
            if not old_pods:
                self._scale_rs(d, new_rs, desired)
        else:
            self._rolling(d, new_rs, old_rss, desired)
        self._cleanup_history(d, old_rss)

    @staticmethod
    def _is_scaling_event(d: dict[str, Any], rss: list[dict[str, Any]]) -> bool:
        """sync.go isScalingEvent: an active ReplicaSet was sized for other replicas."""
        for rs in rss:
            if rs["spec"].get("replicas", 0) > 0:
                annotated = (rs["metadata"].get("annotations") or {}).get(DESIRED_REPLICAS)
                if annotated is not None and annotated != str(d["spec"].get("replicas", 1)):
                    return True
        return False

    def _scale(self, d: dict[str, Any], new_rs: dict[str, Any] | None, old_rss: list[dict[str, Any]]) -> None:
        """sync.go scale: the only active (or the newest) ReplicaSet takes all the replicas; old
        ones go to 0 when the new one is saturated; else, for RollingUpdate, the change is
        spread over the active ReplicaSets in proportion to their size
        (deploymentutil.GetReplicaSetProportion)."""
        replicas = d["spec"].get("replicas", 1)
        created = lambda rs: (rs["metadata"]["creationTimestamp"], rs["metadata"]["name"])
        olds = sorted(old_rss, key=created, reverse=True)
        active = [rs for rs in [*olds, new_rs] if rs is not None and rs["spec"].get("replicas", 0) > 0]
        # deploymentutil.FindActiveOrLatest
        if len(active) == 1:
            only = active[0]
        elif not active:
            only = new_rs if new_rs is not None else (olds[0] if olds else None)
        else:
            only = None
        if only is not None:
            self._scale_rs(d, only, replicas)
            return
        if not active:
            return
        annotated = ((new_rs or {}).get("metadata", {}).get("annotations") or {}).get(DESIRED_REPLICAS)
        if (new_rs is not None and new_rs["spec"].get("replicas", 0) == replicas and annotated == str(replicas)
                and (new_rs.get("status") or {}).get("availableReplicas", 0) == replicas):
            for rs in olds:
                if rs["spec"].get("replicas", 0) > 0:
                    self._scale_rs(d, rs, 0)
            return
        if (d["spec"].get("strategy") or {}).get("type", "RollingUpdate") != "RollingUpdate":
            return
        total = sum(rs["spec"].get("replicas", 0) for rs in active)
        allowed = replicas + self._max_surge(d) if replicas > 0 else 0
        to_add = allowed - total
        operation = ""
        if to_add > 0:  # ReplicaSetsBySizeNewer
            active.sort(key=lambda rs: (rs["spec"].get("replicas", 0), created(rs)), reverse=True)
            operation = "up"
        elif to_add < 0:  # ReplicaSetsBySizeOlder
            active.sort(key=lambda rs: created(rs))
            active.sort(key=lambda rs: rs["spec"].get("replicas", 0), reverse=True)
            operation = "down"
        added = 0
        sizes: list[int] = []
        for rs in active:
            proportion = self._proportion(rs, d, to_add, added) if to_add else 0
            sizes.append(rs["spec"].get("replicas", 0) + proportion)
            added += proportion
        if to_add and sizes:
            sizes[0] = max(sizes[0] + to_add - added, 0)  # leftovers to the largest
        for rs, size in zip(active, sizes):
            self._scale_rs(d, rs, size, operation=operation)

    def _proportion(self, rs: dict[str, Any], d: dict[str, Any], to_add: int, added: int) -> int:
        """deploymentutil.GetReplicaSetProportion and getReplicaSetFraction."""
        size = rs["spec"].get("replicas", 0)
        if size == 0 or to_add == 0 or to_add == added:
            return 0
        replicas = d["spec"].get("replicas", 1)
        if replicas == 0:
            fraction = -size
        else:
            try:
                before = int((rs["metadata"].get("annotations") or {}).get(MAX_REPLICAS, "0"))
            except ValueError:
                before = 0
            before = before or (d.get("status") or {}).get("replicas", 0)
            fraction = 0 if before == 0 else math.floor(size * (replicas + self._max_surge(d)) / before + 0.5) - size
        allowed = to_add - added
        return min(fraction, allowed) if to_add > 0 else max(fraction, allowed)

    def _max_surge(self, d: dict[str, Any]) -> int:
        """deploymentutil.MaxSurge: 0 unless RollingUpdate."""
        strategy = d["spec"].get("strategy") or {}
        if strategy.get("type", "RollingUpdate") != "RollingUpdate":
            return 0
        ru = strategy.get("rollingUpdate") or {}
        return scaled_value(ru.get("maxSurge", "25%"), d["spec"].get("replicas", 1), True)

    def _max_unavailable(self, d: dict[str, Any]) -> int:
        desired = d["spec"].get("replicas", 1)
        strategy = d["spec"].get("strategy") or {}
        if strategy.get("type") == "Recreate":
            return desired
        ru = strategy.get("rollingUpdate") or {}
        unavailable = scaled_value(ru.get("maxUnavailable", "25%"), desired, False)
        if unavailable == 0 and self._max_surge(d) == 0:
            unavailable = 1  # deploymentutil.ResolveFenceposts
        return min(unavailable, desired)

    def _rolling(self, d: dict[str, Any], new_rs: dict[str, Any], old_rss: list[dict[str, Any]], desired: int) -> None:
        """pkg/controller/deployment/rolling.go, one step."""
        all_rss = [new_rs, *old_rss]
        # Scale up the new ReplicaSet within maxSurge.
        total = sum(rs["spec"].get("replicas", 0) for rs in all_rss)
        new_replicas = new_rs["spec"].get("replicas", 0)
        if new_replicas > desired:
            new_rs = self._scale_rs(d, new_rs, desired)
        elif new_replicas < desired:
            room = desired + self._max_surge(d) - total
            if room > 0:
                new_rs = self._scale_rs(d, new_rs, min(desired, new_replicas + room))
        # Scale down old ReplicaSets within maxUnavailable: unhealthy ones first.
        all_rss = [new_rs, *old_rss]
        min_available = desired - self._max_unavailable(d)
        new_unavailable = new_rs["spec"].get("replicas", 0) - (new_rs.get("status") or {}).get("availableReplicas", 0)
        max_down = sum(rs["spec"].get("replicas", 0) for rs in all_rss) - min_available - max(new_unavailable, 0)
        if max_down <= 0:
            return
        for i, rs in enumerate(sorted(old_rss, key=lambda r: r["metadata"]["creationTimestamp"])):
            if max_down <= 0:
                break
            replicas = rs["spec"].get("replicas", 0)
            unhealthy = replicas - (rs.get("status") or {}).get("availableReplicas", 0)
            cut = min(max(unhealthy, 0), max_down)
            if cut:
                old_rss[old_rss.index(rs)] = self._scale_rs(d, rs, replicas - cut)
                max_down -= cut
        available = sum((rs.get("status") or {}).get("availableReplicas", 0) for rs in [new_rs, *old_rss])
        can_remove = available - min_available
        for rs in sorted(old_rss, key=lambda r: r["metadata"]["creationTimestamp"]):
            if can_remove <= 0:
                break
            replicas = rs["spec"].get("replicas", 0)
            cut = min(replicas, can_remove)
            if cut:
                self._scale_rs(d, rs, replicas - cut)
                can_remove -= cut

    def _cleanup_history(self, d: dict[str, Any], old_rss: list[dict[str, Any]]) -> None:
        limit = d["spec"].get("revisionHistoryLimit", 10)
        idle = [rs for rs in old_rss if rs["spec"].get("replicas", 0) == 0
                and (rs.get("status") or {}).get("replicas", 0) == 0
                and self.store.get(REPLICASET, rs["metadata"]["namespace"], rs["metadata"]["name"]) is not None]
        idle.sort(key=revision_of)
        for rs in idle[: max(len(idle) - limit, 0)]:
            self.store.delete(REPLICASET, rs["metadata"]["namespace"], rs["metadata"]["name"])

    def _set_progressing(self, d: dict[str, Any], status: str, reason: str, message: str, *,
                         progress: bool) -> None:
        fresh = self.store.get(DEPLOYMENT, d["metadata"]["namespace"], d["metadata"]["name"])
        new = copy.deepcopy(fresh)
        conditions = new.setdefault("status", {}).setdefault("conditions", [])
        self._put_condition(conditions, "Progressing", status, reason, message, progress=progress)
        self._write(DEPLOYMENT, new)

    @staticmethod
    def _put_condition(conditions: list[dict[str, Any]], ctype: str, status: str, reason: str, message: str,
                       *, progress: bool = False) -> None:
        """deploymentutil.SetDeploymentCondition, with syncRolloutStatus' special case for progress."""
        now = now_iso()
        cur = _condition(conditions, ctype)
        if cur is not None and cur["status"] == status and cur["reason"] == reason and not progress:
            return
        cond = {"type": ctype, "status": status, "lastUpdateTime": now, "lastTransitionTime": now,
                "reason": reason, "message": message}
        if cur is not None:
            if cur["status"] == status:
                cond["lastTransitionTime"] = cur["lastTransitionTime"]
            conditions[conditions.index(cur)] = cond
        else:
            conditions.append(cond)

    def _deployment_status(self, d: dict[str, Any]) -> None:
        """pkg/controller/deployment/sync.go calculateStatus and progress.go syncRolloutStatus."""
        spec = d["spec"]
        desired = spec.get("replicas", 1)
        rss = self._owned_replicasets(d)
        new_rs = next((rs for rs in rss if _template_without_hash(rs["spec"]["template"]) == spec["template"]), None)
        old = d.get("status") or {}
        st = lambda rs, f: (rs.get("status") or {}).get(f, 0)  # noqa: E731
        status: dict[str, Any] = {
            "observedGeneration": d["metadata"].get("generation", 1),
            "replicas": sum(st(rs, "replicas") for rs in rss),
            "updatedReplicas": st(new_rs, "replicas") if new_rs else 0,
            "readyReplicas": sum(st(rs, "readyReplicas") for rs in rss),
            "availableReplicas": sum(st(rs, "availableReplicas") for rs in rss),
        }
        total = sum(rs["spec"].get("replicas", 0) for rs in rss)
        status["unavailableReplicas"] = max(total - status["availableReplicas"], 0)
        if old.get("collisionCount"):
            status["collisionCount"] = old["collisionCount"]
        conditions = copy.deepcopy(old.get("conditions") or [])
        if status["availableReplicas"] >= desired - self._max_unavailable(d):
            self._put_condition(conditions, "Available", "True", "MinimumReplicasAvailable",
                                "Deployment has minimum availability.")
        else:
            self._put_condition(conditions, "Available", "False", "MinimumReplicasUnavailable",
                                "Deployment does not have minimum availability.")
        progressing = _condition(conditions, "Progressing")
        if spec.get("paused"):
            if not progressing or progressing["reason"] != "DeploymentPaused":
                self._put_condition(conditions, "Progressing", "Unknown", "DeploymentPaused", "Deployment is paused")
        elif progressing and progressing["reason"] == "DeploymentPaused":
            self._put_condition(conditions, "Progressing", "Unknown", "DeploymentResumed", "Deployment is resumed")
        elif new_rs is not None:
            rs_name = new_rs["metadata"]["name"]
            complete = (status["updatedReplicas"] == desired and status["replicas"] == desired
                        and status["availableReplicas"] == desired)
            old_old = old.get("replicas", 0) - old.get("updatedReplicas", 0)
            made_progress = (status["updatedReplicas"] > old.get("updatedReplicas", 0)
                             or status["replicas"] - status["updatedReplicas"] < old_old
                             or status["readyReplicas"] > old.get("readyReplicas", 0)
                             or status["availableReplicas"] > old.get("availableReplicas", 0))
            if complete:
                self._put_condition(conditions, "Progressing", "True", "NewReplicaSetAvailable",
                                    f'ReplicaSet "{rs_name}" has successfully progressed.')
            elif made_progress:
                self._put_condition(conditions, "Progressing", "True", "ReplicaSetUpdated",
                                    f'ReplicaSet "{rs_name}" is progressing.', progress=True)
            elif progressing is None:
                self._put_condition(conditions, "Progressing", "True", "FoundNewReplicaSet",
                                    f'Found new replica set "{rs_name}"')
            elif progressing["reason"] not in ("NewReplicaSetAvailable", "ProgressDeadlineExceeded"):
                deadline = spec.get("progressDeadlineSeconds", 600)
                if parse_iso(progressing["lastUpdateTime"]) + deadline < time.time():
                    self._put_condition(conditions, "Progressing", "False", "ProgressDeadlineExceeded",
                                        f'ReplicaSet "{rs_name}" has timed out progressing.')
        # The real controller lists Available before Progressing once both exist.
        conditions.sort(key=lambda c: {"Available": 0, "Progressing": 1}.get(c["type"], 2))
        status["conditions"] = conditions
        if status != old:
            new = copy.deepcopy(d)
            new["status"] = status
            self._write(DEPLOYMENT, new)

    # ------------------------------------------------------------------ replicasets

    def _new_pod(self, owner: dict[str, Any], name: str | None, extra_labels: dict[str, str],
                 template: dict[str, Any] | None = None) -> dict[str, Any]:
        template = template if template is not None else owner["spec"]["template"]
        tmeta = template.get("metadata") or {}
        meta: dict[str, Any] = {
            "namespace": owner["metadata"]["namespace"],
            "labels": {**(tmeta.get("labels") or {}), **extra_labels},
            "ownerReferences": [owner_reference(owner)],
        }
        if tmeta.get("annotations"):
            meta["annotations"] = dict(tmeta["annotations"])
        if name:
            meta["name"] = name
        else:
            meta["generateName"] = owner["metadata"]["name"] + "-"
        return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": copy.deepcopy(template["spec"]),
                "status": {"phase": "Pending"}}

    def _replicaset(self, rs: dict[str, Any]) -> None:
        pods = [p for p in self.store.owned_by(rs["metadata"]["uid"], POD) if pod_active(p)]
        want = rs["spec"].get("replicas", 1)
        for _ in range(want - len(pods)):
            pod = self.create_pod(self._new_pod(rs, None, {}))
            self.event(rs, "SuccessfulCreate", f"Created pod: {pod['metadata']['name']}",
                       component="replicaset-controller")
        if len(pods) > want:
            # controller.ActivePods ordering: unscheduled, then not ready, then newest first.
            pods.sort(key=lambda p: (bool(p["spec"].get("nodeName")), pod_ready(p),
                                     -parse_iso(p["metadata"]["creationTimestamp"])))
            for pod in pods[: len(pods) - want]:
                self.delete_pod(pod)
                self.event(rs, "SuccessfulDelete", f"Deleted pod: {pod['metadata']['name']}",
                           component="replicaset-controller")

    def _replicaset_status(self, rs: dict[str, Any]) -> None:
        pods = [p for p in self.store.owned_by(rs["metadata"]["uid"], POD) if pod_active(p)]
        labels = (rs["spec"]["template"].get("metadata") or {}).get("labels") or {}
        ready = sum(1 for p in pods if pod_ready(p))
        status: dict[str, Any] = {
            "replicas": len(pods),
            "fullyLabeledReplicas": sum(1 for p in pods if all(
                (p["metadata"].get("labels") or {}).get(k) == v for k, v in labels.items())),
            "readyReplicas": ready,
            "availableReplicas": ready,
            "observedGeneration": rs["metadata"].get("generation", 1),
        }
        status = {k: v for k, v in status.items() if v or k in ("replicas", "observedGeneration")}
        if status != rs.get("status"):
            new = copy.deepcopy(rs)
            new["status"] = status
            self._write(REPLICASET, new)

    # ------------------------------------------------------------------ controller revisions

    def _revisions(self, owner: dict[str, Any], hash_value: str, hash_label: str) -> tuple[
            dict[str, Any], list[dict[str, Any]]]:
        """pkg/controller/history as the StatefulSet and DaemonSet controllers use it: the
        owner's ControllerRevisions sorted by revision, and the one for its current template
        (``<owner>-<hash>``), created if new, renumbered past the others if an older template
        came back (a rollback)."""
        meta = owner["metadata"]
        revisions = sorted((r for r in self.store.list(CONTROLLER_REVISION, meta["namespace"])
                            if controller_uid(r) == meta["uid"]), key=lambda r: r.get("revision", 0))
        name = f"{meta['name']}-{hash_value}"
        latest = revisions[-1]["revision"] if revisions else 0
        match = next((r for r in revisions if r["metadata"]["name"] == name), None)
        if match is not None:
            if match["revision"] != latest:
                renumbered = copy.deepcopy(match)
                renumbered["revision"] = latest + 1
                match = self._write(CONTROLLER_REVISION, renumbered)
                revisions = [r for r in revisions if r["metadata"]["name"] != name] + [match]
            return match, revisions
        template = copy.deepcopy(owner["spec"]["template"])
        labels = dict((template.get("metadata") or {}).get("labels") or {})
        labels[hash_label] = hash_value
        template["$patch"] = "replace"
        created = self.store.create(CONTROLLER_REVISION, {
            "metadata": {"name": name, "namespace": meta["namespace"], "labels": labels,
                         "ownerReferences": [owner_reference(owner)]},
            "data": {"spec": {"template": template}},
            "revision": latest + 1,
        })
        return created, [*revisions, created]

    def _truncate_history(self, owner: dict[str, Any], revisions: list[dict[str, Any]], live: set[str]) -> None:
        """Delete the oldest revisions no pod runs beyond ``spec.revisionHistoryLimit``."""
        history = [r for r in revisions if r["metadata"]["name"] not in live]
        for r in history[: max(len(history) - owner["spec"].get("revisionHistoryLimit", 10), 0)]:
            self.store.delete(CONTROLLER_REVISION, r["metadata"]["namespace"], r["metadata"]["name"])

    # ------------------------------------------------------------------ statefulsets

    def _owned_pods(self, owner: dict[str, Any]) -> list[dict[str, Any]]:
        """The pods ``owner`` controls (ownerReference with controller: true)."""
        uid = owner["metadata"]["uid"]
        return [p for p in self.store.owned_by(uid, POD) if controller_uid(p) == uid]

    def _sts_revisions(self, sts: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]:
        """(update revision, current revision, all revisions): stateful_set_control.go
        getStatefulSetRevisions; the current one is ``status.currentRevision``'s."""
        update, revisions = self._revisions(sts, template_hash(sts["spec"]["template"]), REVISION_HASH_LABEL)
        current_name = (sts.get("status") or {}).get("currentRevision")
        current = next((r for r in revisions if r["metadata"]["name"] == current_name), update)
        return update, current, revisions

    def _sts_delete(self, sts: dict[str, Any], pod: dict[str, Any]) -> None:
        self.delete_pod(pod)
        self.event(sts, "SuccessfulDelete",
                   f"delete Pod {pod['metadata']['name']} in StatefulSet {sts['metadata']['name']} successful",
                   component="statefulset-controller")

    def _statefulset(self, sts: dict[str, Any]) -> None:
        """stateful_set_control.go updateStatefulSet, one pass.

        Replicas (ordinals below spec.replicas) are created when missing, at the update
        revision, or at the current one below ``rollingUpdate.partition``
        (newVersionedStatefulSetPod); OrderedReady stops at the first that is missing, finished,
        terminating or not Running and Ready (Parallel goes on). Then condemned pods (ordinals
        above) are deleted from the highest. Then a RollingUpdate deletes the highest-ordinal
        pod at or above the partition that is not at the update revision, waiting for each
        replacement to be healthy; OnDelete stops before that.
        """
        name = sts["metadata"]["name"]
        update, current, revisions = self._sts_revisions(sts)
        update_rev, current_rev = update["metadata"]["name"], current["metadata"]["name"]
        want = sts["spec"].get("replicas", 1)
        ordered = sts["spec"].get("podManagementPolicy", "OrderedReady") != "Parallel"
        strategy = sts["spec"].get("updateStrategy") or {}
        rolling = strategy.get("type", "RollingUpdate") == "RollingUpdate"
        partition = int((strategy.get("rollingUpdate") or {}).get("partition") or 0) if rolling else 0
        pods = self._owned_pods(sts)
        rev = lambda p: (p["metadata"].get("labels") or {}).get(CONTROLLER_REVISION_HASH)
        self._truncate_history(sts, revisions, {update_rev, current_rev} | {rev(p) for p in pods})
        replicas: list[dict[str, Any] | None] = [None] * want
        condemned: list[dict[str, Any]] = []
        for p in pods:
            ordinal = _ordinal(name, p)
            if 0 <= ordinal < want:
                replicas[ordinal] = p
            elif ordinal >= 0:
                condemned.append(p)
        condemned.sort(key=lambda p: -_ordinal(name, p))
        healthy = lambda p: p is not None and _running_and_ready(p) and not pod_terminating(p)
        first_unhealthy = next((p for p in [*replicas, *reversed(condemned)] if not healthy(p)), None)
        for i in range(want):
            pod = replicas[i]
            if pod is None:
                old = rolling and i < partition
                pod_name = f"{name}-{i}"
                new = self._new_pod(sts, pod_name, {
                    CONTROLLER_REVISION_HASH: current_rev if old else update_rev,
                    "statefulset.kubernetes.io/pod-name": pod_name,
                    "apps.kubernetes.io/pod-index": str(i),
                }, _revision_template(current if old else update))
                new["spec"]["hostname"] = pod_name
                if sts["spec"].get("serviceName"):
                    new["spec"]["subdomain"] = sts["spec"]["serviceName"]
                replicas[i] = self.create_pod(new)
                self.event(sts, "SuccessfulCreate", f"create Pod {pod_name} in StatefulSet {name} successful",
                           component="statefulset-controller")
                if ordered:
                    return
                continue
            if pod_terminal(pod):
                if not pod_terminating(pod):
                    self._sts_delete(sts, pod)
                if ordered:
                    return
                continue
            if ordered and (pod_terminating(pod) or not _running_and_ready(pod)):
                return
        for pod in condemned:
            if pod_terminating(pod):
                if ordered:
                    return
                continue
            if ordered and not _running_and_ready(pod) and pod is not first_unhealthy:
                return
            self._sts_delete(sts, pod)
            if ordered:
                return
        if not rolling:
            return
        for target in range(want - 1, partition - 1, -1):
            pod = replicas[target]
            if pod is None:
                return
            if rev(pod) != update_rev and not pod_terminating(pod):
                self._sts_delete(sts, pod)
                return
            if not healthy(pod):
                return

    def _statefulset_status(self, sts: dict[str, Any]) -> None:
        """stateful_set_control.go computeReplicaStatus and completeRollingUpdate: every pod
        counts in replicas (a terminating one too, and as ready while it is); current and
        updated replicas count those not terminating; the current revision becomes the update
        revision once every replica is updated and ready."""
        update, current, _ = self._sts_revisions(sts)
        update_rev, current_rev = update["metadata"]["name"], current["metadata"]["name"]
        pods = self._owned_pods(sts)
        old = sts.get("status") or {}
        rev = lambda p: (p["metadata"].get("labels") or {}).get(CONTROLLER_REVISION_HASH)
        live = [p for p in pods if not pod_terminating(p)]
        ready = sum(1 for p in pods if _running_and_ready(p))
        status = {
            "observedGeneration": sts["metadata"].get("generation", 1),
            "replicas": len(pods),
            "readyReplicas": ready,
            "currentReplicas": sum(1 for p in live if rev(p) == current_rev),
            "updatedReplicas": sum(1 for p in live if rev(p) == update_rev),
            "currentRevision": current_rev,
            "updateRevision": update_rev,
            "collisionCount": 0,
            "availableReplicas": ready,
        }
        rolling = (sts["spec"].get("updateStrategy") or {}).get("type", "RollingUpdate") == "RollingUpdate"
        if rolling and status["updatedReplicas"] == status["replicas"] == ready:
            status["currentReplicas"] = status["updatedReplicas"]
            status["currentRevision"] = update_rev
        status = {k: v for k, v in status.items() if v or k in ("replicas", "availableReplicas", "collisionCount")}
        if status != old:
            new = copy.deepcopy(sts)
            new["status"] = status
            self._write(STATEFULSET, new)

    # ------------------------------------------------------------------ daemonsets

    def _daemonset_nodes(self, ds: dict[str, Any]) -> list[dict[str, Any]]:
        selector = ds["spec"]["template"]["spec"].get("nodeSelector") or {}
        return [n for n in self.store.list(NODE)
                if all((n["metadata"].get("labels") or {}).get(k) == v for k, v in selector.items())]

    def _daemon_pods_by_node(self, ds: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
        """daemon_controller.go getNodesToDaemonPods: a pod that has finished and is being
        deleted no longer counts; a terminating one still does."""
        by_node: dict[str, list[dict[str, Any]]] = {}
        for p in self.store.owned_by(ds["metadata"]["uid"], POD):
            if controller_uid(p) != ds["metadata"]["uid"] or (pod_terminal(p) and pod_terminating(p)):
                continue
            by_node.setdefault(p["spec"].get("nodeName", ""), []).append(p)
        for pods in by_node.values():
            pods.sort(key=lambda p: (p["metadata"]["creationTimestamp"], p["metadata"]["name"]))
        return by_node

    def _ds_delete(self, ds: dict[str, Any], pod: dict[str, Any]) -> None:
        self.delete_pod(pod)
        self.event(ds, "SuccessfulDelete", f"Deleted pod: {pod['metadata']['name']}", component="daemonset-controller")

    def _daemonset(self, ds: dict[str, Any]) -> None:
        """pkg/controller/daemon, one pass: manage (podsShouldBeOnNode: a pod on each eligible
        node, none elsewhere, finished or extra ones deleted; a node whose pod is terminating
        waits for it) and update.go rollingUpdate (an outdated pod deleted while fewer than
        maxUnavailable nodes are unavailable; a node without a live pod is unavailable)."""
        revision = template_hash(ds["spec"]["template"])
        ds_name = ds["metadata"]["name"]
        _, revisions = self._revisions(ds, revision, CONTROLLER_REVISION_HASH)
        nodes = {n["metadata"]["name"] for n in self._daemonset_nodes(ds)}
        by_node = self._daemon_pods_by_node(ds)
        rev = lambda p: (p["metadata"].get("labels") or {}).get(CONTROLLER_REVISION_HASH)
        self._truncate_history(ds, revisions, {f"{ds_name}-{revision}"} | {
            f"{ds_name}-{rev(p)}" for pods in by_node.values() for p in pods})
        for node_name, node_pods in by_node.items():
            live = [p for p in node_pods if not pod_terminating(p)]
            if node_name not in nodes:
                doomed = live
            else:
                running = [p for p in live if not pod_terminal(p)]
                doomed = [p for p in live if pod_terminal(p)] + running[1:]  # all but the oldest
            for p in doomed:
                self._ds_delete(ds, p)
        for node_name in sorted(nodes - set(by_node)):
            pod = self._new_pod(ds, None, {CONTROLLER_REVISION_HASH: revision,
                                           "pod-template-generation": str(ds["metadata"].get("generation", 1))})
            pod["spec"]["nodeName"] = node_name
            tolerations = pod["spec"].setdefault("tolerations", [])
            # DaemonSet pods tolerate these (pkg/controller/daemon/util AddOrUpdateDaemonPodTolerations).
            for key, effect in (("node.kubernetes.io/not-ready", "NoExecute"),
                                ("node.kubernetes.io/unreachable", "NoExecute"),
                                ("node.kubernetes.io/disk-pressure", "NoSchedule"),
                                ("node.kubernetes.io/memory-pressure", "NoSchedule"),
                                ("node.kubernetes.io/pid-pressure", "NoSchedule"),
                                ("node.kubernetes.io/unschedulable", "NoSchedule")):
                tolerations.append({"key": key, "operator": "Exists", "effect": effect})
            created = self.create_pod(pod)
            self.event(ds, "SuccessfulCreate", f"Created pod: {created['metadata']['name']}",
                       component="daemonset-controller")
        strategy = ds["spec"].get("updateStrategy") or {}
        if strategy.get("type", "RollingUpdate") != "RollingUpdate":
            return
        max_unavailable = scaled_value((strategy.get("rollingUpdate") or {}).get("maxUnavailable", 1), len(nodes), True)
        by_node = self._daemon_pods_by_node(ds)
        unavailable = 0
        replace: list[dict[str, Any]] = []
        candidates: list[dict[str, Any]] = []
        for node_name in sorted(nodes):
            live = [p for p in by_node.get(node_name, []) if not pod_terminating(p)]
            new = [p for p in live if rev(p) == revision]
            old = [p for p in live if rev(p) != revision]
            if not live or (new and old):
                unavailable += 1
            elif new:
                unavailable += 0 if pod_ready(new[0]) else 1
            elif not pod_ready(old[0]):
                replace.append(old[0])
            elif unavailable < max_unavailable:
                candidates.append(old[0])
        for p in replace + candidates[: max(min(max_unavailable - unavailable, len(candidates)), 0)]:
            self._ds_delete(ds, p)

    def _daemonset_status(self, ds: dict[str, Any]) -> None:
        """daemon_controller.go updateDaemonSetStatus: per eligible node, its oldest pod."""
        revision = template_hash(ds["spec"]["template"])
        nodes = {n["metadata"]["name"] for n in self._daemonset_nodes(ds)}
        by_node = self._daemon_pods_by_node(ds)
        scheduled = [by_node[n][0] for n in sorted(nodes) if by_node.get(n)]
        ready = sum(1 for p in scheduled if pod_ready(p))
        status = {
            "currentNumberScheduled": len(scheduled),
            "numberMisscheduled": sum(1 for n in by_node if n not in nodes),
            "desiredNumberScheduled": len(nodes),
            "numberReady": ready,
            "observedGeneration": ds["metadata"].get("generation", 1),
            "updatedNumberScheduled": sum(
                1 for p in scheduled if (p["metadata"].get("labels") or {}).get(CONTROLLER_REVISION_HASH) == revision),
            "numberAvailable": ready,
            "numberUnavailable": max(len(nodes) - ready, 0),
        }
        status = {k: v for k, v in status.items() if v or k in (
            "currentNumberScheduled", "numberMisscheduled", "desiredNumberScheduled", "numberReady")}
        if status != ds.get("status"):
            new = copy.deepcopy(ds)
            new["status"] = status
            self._write(DAEMONSET, new)

    # ------------------------------------------------------------------ scheduler and kubelet

    def _schedule(self) -> None:
        pending = [p for p in self.store.list(POD) if not p["spec"].get("nodeName") and pod_active(p)]
        if not pending:
            return
        nodes = self.schedulable_nodes()
        total = len(self.store.list(NODE))
        for pod in pending:
            selector = pod["spec"].get("nodeSelector") or {}
            fits = [n for n in nodes
                    if all((n["metadata"].get("labels") or {}).get(k) == v for k, v in selector.items())]
            new = copy.deepcopy(pod)
            conditions = new.setdefault("status", {}).setdefault("conditions", [])
            if not fits:
                msg = (f"0/{total} nodes are available: {total - len(nodes)} node(s) were unschedulable or not ready. "
                       "preemption: 0/{0} nodes are available: {0} Preemption is not helpful for scheduling.".format(total))
                self._put_pod_condition(conditions, "PodScheduled", "False", "Unschedulable", msg)
                if new != pod:
                    self._write(POD, new)
                continue
            node = fits[self._rr % len(fits)]
            self._rr += 1
            new["spec"]["nodeName"] = node["metadata"]["name"]
            self._put_pod_condition(conditions, "PodScheduled", "True")
            self._write(POD, new)
            self.event(new, "Scheduled",
                       f"Successfully assigned {new['metadata']['namespace']}/{new['metadata']['name']} "
                       f"to {node['metadata']['name']}", component="default-scheduler")

    @staticmethod
    def _put_pod_condition(conditions: list[dict[str, Any]], ctype: str, status: str,
                           reason: str | None = None, message: str | None = None) -> None:
        cur = _condition(conditions, ctype)
        cond: dict[str, Any] = {"type": ctype, "status": status, "lastProbeTime": None,
                                "lastTransitionTime": now_iso()}
        if reason:
            cond["reason"] = reason
        if message:
            cond["message"] = message
        if cur is not None:
            if cur["status"] == status:
                cond["lastTransitionTime"] = cur["lastTransitionTime"]
            conditions[conditions.index(cur)] = cond
        else:
            conditions.append(cond)

    def _crashing(self, pod: dict[str, Any], container: dict[str, Any]) -> bool:
        return (container.get("image") in self.faults.crashloop_images
                or pod["metadata"]["uid"] in self.faults.crashloop_pod_uids)

    def _kubelet(self) -> None:
        now = time.monotonic()
        not_ready_nodes = {n["metadata"]["name"] for n in self.store.list(NODE) if not node_ready(n)}
        for pod in self.store.list(POD):
            node = pod["spec"].get("nodeName")
            if pod_terminating(pod):
                self._terminate(pod, now)
                continue
            if not node or not pod_active(pod):
                continue
            uid = pod["metadata"]["uid"]
            seen = self._pod_seen.setdefault(uid, now)
            started = now - seen >= self.pod_ready_seconds
            new = copy.deepcopy(pod)
            status = new.setdefault("status", {})
            conditions = status.setdefault("conditions", [])
            status.setdefault("hostIP", self._node_ip(node))
            status.setdefault("hostIPs", [{"ip": status["hostIP"]}])
            status.setdefault("startTime", now_iso())
            if not started:
                status["phase"] = "Pending"
                for ctype in ("PodReadyToStartContainers", "Initialized"):
                    self._put_pod_condition(conditions, ctype, "True")
                for ctype in ("Ready", "ContainersReady"):
                    self._put_pod_condition(conditions, ctype, "False", "ContainersNotReady",
                                            "containers with unready status: [" + " ".join(
                                                c["name"] for c in pod["spec"]["containers"]) + "]")
                status["containerStatuses"] = [self._container_status(
                    pod, c, {"waiting": {"reason": "ContainerCreating"}}, False, 0) for c in pod["spec"]["containers"]]
            else:
                status["phase"] = "Running"
                status.setdefault("podIP", self._pod_ip(uid))
                status.setdefault("podIPs", [{"ip": status["podIP"]}])
                stalled = controller_uid(pod) in self.faults.stalled_replicaset_uids
                statuses = []
                for c in pod["spec"]["containers"]:
                    prev = next((s for s in (pod["status"].get("containerStatuses") or [])
                                 if s["name"] == c["name"]), None)
                    if self._crashing(pod, c):
                        since = self._crash_since.setdefault((uid, c["name"]), time.time())
                        restarts = 1 + int((time.time() - since) / CRASH_RESTART_SECONDS)
                        state = {"waiting": {
                            "reason": "CrashLoopBackOff",
                            "message": f"back-off {min(10 * 2 ** (restarts - 1), 300)}s restarting failed "
                                       f"container={c['name']} pod={pod['metadata']['name']}_"
                                       f"{pod['metadata']['namespace']}({uid})"}}
                        reason = (self.faults.crash_pod_reasons.get(uid)
                                  or self.faults.crash_image_reasons.get(c.get("image", "")) or "Error")
                        last = {"terminated": {"exitCode": CRASH_EXIT_CODES.get(reason, 1), "reason": reason,
                                               "startedAt": now_iso(),
                                               "finishedAt": now_iso(), "containerID": self._container_id(uid, c)}}
                        if prev and prev.get("restartCount") == restarts and prev.get("lastState"):
                            last = prev["lastState"]
                        cs = self._container_status(pod, c, state, False, restarts, last)
                        if not prev or prev.get("restartCount") != restarts:
                            self.event(pod, "BackOff",
                                       f"Back-off restarting failed container {c['name']} in pod "
                                       f"{pod['metadata']['name']}_{pod['metadata']['namespace']}({uid})",
                                       type_="Warning", component="kubelet", host=node)
                    else:
                        self._crash_since.pop((uid, c["name"]), None)
                        running_since = (prev or {}).get("state", {}).get("running", {}).get("startedAt") or now_iso()
                        ready = not stalled and node not in not_ready_nodes
                        cs = self._container_status(
                            pod, c, {"running": {"startedAt": running_since}}, ready,
                            (prev or {}).get("restartCount", 0), (prev or {}).get("lastState") or {})
                    statuses.append(cs)
                status["containerStatuses"] = statuses
                unready = [s["name"] for s in statuses if not s["ready"]]
                for ctype in ("PodReadyToStartContainers", "Initialized"):
                    self._put_pod_condition(conditions, ctype, "True")
                if node in not_ready_nodes:
                    # The node lifecycle controller marks pods of a NotReady node (MarkPodsNotReady).
                    self._put_pod_condition(conditions, "Ready", "False")
                    self._put_pod_condition(conditions, "ContainersReady", "True" if not unready else "False",
                                            None if not unready else "ContainersNotReady")
                elif unready:
                    msg = f"containers with unready status: [{' '.join(unready)}]"
                    for ctype in ("Ready", "ContainersReady"):
                        self._put_pod_condition(conditions, ctype, "False", "ContainersNotReady", msg)
                else:
                    for ctype in ("Ready", "ContainersReady"):
                        self._put_pod_condition(conditions, ctype, "True")
            order = {"PodReadyToStartContainers": 0, "Initialized": 1, "Ready": 2, "ContainersReady": 3,
                     "PodScheduled": 4}
            conditions.sort(key=lambda c: order.get(c["type"], 5))
            if new != pod:
                self._write(POD, new)

    def _terminate(self, pod: dict[str, Any], now: float) -> None:
        """The kubelet's side of a graceful deletion (pkg/kubelet SyncTerminatingPod, the status
        manager's TerminatePod and its final DELETE).

        The containers get SIGTERM (a ``Killing`` event each) and the emulated ones exit
        ``termination_seconds`` later, or at the end of the grace period if that is sooner; until
        then the pod keeps its status. Then the kubelet posts the terminal status: a container
        that was running exited 0 (Completed), a crash-looping one with its last termination, one
        that never started is ContainerStatusUnknown (137); phase Succeeded if every container
        exited 0, else Failed; Ready and ContainersReady False (PodCompleted / PodFailed). On its
        next pass it deletes the pod with grace period 0. A node whose kubelet stopped posting
        status (NodeStatusUnknown) does none of this; a pod on a node that no longer exists is
        removed (podgc gcOrphaned).
        """
        uid = pod["metadata"]["uid"]
        node = pod["spec"].get("nodeName")
        if not node or self.store.get(NODE, None, node) is None:
            self._remove_pod(pod)
            return
        if self.faults.nodes_not_ready.get(node) == "NodeStatusUnknown":
            return
        if uid in self._stopped:
            self.delete_pod(pod, 0)
            return
        since = self._terminating_since.setdefault(uid, now)
        if uid not in self._killed:
            self._killed.add(uid)
            for c in pod["spec"]["containers"]:
                self.event(pod, "Killing", f"Stopping container {c['name']}", component="kubelet", host=node)
        grace = pod["metadata"].get("deletionGracePeriodSeconds") or 0
        if now - since < min(self.termination_seconds, grace):
            return
        new = copy.deepcopy(pod)
        status = new.setdefault("status", {})
        statuses = []
        for c in pod["spec"]["containers"]:
            prev = next((cs for cs in status.get("containerStatuses") or [] if cs["name"] == c["name"]), None) or {}
            state = prev.get("state") or {}
            if "running" in state:
                terminated = {"exitCode": 0, "reason": "Completed", "startedAt": state["running"].get("startedAt"),
                              "finishedAt": now_iso(), "containerID": self._container_id(uid, c)}
            elif "terminated" in state:
                terminated = state["terminated"]
            elif (prev.get("lastState") or {}).get("terminated"):
                terminated = copy.deepcopy(prev["lastState"]["terminated"])
            else:
                terminated = {"exitCode": 137, "reason": "ContainerStatusUnknown",
                              "message": "The container could not be located when the pod was terminated",
                              "startedAt": None, "finishedAt": None}
            statuses.append(self._container_status(pod, c, {"terminated": terminated}, False,
                                                   prev.get("restartCount", 0), prev.get("lastState") or {}))
        status["containerStatuses"] = statuses
        succeeded = all(cs["state"]["terminated"]["exitCode"] == 0 for cs in statuses)
        status["phase"] = "Succeeded" if succeeded else "Failed"
        reason = "PodCompleted" if succeeded else "PodFailed"
        conditions = status.setdefault("conditions", [])
        self._put_pod_condition(conditions, "PodReadyToStartContainers", "False")
        self._put_pod_condition(conditions, "Initialized", "True", "PodCompleted" if succeeded else None)
        for ctype in ("Ready", "ContainersReady"):
            self._put_pod_condition(conditions, ctype, "False", reason)
        self._write(POD, new)
        self._stopped.add(uid)

    @staticmethod
    def _container_id(uid: str, c: dict[str, Any]) -> str:
        return "containerd://" + template_hash({"uid": uid, "c": c["name"]}) * 6

    def _container_status(self, pod: dict[str, Any], c: dict[str, Any], state: dict[str, Any], ready: bool,
                          restarts: int, last_state: dict[str, Any] | None = None) -> dict[str, Any]:
        image = c.get("image", "")
        cs: dict[str, Any] = {
            "name": c["name"],
            "state": state,
            "lastState": last_state or {},
            "ready": ready,
            "restartCount": restarts,
            "image": image if "/" in image.split(":")[0] or "." in image.split("/")[0] else f"docker.io/library/{image}",
            "imageID": "",
            "started": "running" in state,
        }
        if "waiting" not in state or state["waiting"].get("reason") != "ContainerCreating":
            cs["imageID"] = f"{image.split(':')[0]}@sha256:{template_hash({'image': image}) * 7}"[:200]
            cs["containerID"] = self._container_id(pod["metadata"]["uid"], c)
        return cs

    def _node_ip(self, node: str) -> str:
        obj = self.store.get(NODE, None, node)
        for addr in ((obj or {}).get("status") or {}).get("addresses") or []:
            if addr.get("type") == "InternalIP":
                return addr["address"]
        return "10.0.0.1"

    @staticmethod
    def _pod_ip(uid: str) -> str:
        n = int(uid.replace("-", "")[:6], 16)
        return f"10.244.{(n >> 8) % 250 + 1}.{n % 250 + 2}"

    def _forget_gone_pods(self) -> None:
        live = {p["metadata"]["uid"] for p in self.store.list(POD)}
        for seen in (self._pod_seen, self._terminating_since):
            for uid in list(seen):
                if uid not in live:
                    del seen[uid]
        self._killed &= live
        self._stopped &= live
        for key in list(self._crash_since):
            if key[0] not in live:
                del self._crash_since[key]
        self.faults.crashloop_pod_uids &= live
        for uid in set(self.faults.crash_pod_reasons) - live:
            del self.faults.crash_pod_reasons[uid]

    # ------------------------------------------------------------------ disruption

    def pdb_pods(self, pdb: dict[str, Any]) -> list[dict[str, Any]]:
        """disruption.go getPodsForPdb: every pod the selector matches, terminating and finished
        ones included."""
        selector = pdb["spec"].get("selector")
        return [p for p in self.store.list(POD, pdb["metadata"]["namespace"])
                if matches_label_selector(selector, p["metadata"].get("labels"))]

    def _controller_scale(self, ref: dict[str, Any], namespace: str) -> tuple[str, int] | None:
        """disruption.go finders (getPodDeployment, getPodReplicaSet, getPodStatefulSet,
        getScaleController): (UID, replicas) of the controller with a scale that ``ref`` names,
        None if it cannot be found; raises _SyncError for a kind without a scale subresource."""
        kind, api_version = ref.get("kind", ""), ref.get("apiVersion", "")
        served = BY_KIND.get(kind)
        if served is None or served.api_version != api_version:
            raise _SyncError(f'no matches for kind "{kind}" in version "{api_version}"')
        if "scale" not in served.subresources:
            raise _SyncError(f"{served.qualified} does not implement the scale subresource")
        obj = self.store.get(served, namespace, ref.get("name", ""))
        if obj is None or obj["metadata"]["uid"] != ref.get("uid"):
            return None
        if kind == "ReplicaSet":
            owner = controller_of(obj)
            if owner is not None and owner.get("kind") == "Deployment" and owner.get("apiVersion") == "apps/v1":
                d = self.store.get(DEPLOYMENT, namespace, owner.get("name", ""))
                if d is not None and d["metadata"]["uid"] == owner.get("uid"):
                    return d["metadata"]["uid"], d["spec"].get("replicas", 1)
                # getPodReplicaSet skips a ReplicaSet a Deployment controls; the scale finder
                # then answers with the ReplicaSet's own scale.
        return obj["metadata"]["uid"], obj["spec"].get("replicas", 1)

    def _expected_scale(self, pods: list[dict[str, Any]]) -> tuple[int, list[str]]:
        """disruption.go getExpectedScale: (sum of the pods' controllers' scale, the pods
        without a controller). Raises _SyncError when a controller cannot be found."""
        scales: dict[str, int] = {}
        unmanaged: list[str] = []
        for pod in pods:
            ref = controller_of(pod)
            if ref is None:
                unmanaged.append(pod["metadata"]["name"])
                continue
            found = self._controller_scale(ref, pod["metadata"]["namespace"])
            if found is None:
                raise _SyncError(f'found no controllers for pod "{pod["metadata"]["name"]}"')
            scales[found[0]] = found[1]
        return sum(scales.values()), unmanaged

    def pdb_status(self, pdb: dict[str, Any]) -> dict[str, Any]:
        """Recompute and store one PodDisruptionBudget's status, as disruption.go trySync and
        updatePdbStatus; returns the stored budget.

        maxUnavailable, or a percentage minAvailable, is taken of the controllers' scale
        (getExpectedScale); an integer minAvailable counts the selected pods; a policy/v1
        budget with neither expects 0 pods and wants 0 healthy. Healthy pods are the Ready ones
        neither terminating nor in ``disruptedPods`` (an eviction's entry, dropped once the pod
        terminates or after DeletionTimeout). No disruption is allowed when the expected count
        is 0 or less. When the expected count cannot be computed, ``failSafe``: only
        disruptionsAllowed (0) and a DisruptionAllowed=False/SyncFailed condition are written,
        the generation is not observed.
        """
        spec = pdb["spec"]
        pods = self.pdb_pods(pdb)
        old = pdb.get("status") or {}
        unmanaged: list[str] = []
        try:
            if spec.get("maxUnavailable") is not None:
                expected, unmanaged = self._expected_scale(pods)
                desired = max(0, expected - scaled_value(spec["maxUnavailable"], expected, True))
            elif spec.get("minAvailable") is not None:
                if isinstance(spec["minAvailable"], int):
                    desired, expected = spec["minAvailable"], len(pods)
                else:
                    expected, unmanaged = self._expected_scale(pods)
                    desired = scaled_value(spec["minAvailable"], expected, True)
            else:
                expected = desired = 0
        except _SyncError as err:
            return self._pdb_fail_safe(pdb, str(err))
        now = time.time()
        by_name = {p["metadata"]["name"]: p for p in pods}
        disrupted: dict[str, str] = {}
        for name, at in (old.get("disruptedPods") or {}).items():
            pod = by_name.get(name)
            if pod is None or pod_terminating(pod):
                continue
            if parse_iso(at) + DELETION_TIMEOUT_SECONDS < now:
                ns = pdb["metadata"]["namespace"]
                # (sic: the controller prints the namespace twice)
                self.event(pod, "NotDeleted", f"Pod was expected by PDB {ns}/{ns} to be deleted but it wasn't",
                           type_="Warning", component="controllermanager")
                continue
            disrupted[name] = at
        healthy = sum(1 for p in pods if not pod_terminating(p) and p["metadata"]["name"] not in disrupted
                      and pod_ready(p))
        allowed = healthy - desired
        if expected <= 0 or allowed <= 0:
            allowed = 0
        generation = pdb["metadata"].get("generation", 1)
        status: dict[str, Any] = {
            "observedGeneration": generation,
            "disruptionsAllowed": allowed,
            "currentHealthy": healthy,
            "desiredHealthy": desired,
            "expectedPods": expected,
            "conditions": copy.deepcopy(old.get("conditions") or []),
        }
        if disrupted:
            status["disruptedPods"] = disrupted
        update_disruption_allowed_condition(status)
        if status == old:
            return pdb
        if not pods:
            self.event(pdb, "NoPods", "No matching pods found", component="controllermanager")
        if unmanaged:
            selector = _go_label_selector(spec.get("selector"))
            self.event(pdb, "UnmanagedPods",
                       f"Pods selected by this PodDisruptionBudget (selector: {selector}) were found to be "
                       "unmanaged. As a result, the status of the PDB cannot be calculated correctly, which may "
                       'result in undefined behavior. To account for these pods please set ".spec.minAvailable" '
                       "field of the PDB to an integer value.", type_="Warning", component="controllermanager")
        new = copy.deepcopy(pdb)
        new["status"] = status
        return self._write(PDB, new)

    def _pdb_fail_safe(self, pdb: dict[str, Any], message: str) -> dict[str, Any]:
        """disruption.go failSafe after a sync error."""
        old = pdb.get("status") or {}
        status = copy.deepcopy(old)
        for key in ("currentHealthy", "desiredHealthy", "expectedPods"):
            status.setdefault(key, 0)
        status["disruptionsAllowed"] = 0
        set_status_condition(status.setdefault("conditions", []), "DisruptionAllowed", "False", "SyncFailed", message,
                             old.get("observedGeneration", 0))
        if status == old:
            return pdb
        self.event(pdb, "CalculateExpectedPodCountFailed",
                   f"Failed to calculate the number of expected pods: {message}", type_="Warning",
                   component="controllermanager")
        new = copy.deepcopy(pdb)
        new["status"] = status
        return self._write(PDB, new)

    # ------------------------------------------------------------------ faults

    def crashloop_selected_pods(self, namespace: str, label_selector: str, reason: str = "Error") -> int:
        """Mark the pods matching now as crash-looping, terminating with ``reason``; returns how many."""
        match = parse_label_selector(label_selector)
        pods = self.store.list(POD, namespace, where=lambda p: match(p["metadata"].get("labels") or {}))
        self.faults.crashloop_pod_uids.update(p["metadata"]["uid"] for p in pods)
        self.faults.crash_pod_reasons.update((p["metadata"]["uid"], reason) for p in pods)
        return len(pods)
