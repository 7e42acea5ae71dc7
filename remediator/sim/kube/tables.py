"""Server-side printing: meta.k8s.io/v1 Table answers for ``kubectl get`` without ``-o json``.

kubectl asks for ``Accept: application/json;as=Table;v=v1;g=meta.k8s.io`` and prints the
columns the apiserver chooses (pkg/printers/internalversion/printers.go); without them it
would show only NAME and AGE. The columns here are those of the real printers for the kinds
served (wide columns have priority 1). Called by the HTTP server for GET requests.
"""

from __future__ import annotations

import time
from typing import Any

from remediator.sim.kube.store import parse_iso


def human_duration(seconds: float) -> str:
    """k8s.io/apimachinery/pkg/util/duration.HumanDuration, as the AGE column shows it."""
    s = int(max(seconds, 0))
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        return f"{minutes}m{s % 60}s" if s % 60 else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = minutes // 60
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    days = hours // 24
    if days < 365 * 2:
        return f"{days}d"
    return f"{days // 365}y"


def _age(obj: dict[str, Any]) -> str:
    created = obj["metadata"].get("creationTimestamp")
    return human_duration(time.time() - parse_iso(created)) if created else "<unknown>"


def _pod_row(p: dict[str, Any]) -> list[Any]:
    st = p.get("status") or {}
    statuses = st.get("containerStatuses") or []
    ready = sum(1 for cs in statuses if cs.get("ready"))
    reason = st.get("phase", "Pending")
    for cs in statuses:
        state = cs.get("state") or {}
        if state.get("waiting", {}).get("reason"):
            reason = state["waiting"]["reason"]
        elif "terminated" in state:
            term = state["terminated"]
            reason = term.get("reason") or (f"Signal:{term['signal']}" if term.get("signal")
                                            else f"ExitCode:{term.get('exitCode', 0)}")
    if p["metadata"].get("deletionTimestamp") and st.get("phase") not in ("Succeeded", "Failed"):
        reason = "Terminating"
    restarts = sum(cs.get("restartCount", 0) for cs in statuses)
    return [p["metadata"]["name"], f"{ready}/{len(p['spec'].get('containers') or [])}", reason, restarts, _age(p),
            st.get("podIP") or "<none>", p["spec"].get("nodeName") or "<none>", "<none>", "<none>"]


def _node_row(n: dict[str, Any]) -> list[Any]:
    conds = {c["type"]: c["status"] for c in (n.get("status") or {}).get("conditions") or []}
    status = {"True": "Ready", "False": "NotReady"}.get(conds.get("Ready", ""), "Unknown")
    if n["spec"].get("unschedulable"):
        status += ",SchedulingDisabled"
    roles = sorted(k.split("/", 1)[1] for k in n["metadata"].get("labels") or {}
                   if k.startswith("node-role.kubernetes.io/"))
    info = (n.get("status") or {}).get("nodeInfo") or {}
    ip = next((a["address"] for a in (n.get("status") or {}).get("addresses") or [] if a["type"] == "InternalIP"),
              "<none>")
    return [n["metadata"]["name"], status, ",".join(roles) or "<none>", _age(n), info.get("kubeletVersion", ""), ip,
            "<none>", info.get("osImage", ""), info.get("kernelVersion", ""), info.get("containerRuntimeVersion", "")]


def _int_or_none(value: Any) -> str:
    return "N/A" if value is None else str(value)


COLUMNS: dict[str, list[tuple[str, str, int]]] = {
    "Pod": [("Name", "string", 0), ("Ready", "string", 0), ("Status", "string", 0), ("Restarts", "string", 0),
            ("Age", "string", 0), ("IP", "string", 1), ("Node", "string", 1), ("Nominated Node", "string", 1),
            ("Readiness Gates", "string", 1)],
    "Deployment": [("Name", "string", 0), ("Ready", "string", 0), ("Up-to-date", "integer", 0),
                   ("Available", "integer", 0), ("Age", "string", 0), ("Containers", "string", 1),
                   ("Images", "string", 1), ("Selector", "string", 1)],
    "ReplicaSet": [("Name", "string", 0), ("Desired", "integer", 0), ("Current", "integer", 0),
                   ("Ready", "integer", 0), ("Age", "string", 0), ("Containers", "string", 1),
                   ("Images", "string", 1), ("Selector", "string", 1)],
    "StatefulSet": [("Name", "string", 0), ("Ready", "string", 0), ("Age", "string", 0),
                    ("Containers", "string", 1), ("Images", "string", 1)],
    "DaemonSet": [("Name", "string", 0), ("Desired", "integer", 0), ("Current", "integer", 0),
                  ("Ready", "integer", 0), ("Up-to-date", "integer", 0), ("Available", "integer", 0),
                  ("Node Selector", "string", 0), ("Age", "string", 0), ("Containers", "string", 1),
                  ("Images", "string", 1), ("Selector", "string", 1)],
    "Node": [("Name", "string", 0), ("Status", "string", 0), ("Roles", "string", 0), ("Age", "string", 0),
             ("Version", "string", 0), ("Internal-IP", "string", 1), ("External-IP", "string", 1),
             ("OS-Image", "string", 1), ("Kernel-Version", "string", 1), ("Container-Runtime", "string", 1)],
    "Namespace": [("Name", "string", 0), ("Status", "string", 0), ("Age", "string", 0)],
    "PodDisruptionBudget": [("Name", "string", 0), ("Min Available", "string", 0),
                            ("Max Unavailable", "string", 0), ("Allowed Disruptions", "integer", 0),
                            ("Age", "string", 0)],
    "Event": [("Last Seen", "string", 0), ("Type", "string", 0), ("Reason", "string", 0),
              ("Object", "string", 0), ("Message", "string", 0)],
    "ControllerRevision": [("Name", "string", 0), ("Controller", "string", 0), ("Revision", "integer", 0),
                           ("Age", "string", 0)],
}


