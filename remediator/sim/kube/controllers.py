"""The emulated control plane: kube-controller-manager, kube-scheduler and the kubelets.

``Controllers.reconcile()`` runs one pass of every loop, under the store lock; the
``Emulator`` calls it after each write and from a background thread every tick. One pass
does, in this order:

* nodes: status (Ready and the usual pressure conditions, taints), following node faults;
* deployments (pkg/controller/deployment): a ReplicaSet per pod template, named
  ``<deployment>-<pod-template-hash>``, revisions in ``deployment.kubernetes.io/revision``
  (an old ReplicaSet whose template comes back, as after ``kubectl rollout undo``, is reused
  and renumbered, its old number going to ``revision-history``), RollingUpdate within
  maxSurge/maxUnavailable or Recreate, ``spec.paused``, revisionHistoryLimit, and status with
  the Available and Progressing conditions (NewReplicaSetCreated, ReplicaSetUpdated,
  NewReplicaSetAvailable, ProgressDeadlineExceeded);
* replicasets, statefulsets (ordinal pods, OrderedReady, rolling by recreate from the highest
  ordinal) and daemonsets (one pod per node, tolerating unschedulable nodes);
* the scheduler: round-robin onto Ready, schedulable nodes whose labels match nodeSelector;
* the kubelets: Pending -> Running, Ready after ``pod_ready_seconds``, and the faults
  (CrashLoopBackOff with growing restartCount and BackOff events; readiness that never
  comes for a stalled rollout; NotReady pods on a NotReady node);
* disruption: PodDisruptionBudget status (pkg/controller/disruption).

Events are recorded as v1 Events like the real components (ScalingReplicaSet,
SuccessfulCreate, SuccessfulDelete, Scheduled, BackOff), repeated ones counted.
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
DEPLOYMENT, REPLICASET, STATEFULSET, DAEMONSET, PDB = (
    BY_KIND[k] for k in ("Deployment", "ReplicaSet", "StatefulSet", "DaemonSet", "PodDisruptionBudget"))

REVISION = "deployment.kubernetes.io/revision"
REVISION_HISTORY = "deployment.kubernetes.io/revision-history"
DESIRED_REPLICAS = "deployment.kubernetes.io/desired-replicas"
MAX_REPLICAS = "deployment.kubernetes.io/max-replicas"
POD_TEMPLATE_HASH = "pod-template-hash"
CONTROLLER_REVISION_HASH = "controller-revision-hash"
CRASH_RESTART_SECONDS = 1.0
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
    return (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed") and not pod[
        "metadata"].get("deletionTimestamp")


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


# --------------------------------------------------------------------------- controllers


class Controllers:
    """One reconcile pass over the whole cluster (see the module docstring)."""

    def __init__(self, store: Store, faults: Faults, pod_ready_seconds: float) -> None:
        self.store = store
        self.faults = faults
        self.pod_ready_seconds = pod_ready_seconds
        self.instant = False  # seeding: pods are Ready at once
        self._pod_seen: dict[str, float] = {}
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

    def delete_pod(self, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        if self.store.get(POD, meta["namespace"], meta["name"]) is not None:
            self.store.delete(POD, meta["namespace"], meta["name"])
        self._pod_seen.pop(meta["uid"], None)

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

    def _scale_rs(self, d: dict[str, Any], rs: dict[str, Any], replicas: int) -> dict[str, Any]:
        current = rs["spec"].get("replicas", 0)
        if current == replicas:
            return rs
        new = copy.deepcopy(rs)
        new["spec"]["replicas"] = replicas
        annotations = new["metadata"].setdefault("annotations", {})
        annotations[DESIRED_REPLICAS] = str(d["spec"].get("replicas", 1))
        rs = self._write(REPLICASET, new)
        direction = "up" if replicas > current else "down"
        self.event(d, "ScalingReplicaSet",
                   f"Scaled {direction} replica set {rs['metadata']['name']} from {current} to {replicas}",
                   component="deployment-controller")
        return rs

    def _deployment(self, d: dict[str, Any]) -> None:
        spec = d["spec"]
        ns, name = d["metadata"]["namespace"], d["metadata"]["name"]
        rss = self._owned_replicasets(d)
        template = spec["template"]
        new_rs = next((rs for rs in rss if _template_without_hash(rs["spec"]["template"]) == template), None)
        max_rev = max((revision_of(rs) for rs in rss), default=0)
        desired = spec.get("replicas", 1)
        if spec.get("paused"):
            return
        if new_rs is None:
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
        elif revision_of(new_rs) < max_rev:
            updated = copy.deepcopy(new_rs)
            annotations = updated["metadata"].setdefault("annotations", {})
            history = [h for h in annotations.get(REVISION_HISTORY, "").split(",") if h]
            history.append(str(revision_of(new_rs)))
            annotations[REVISION_HISTORY] = ",".join(history)
            annotations[REVISION] = str(max_rev + 1)
            new_rs = self._write(REPLICASET, updated)
            rss = [new_rs if rs["metadata"]["uid"] == new_rs["metadata"]["uid"] else rs for rs in rss]
        # The Deployment's revision annotation follows its new ReplicaSet.
        rev = (new_rs["metadata"].get("annotations") or {}).get(REVISION)
        if (d["metadata"].get("annotations") or {}).get(REVISION) != rev:
            d2 = copy.deepcopy(self.store.get(DEPLOYMENT, ns, name))
            d2["metadata"].setdefault("annotations", {})[REVISION] = rev
            d = self._write(DEPLOYMENT, d2)
        old_rss = [rs for rs in rss if rs["metadata"]["uid"] != new_rs["metadata"]["uid"]]
        if spec.get("strategy", {}).get("type") == "Recreate":
            for rs in old_rss:
                self._scale_rs(d, rs, 0)
            old_pods = [p for rs in old_rss for p in self.store.owned_by(rs["metadata"]["uid"], POD)]
            if not old_pods:
                self._scale_rs(d, new_rs, desired)
        else:
            self._rolling(d, new_rs, old_rss, desired)
        self._cleanup_history(d, old_rss)

    def _max_surge(self, d: dict[str, Any]) -> int:
        ru = (d["spec"].get("strategy") or {}).get("rollingUpdate") or {}
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

    def _new_pod(self, owner: dict[str, Any], name: str | None, extra_labels: dict[str, str]) -> dict[str, Any]:
        template = owner["spec"]["template"]
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

    # ------------------------------------------------------------------ statefulsets

    def _statefulset(self, sts: dict[str, Any]) -> None:
        name = sts["metadata"]["name"]
        revision = f"{name}-{template_hash(sts['spec']['template'])}"
        want = sts["spec"].get("replicas", 1)
        pods = {p["metadata"]["name"]: p for p in self.store.owned_by(sts["metadata"]["uid"], POD) if pod_active(p)}
        ordered = sts["spec"].get("podManagementPolicy", "OrderedReady") == "OrderedReady"
        for i in range(want):
            pod_name = f"{name}-{i}"
            if pod_name in pods:
                if ordered and not pod_ready(pods[pod_name]):
                    return
                continue
            pod = self._new_pod(sts, pod_name, {
                CONTROLLER_REVISION_HASH: revision,
                "statefulset.kubernetes.io/pod-name": pod_name,
                "apps.kubernetes.io/pod-index": str(i),
            })
            pod["spec"]["hostname"] = pod_name
            if sts["spec"].get("serviceName"):
                pod["spec"]["subdomain"] = sts["spec"]["serviceName"]
            pods[pod_name] = self.create_pod(pod)
            self.event(sts, "SuccessfulCreate", f"create Pod {pod_name} in StatefulSet {name} successful",
                       component="statefulset-controller")
            if ordered:
                return
        extra = sorted((p for p in pods.values() if int(p["metadata"]["name"].rsplit("-", 1)[1]) >= want),
                       key=lambda p: -int(p["metadata"]["name"].rsplit("-", 1)[1]))
        for pod in extra[:1] if ordered else extra:
            self.delete_pod(pod)
            self.event(sts, "SuccessfulDelete", f"delete Pod {pod['metadata']['name']} in StatefulSet {name} successful",
                       component="statefulset-controller")
        if extra or sts["spec"].get("updateStrategy", {}).get("type") == "OnDelete":
            return
        if all(pod_ready(p) for p in pods.values()):
            outdated = sorted((p for p in pods.values()
                               if (p["metadata"].get("labels") or {}).get(CONTROLLER_REVISION_HASH) != revision),
                              key=lambda p: -int(p["metadata"]["name"].rsplit("-", 1)[1]))
            if outdated:
                self.delete_pod(outdated[0])
                self.event(sts, "SuccessfulDelete",
                           f"delete Pod {outdated[0]['metadata']['name']} in StatefulSet {name} successful",
                           component="statefulset-controller")

    def _statefulset_status(self, sts: dict[str, Any]) -> None:
        name = sts["metadata"]["name"]
        update_revision = f"{name}-{template_hash(sts['spec']['template'])}"
        pods = [p for p in self.store.owned_by(sts["metadata"]["uid"], POD) if pod_active(p)]
        old = sts.get("status") or {}
        rev = lambda p: (p["metadata"].get("labels") or {}).get(CONTROLLER_REVISION_HASH)  # noqa: E731
        updated = sum(1 for p in pods if rev(p) == update_revision)
        current_revision = old.get("currentRevision") or update_revision
        want = sts["spec"].get("replicas", 1)
        if updated == want == len(pods) and all(pod_ready(p) for p in pods):
            current_revision = update_revision
        ready = sum(1 for p in pods if pod_ready(p))
        status = {
            "observedGeneration": sts["metadata"].get("generation", 1),
            "replicas": len(pods),
            "readyReplicas": ready,
            "currentReplicas": sum(1 for p in pods if rev(p) == current_revision),
            "updatedReplicas": updated,
            "currentRevision": current_revision,
            "updateRevision": update_revision,
            "collisionCount": 0,
            "availableReplicas": ready,
        }
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

    def _daemonset(self, ds: dict[str, Any]) -> None:
        revision = template_hash(ds["spec"]["template"])
        nodes = {n["metadata"]["name"] for n in self._daemonset_nodes(ds)}
        pods = [p for p in self.store.owned_by(ds["metadata"]["uid"], POD) if pod_active(p)]
        by_node: dict[str, list[dict[str, Any]]] = {}
        for p in pods:
            by_node.setdefault(p["spec"].get("nodeName", ""), []).append(p)
        for node_name, node_pods in by_node.items():
            for p in node_pods[1:] if node_name in nodes else node_pods:
                self.delete_pod(p)
                self.event(ds, "SuccessfulDelete", f"Deleted pod: {p['metadata']['name']}",
                           component="daemonset-controller")
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
        # Rolling update with maxUnavailable 1: replace one outdated pod when all are ready.
        if ds["spec"].get("updateStrategy", {}).get("type", "RollingUpdate") == "RollingUpdate":
            live = [p for p in self.store.owned_by(ds["metadata"]["uid"], POD) if pod_active(p)]
            outdated = [p for p in live if (p["metadata"].get("labels") or {}).get(CONTROLLER_REVISION_HASH) != revision]
            if outdated and all(pod_ready(p) for p in live):
                self.delete_pod(outdated[0])
                self.event(ds, "SuccessfulDelete", f"Deleted pod: {outdated[0]['metadata']['name']}",
                           component="daemonset-controller")

    def _daemonset_status(self, ds: dict[str, Any]) -> None:
        revision = template_hash(ds["spec"]["template"])
        nodes = self._daemonset_nodes(ds)
        pods = [p for p in self.store.owned_by(ds["metadata"]["uid"], POD) if pod_active(p)]
        ready = sum(1 for p in pods if pod_ready(p))
        status = {
            "currentNumberScheduled": len(pods),
            "numberMisscheduled": 0,
            "desiredNumberScheduled": len(nodes),
            "numberReady": ready,
            "observedGeneration": ds["metadata"].get("generation", 1),
            "updatedNumberScheduled": sum(
                1 for p in pods if (p["metadata"].get("labels") or {}).get(CONTROLLER_REVISION_HASH) == revision),
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
        for uid in list(self._pod_seen):
            if uid not in live:
                del self._pod_seen[uid]
        for key in list(self._crash_since):
            if key[0] not in live:
                del self._crash_since[key]
        self.faults.crashloop_pod_uids &= live
        for uid in set(self.faults.crash_pod_reasons) - live:
            del self.faults.crash_pod_reasons[uid]

    # ------------------------------------------------------------------ disruption

    def pdb_pods(self, pdb: dict[str, Any]) -> list[dict[str, Any]]:
        selector = pdb["spec"].get("selector")
        return [p for p in self.store.list(POD, pdb["metadata"]["namespace"])
                if matches_label_selector(selector, p["metadata"].get("labels")) and pod_active(p)]

    def _expected_scale(self, pods: list[dict[str, Any]]) -> int:
        """disruption controller getExpectedScale: sum of the owning controllers' replicas."""
        seen: dict[str, int] = {}
        for pod in pods:
            ref = controller_of(pod)
            if ref is None:
                continue
            ns = pod["metadata"]["namespace"]
            if ref["kind"] == "ReplicaSet":
                rs = self.store.get(REPLICASET, ns, ref["name"])
                if rs is None:
                    continue
                rs_ref = controller_of(rs)
                if rs_ref and rs_ref["kind"] == "Deployment":
                    d = self.store.get(DEPLOYMENT, ns, rs_ref["name"])
                    if d is not None:
                        seen[d["metadata"]["uid"]] = d["spec"].get("replicas", 1)
                        continue
                seen[rs["metadata"]["uid"]] = rs["spec"].get("replicas", 1)
            elif ref["kind"] == "StatefulSet":
                sts = self.store.get(STATEFULSET, ns, ref["name"])
                if sts is not None:
                    seen[sts["metadata"]["uid"]] = sts["spec"].get("replicas", 1)
        return sum(seen.values())

    def pdb_status(self, pdb: dict[str, Any]) -> dict[str, Any]:
        """Recompute and store one PodDisruptionBudget's status (pkg/controller/disruption)."""
        spec = pdb["spec"]
        pods = self.pdb_pods(pdb)
        live_names = {p["metadata"]["name"] for p in pods}
        old = pdb.get("status") or {}
        disrupted = {k: v for k, v in (old.get("disruptedPods") or {}).items() if k in live_names}
        healthy = sum(1 for p in pods if pod_ready(p) and p["metadata"]["name"] not in disrupted)
        if "maxUnavailable" in spec:
            expected = self._expected_scale(pods)
            desired = max(0, expected - scaled_value(spec["maxUnavailable"], expected, True))
        elif isinstance(spec.get("minAvailable"), str) and spec["minAvailable"].endswith("%"):
            expected = self._expected_scale(pods)
            desired = scaled_value(spec["minAvailable"], expected, True)
        else:
            expected = len(pods)
            desired = scaled_value(spec.get("minAvailable", 1), expected, True)
        allowed = max(0, healthy - desired)
        conditions = copy.deepcopy(old.get("conditions") or [])
        cond_status, reason = ("True", "SufficientPods") if allowed > 0 else ("False", "InsufficientPods")
        cur = _condition(conditions, "DisruptionAllowed")
        generation = pdb["metadata"].get("generation", 1)
        if cur is None or cur["status"] != cond_status or cur.get("observedGeneration") != generation:
            cond = {"type": "DisruptionAllowed", "status": cond_status, "reason": reason, "message": "",
                    "observedGeneration": generation,
                    "lastTransitionTime": cur["lastTransitionTime"] if cur and cur["status"] == cond_status
                    else now_iso()}
            conditions = [c for c in conditions if c["type"] != "DisruptionAllowed"] + [cond]
        status: dict[str, Any] = {
            "observedGeneration": generation,
            "disruptionsAllowed": allowed,
            "currentHealthy": healthy,
            "desiredHealthy": desired,
            "expectedPods": expected,
            "conditions": conditions,
        }
        if disrupted:
            status["disruptedPods"] = disrupted
        if status != old:
            new = copy.deepcopy(pdb)
            new["status"] = status
            return self._write(PDB, new)
        return pdb

    # ------------------------------------------------------------------ faults

    def crashloop_selected_pods(self, namespace: str, label_selector: str, reason: str = "Error") -> int:
        """Mark the pods matching now as crash-looping, terminating with ``reason``; returns how many."""
        match = parse_label_selector(label_selector)
        pods = self.store.list(POD, namespace, where=lambda p: match(p["metadata"].get("labels") or {}))
        self.faults.crashloop_pod_uids.update(p["metadata"]["uid"] for p in pods)
        self.faults.crash_pod_reasons.update((p["metadata"]["uid"], reason) for p in pods)
        return len(pods)
