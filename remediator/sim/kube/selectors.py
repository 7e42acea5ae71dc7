"""Label and field selectors, as the apiserver parses ``?labelSelector=`` and ``?fieldSelector=``.

Label selector syntax is k8s.io/apimachinery/pkg/labels (``a=b``, ``a==b``, ``a!=b``,
``a in (x,y)``, ``a notin (x)``, ``a``, ``!a``, comma meaning AND); field selectors are
k8s.io/apimachinery/pkg/fields (``=``, ``==``, ``!=``) over the fields the apiserver
indexes for the kinds served here (metadata.name, metadata.namespace, spec.nodeName,
status.phase, plus involvedObject.* for Events and spec.unschedulable for Nodes).
``matches_label_selector`` evaluates a metav1.LabelSelector (matchLabels/matchExpressions),
as Deployments, ReplicaSets and PodDisruptionBudgets use. Called by the store and controllers.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from remediator.sim.kube.kinds import bad_request

LabelPredicate = Callable[[Mapping[str, str]], bool]

_TERM = re.compile(
    r"""\s*(?:
        (?P<notexists>!\s*(?P<nkey>[A-Za-z0-9._/-]+))
      | (?P<key>[A-Za-z0-9._/-]+)\s*
        (?:
            (?P<setop>\b(?:in|notin)\b)\s*\((?P<values>[^)]*)\)
          | (?P<op>==|!=|=)\s*(?P<value>[A-Za-z0-9._-]*)
        )?
    )\s*(?:,|$)""",
    re.VERBOSE,
)


def parse_label_selector(text: str | None) -> LabelPredicate:
    """Compile a label selector string; an empty one matches everything.

    Raises ApiError 400 BadRequest on bad syntax, as the apiserver does.
    """
    if not text or not text.strip():
        return lambda labels: True
    preds: list[LabelPredicate] = []
    pos = 0
    while pos < len(text):
        m = _TERM.match(text, pos)
        if not m or m.end() == pos:
            raise bad_request(f"unable to parse requirement: found '{text[pos:]}', expected: identifier")
        pos = m.end()
        if m.group("notexists"):
            key = m.group("nkey")
            preds.append(lambda lb, k=key: k not in lb)
        elif m.group("setop"):
            key, values = m.group("key"), {v.strip() for v in m.group("values").split(",") if v.strip()}
            if m.group("setop") == "in":
                preds.append(lambda lb, k=key, vs=values: lb.get(k) in vs)
            else:
                preds.append(lambda lb, k=key, vs=values: lb.get(k) not in vs)
        elif m.group("op"):
            key, op, value = m.group("key"), m.group("op"), m.group("value")
            if op == "!=":
                preds.append(lambda lb, k=key, v=value: lb.get(k) != v)
            else:
                preds.append(lambda lb, k=key, v=value: lb.get(k) == v)
        else:
            key = m.group("key")
            preds.append(lambda lb, k=key: k in lb)
    return lambda labels: all(p(labels) for p in preds)


def _field_value(obj: dict[str, Any], path: str) -> str | None:
    cur: Any = obj
    for part in path.split("."):
        if not isinstance(cur, dict):
            return None
        cur = cur.get(part)
    if cur is None:
        # Absent fields compare as the empty string (e.g. spec.nodeName= finds unscheduled pods).
        return ""
    if isinstance(cur, bool):
        return "true" if cur else "false"
    return str(cur)


SUPPORTED_FIELDS: dict[str, set[str]] = {
    "Pod": {"spec.nodeName", "status.phase", "spec.restartPolicy", "spec.schedulerName",
            "spec.serviceAccountName", "status.podIP", "status.nominatedNodeName"},
    "Node": {"spec.unschedulable"},
    "Event": {"involvedObject.kind", "involvedObject.namespace", "involvedObject.name",
              "involvedObject.uid", "involvedObject.apiVersion", "involvedObject.resourceVersion",
              "involvedObject.fieldPath", "reason", "reportingComponent", "source", "type"},
    "ReplicaSet": {"status.replicas"},
}


def parse_field_selector(text: str | None, kind: str) -> Callable[[dict[str, Any]], bool]:
    """Compile a field selector for objects of ``kind``.

    Raises ApiError 400 for bad syntax or a field the apiserver does not index for that kind
    (its message: ``field label not supported: spec.foo``).
    """
    if not text or not text.strip():
        return lambda obj: True
    preds: list[Callable[[dict[str, Any]], bool]] = []
    allowed = {"metadata.name", "metadata.namespace"} | SUPPORTED_FIELDS.get(kind, set())
    for term in text.split(","):
        term = term.strip()
        if not term:
            continue
        m = re.fullmatch(r"([A-Za-z0-9._]+)\s*(==|!=|=)\s*(.*)", term)
        if not m:
            raise bad_request(f"invalid selector: '{text}'; can't understand '{term}'")
        key, op, value = m.groups()
        if key not in allowed:
            raise bad_request(f"field label not supported: {key}")
        if op == "!=":
            preds.append(lambda o, k=key, v=value: _field_value(o, k) != v)
        else:
            preds.append(lambda o, k=key, v=value: _field_value(o, k) == v)
    return lambda obj: all(p(obj) for p in preds)


def matches_label_selector(selector: dict[str, Any] | None, labels: Mapping[str, str] | None) -> bool:
    """Evaluate a metav1.LabelSelector. A None selector matches nothing and an empty one
    everything, as metav1.LabelSelectorAsSelector does."""
    if selector is None:
        return False
    labels = labels or {}
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key"), expr.get("operator"), set(expr.get("values") or [])
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def label_selector_string(selector: dict[str, Any] | None) -> str:
    """The string form of a metav1.LabelSelector (as Scale.status.selector carries it)."""
    if not selector:
        return ""
    parts = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key"), expr.get("operator"), sorted(expr.get("values") or [])
        if op == "In":
            parts.append(f"{key} in ({','.join(values)})")
        elif op == "NotIn":
            parts.append(f"{key} notin ({','.join(values)})")
        elif op == "Exists":
            parts.append(key)
        elif op == "DoesNotExist":
            parts.append(f"!{key}")
    return ",".join(parts)