def _workload_extra(obj: dict[str, Any]) -> list[str]:
    containers = obj["spec"]["template"]["spec"].get("containers") or []
    selector = obj["spec"].get("selector") or {}
    sel = ",".join(f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items()))
    return [",".join(c["name"] for c in containers), ",".join(c.get("image", "") for c in containers), sel]


def _row(kind: str, o: dict[str, Any]) -> list[Any]:
    st = o.get("status") or {}
    spec = o.get("spec") or {}
    name = o["metadata"]["name"]
    if kind == "Pod":
        return _pod_row(o)
    if kind == "Node":
        return _node_row(o)
    if kind == "Deployment":
        return [name, f"{st.get('readyReplicas', 0)}/{spec.get('replicas', 1)}", st.get("updatedReplicas", 0),
                st.get("availableReplicas", 0), _age(o), *_workload_extra(o)]
    if kind == "ReplicaSet":
        return [name, spec.get("replicas", 1), st.get("replicas", 0), st.get("readyReplicas", 0), _age(o),
                *_workload_extra(o)]
    if kind == "StatefulSet":
        return [name, f"{st.get('readyReplicas', 0)}/{spec.get('replicas', 1)}", _age(o),
                *_workload_extra(o)[:2]]
    if kind == "DaemonSet":
        node_selector = ",".join(f"{k}={v}" for k, v in sorted(
            (spec["template"]["spec"].get("nodeSelector") or {}).items())) or "<none>"
        return [name, st.get("desiredNumberScheduled", 0), st.get("currentNumberScheduled", 0),
                st.get("numberReady", 0), st.get("updatedNumberScheduled", 0), st.get("numberAvailable", 0),
                node_selector, _age(o), *_workload_extra(o)]
    if kind == "Namespace":
        return [name, st.get("phase", "Active"), _age(o)]
    if kind == "PodDisruptionBudget":
        return [name, _int_or_none(spec.get("minAvailable")), _int_or_none(spec.get("maxUnavailable")),
                st.get("disruptionsAllowed", 0), _age(o)]
    if kind == "Event":
        io = o.get("involvedObject") or {}
        last = o.get("lastTimestamp") or o["metadata"].get("creationTimestamp")
        return [human_duration(time.time() - parse_iso(last)) if last else "<unknown>", o.get("type", ""),
                o.get("reason", ""), f"{io.get('kind', '').lower()}/{io.get('name', '')}", o.get("message", "")]
    if kind == "ControllerRevision":
        ref = next((r for r in o["metadata"].get("ownerReferences") or [] if r.get("controller")), None)
        return [name, f"{ref['kind'].lower()}.apps/{ref['name']}" if ref else "<none>", o.get("revision", 0), _age(o)]
    return [name, _age(o)]


def as_table(body: dict[str, Any]) -> dict[str, Any]:
    """A Table for a list or single-object response body (other bodies are returned as they are)."""
    kind = body.get("kind", "")
    if kind.endswith("List"):
        item_kind, items, api_version = kind[:-4], body.get("items") or [], body.get("apiVersion", "v1")
    elif kind in COLUMNS:
        item_kind, items, api_version = kind, [body], body.get("apiVersion", "v1")
    else:
        return body
    columns = COLUMNS.get(item_kind, [("Name", "string", 0), ("Age", "string", 0)])
    rows = []
    for item in items:
        obj = {"kind": item_kind, "apiVersion": api_version, **item}
        rows.append({"cells": _row(item_kind, obj), "object": obj})
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": (body.get("metadata") or {}).get("resourceVersion", "")},
        "columnDefinitions": [{"name": n, "type": t, "format": "name" if n == "Name" else "", "description": "",
                               "priority": pr} for n, t, pr in columns],
        "rows": rows,
    }
