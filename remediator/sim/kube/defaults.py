"""Defaulting and validation on create/update, the subset of the apiserver's that matters here.

Defaults are those of k8s.io/kubernetes/pkg/apis/{core,apps}/v1/defaults.go (strategy
RollingUpdate 25%/25%, revisionHistoryLimit 10, progressDeadlineSeconds 600, container
terminationMessagePath, imagePullPolicy...). They matter beyond looks: ``kubectl rollout
undo`` copies a ReplicaSet's (defaulted) template back into the Deployment, and the
controller then finds that old ReplicaSet by template equality, as on a real cluster.

Validation covers what a remediation could get wrong: names, replicas >= 0, selectors that
match the template, containers with name and image, immutable selectors, a PodDisruptionBudget's
exclusive minAvailable/maxUnavailable and its unhealthyPodEvictionPolicy. Errors are 422
Invalid Status objects worded as the apiserver's field errors. Called by the HTTP server and
``Emulator.create`` before the store.
"""

from __future__ import annotations

import re
from typing import Any

from remediator.sim.kube.kinds import Kind, invalid
from remediator.sim.kube.selectors import matches_label_selector

_DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


def _image_pull_policy(image: str) -> str:
    last = image.rsplit("/", 1)[-1]
    if "@" in last:
        return "IfNotPresent"
    if ":" not in last or last.endswith(":latest"):
        return "Always"
    return "IfNotPresent"


def default_pod_spec(spec: dict[str, Any]) -> None:
    """In place: core/v1 SetDefaults_PodSpec and SetDefaults_Container."""
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("securityContext", {})
    spec.setdefault("schedulerName", "default-scheduler")
    for field in ("containers", "initContainers"):
        for c in spec.get(field) or []:
            c.setdefault("resources", {})
            c.setdefault("terminationMessagePath", "/dev/termination-log")
            c.setdefault("terminationMessagePolicy", "File")
            c.setdefault("imagePullPolicy", _image_pull_policy(c.get("image") or ""))
            for port in c.get("ports") or []:
                port.setdefault("protocol", "TCP")


def _default_template(obj: dict[str, Any]) -> None:
    template = obj.setdefault("spec", {}).setdefault("template", {})
    template.setdefault("metadata", {})
    default_pod_spec(template.setdefault("spec", {}))


def prune_nulls(value: Any) -> Any:
    """Drop null map entries, as decoding into the Go types (omitempty pointers) does:
    kubectl sends ``"creationTimestamp": null`` inside pod templates."""
    if isinstance(value, dict):
        return {k: prune_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [prune_nulls(v) for v in value]
    return value


def apply_defaults(kind: Kind, obj: dict[str, Any]) -> None:
    """Drop nulls from metadata and spec, then fill defaults in place for ``kind``."""
    for part in ("metadata", "spec"):
        if isinstance(obj.get(part), dict):
            obj[part] = prune_nulls(obj[part])
    meta = obj.setdefault("metadata", {})
    if kind.kind == "Deployment":
        spec = obj.setdefault("spec", {})
        spec.setdefault("replicas", 1)
        strategy = spec.setdefault("strategy", {})
        strategy.setdefault("type", "RollingUpdate")
        if strategy["type"] == "RollingUpdate":
            ru = strategy.setdefault("rollingUpdate", {})
            ru.setdefault("maxUnavailable", "25%")
            ru.setdefault("maxSurge", "25%")
        spec.setdefault("revisionHistoryLimit", 10)
        spec.setdefault("progressDeadlineSeconds", 600)
        _default_template(obj)
    elif kind.kind == "ReplicaSet":
        obj.setdefault("spec", {}).setdefault("replicas", 1)
        _default_template(obj)
    elif kind.kind == "StatefulSet":
        spec = obj.setdefault("spec", {})
        spec.setdefault("replicas", 1)
        spec.setdefault("podManagementPolicy", "OrderedReady")
        us = spec.setdefault("updateStrategy", {"type": "RollingUpdate"})
        if us.get("type") == "RollingUpdate":
            us.setdefault("rollingUpdate", {"partition": 0})
        spec.setdefault("revisionHistoryLimit", 10)
        spec.setdefault("persistentVolumeClaimRetentionPolicy",
                        {"whenDeleted": "Retain", "whenScaled": "Retain"})
        _default_template(obj)
    elif kind.kind == "DaemonSet":
        spec = obj.setdefault("spec", {})
        us = spec.setdefault("updateStrategy", {"type": "RollingUpdate"})
        if us.get("type") == "RollingUpdate":
            ru = us.setdefault("rollingUpdate", {})
            ru.setdefault("maxUnavailable", 1)
            ru.setdefault("maxSurge", 0)
        spec.setdefault("revisionHistoryLimit", 10)
        _default_template(obj)
    elif kind.kind == "Pod":
        spec = obj.setdefault("spec", {})
        default_pod_spec(spec)
        spec.setdefault("serviceAccountName", "default")
        spec.setdefault("serviceAccount", spec["serviceAccountName"])
        spec.setdefault("enableServiceLinks", True)
        spec.setdefault("priority", 0)
        spec.setdefault("preemptionPolicy", "PreemptLowerPriority")
        # The DefaultTolerationSeconds admission plugin.
        tolerations = spec.setdefault("tolerations", [])
        for key in ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"):
            if not any(t.get("key") == key for t in tolerations):
                tolerations.append({"key": key, "operator": "Exists", "effect": "NoExecute",
                                    "tolerationSeconds": 300})
        obj.setdefault("status", {}).setdefault("phase", "Pending")
        obj["status"].setdefault("qosClass", _qos_class(spec))
    elif kind.kind == "Namespace":
        meta.setdefault("labels", {})["kubernetes.io/metadata.name"] = meta.get("name", "")
        obj.setdefault("spec", {"finalizers": ["kubernetes"]})
        obj["status"] = {"phase": "Active"}
    elif kind.kind == "Node":
        obj.setdefault("spec", {})
    elif kind.kind == "PodDisruptionBudget":
        obj.setdefault("spec", {})


def _qos_class(spec: dict[str, Any]) -> str:
    resources = [c.get("resources") or {} for c in spec.get("containers") or []]
    if not any(r.get("requests") or r.get("limits") for r in resources):
        return "BestEffort"
    if all(r.get("limits") and r.get("requests", r.get("limits")) == r.get("limits") for r in resources):
        return "Guaranteed"
    return "Burstable"


def _validate_containers(kind: Kind, name: str, path: str, spec: dict[str, Any] | None) -> None:
    containers = (spec or {}).get("containers")
    if not containers:
        raise invalid(kind, name, f"{path}.containers", None, "", "FieldValueRequired")
    for i, c in enumerate(containers):
        if not c.get("name"):
            raise invalid(kind, name, f"{path}.containers[{i}].name", None, "", "FieldValueRequired")
        if not c.get("image"):
            raise invalid(kind, name, f"{path}.containers[{i}].image", None, "", "FieldValueRequired")


def validate(kind: Kind, obj: dict[str, Any], old: dict[str, Any] | None = None) -> None:
    """Raise ApiError 422 Invalid when ``obj`` would be refused by the apiserver."""
    meta = obj.get("metadata") or {}
    name = meta.get("name") or meta.get("generateName") or ""
    if meta.get("name") and not _DNS1123_SUBDOMAIN.fullmatch(meta["name"]) and kind.kind != "Event":
        raise invalid(kind, name, "metadata.name", meta["name"],
                      "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, "
                      "'-' or '.', and must start and end with an alphanumeric character")
    spec = obj.get("spec") or {}
    if kind.kind in ("Deployment", "ReplicaSet", "StatefulSet", "DaemonSet"):
        replicas = spec.get("replicas", 1)
        if kind.kind != "DaemonSet" and (not isinstance(replicas, int) or replicas < 0):
            raise invalid(kind, name, "spec.replicas", replicas, "must be greater than or equal to 0")
        selector = spec.get("selector")
        if not selector or not (selector.get("matchLabels") or selector.get("matchExpressions")):
            raise invalid(kind, name, "spec.selector", None, "", "FieldValueRequired")
        template = spec.get("template") or {}
        labels = (template.get("metadata") or {}).get("labels") or {}
        if not matches_label_selector(selector, labels):
            raise invalid(kind, name, "spec.template.metadata.labels", labels,
                          "`selector` does not match template `labels`")
        _validate_containers(kind, name, "spec.template.spec", template.get("spec"))
        if old is not None and (old.get("spec") or {}).get("selector") != selector:
            raise invalid(kind, name, "spec.selector", selector, "field is immutable")
    elif kind.kind == "Pod":
        _validate_containers(kind, name, "spec", spec)
        if old is not None:
            old_spec = old.get("spec") or {}
            if [c.get("name") for c in spec.get("containers") or []] != [
                    c.get("name") for c in old_spec.get("containers") or []]:
                raise invalid(kind, name, "spec", "", "pod updates may not change fields other than "
                              "`spec.containers[*].image`, `spec.initContainers[*].image`, "
                              "`spec.activeDeadlineSeconds`, `spec.tolerations` (only additions to "
                              "existing tolerations), `spec.terminationGracePeriodSeconds` (allow it "
                              "to be set to 1 if it was previously negative)", "FieldValueForbidden")
    elif kind.kind == "PodDisruptionBudget":
        if "minAvailable" in spec and "maxUnavailable" in spec:
            raise invalid(kind, name, "spec", spec, "minAvailable and maxUnavailable cannot be both set")
        policy = spec.get("unhealthyPodEvictionPolicy")
        if policy is not None and policy not in ("AlwaysAllow", "IfHealthyBudget"):
            # pkg/apis/policy/validation ValidatePodDisruptionBudgetSpec.
            raise invalid(kind, name, "spec.unhealthyPodEvictionPolicy", policy,
                          'supported values: "AlwaysAllow", "IfHealthyBudget"', "FieldValueNotSupported")
