"""The resource kinds the emulator serves, their discovery documents and apiserver errors.

Used by the store (to key objects), by the HTTP server (to route ``/api/v1/...`` and
``/apis/{group}/{version}/...`` paths and answer discovery) and by the controllers.

The discovery documents are the legacy (unaggregated) ones: kubectl first asks for
``apidiscovery.k8s.io/v2`` aggregated discovery through its Accept header, sees a plain
``application/json`` answer and falls back to one request per group version, as it does
against any apiserver older than 1.26.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

KUBERNETES_VERSION = {
    "major": "1",
    "minor": "32",
    "gitVersion": "v1.32.4-remediator-emulator",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2025-04-22T00:00:00Z",
    "goVersion": "go1.23.8",
    "compiler": "gc",
    "platform": "linux/amd64",
}


@dataclass(frozen=True)
class Kind:
    """One served resource: ``group`` is "" for the core group; ``plural`` is the URL segment."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    subresources: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    verbs: tuple[str, ...] = (
        "create", "delete", "deletecollection", "get", "list", "patch", "update", "watch",
    )

    @property
    def api_version(self) -> str:
        """``v1`` or ``apps/v1``."""
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def qualified(self) -> str:
        """Resource name as the apiserver prints it in errors: ``pods``, ``deployments.apps``."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def has_status(self) -> bool:
        return "status" in self.subresources


KINDS: tuple[Kind, ...] = (
    Kind("", "v1", "namespaces", "Namespace", False, ("ns",), ("status", "finalize"),
         verbs=("create", "delete", "get", "list", "patch", "update", "watch")),
    Kind("", "v1", "nodes", "Node", False, ("no",), ("status",)),
    Kind("", "v1", "pods", "Pod", True, ("po",), ("status", "eviction", "log"), ("all",)),
    Kind("", "v1", "events", "Event", True, ("ev",)),
    Kind("apps", "v1", "deployments", "Deployment", True, ("deploy",), ("scale", "status"), ("all",)),
    Kind("apps", "v1", "replicasets", "ReplicaSet", True, ("rs",), ("scale", "status"), ("all",)),
    Kind("apps", "v1", "statefulsets", "StatefulSet", True, ("sts",), ("scale", "status"), ("all",)),
    Kind("apps", "v1", "daemonsets", "DaemonSet", True, ("ds",), ("status",), ("all",)),
    Kind("apps", "v1", "controllerrevisions", "ControllerRevision", True),
    Kind("policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget", True, ("pdb",), ("status",)),
)

BY_KIND: dict[str, Kind] = {k.kind: k for k in KINDS}
BY_PATH: dict[tuple[str, str, str], Kind] = {(k.group, k.version, k.plural): k for k in KINDS}

# Group versions served besides those of KINDS: autoscaling/v1 only carries the Scale
# subresource kind, and policy/v1 the Eviction one.
GROUP_VERSIONS: dict[str, list[str]] = {"apps": ["v1"], "policy": ["v1"], "autoscaling": ["v1"]}


def resolve_kind(name: str) -> Kind:
    """Find a Kind by kind, plural, singular or short name, any case (``deploy``, ``Deployment``).

    Raises KeyError with the list of known kinds.
    """
    low = name.lower()
    for k in KINDS:
        if low in (k.kind.lower(), k.plural, *k.short_names):
            return k
    raise KeyError(f"unknown kind {name!r}; known: {', '.join(k.kind for k in KINDS)}")


def api_versions() -> dict[str, Any]:
    """``GET /api``: APIVersions."""
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1:6443"}],
    }


def _group(name: str) -> dict[str, Any]:
    versions = [{"groupVersion": f"{name}/{v}", "version": v} for v in GROUP_VERSIONS[name]]
    return {"name": name, "versions": versions, "preferredVersion": versions[0]}


def api_group_list() -> dict[str, Any]:
    """``GET /apis``: APIGroupList."""
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [_group(g) for g in GROUP_VERSIONS]}


def api_group(name: str) -> dict[str, Any] | None:
    """``GET /apis/{group}``: APIGroup, None if the group is not served."""
    if name not in GROUP_VERSIONS:
        return None
    return {"kind": "APIGroup", "apiVersion": "v1", **_group(name)}


def _entry(k: Kind) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": k.plural,
        "singularName": k.kind.lower(),
        "namespaced": k.namespaced,
        "kind": k.kind,
        "verbs": list(k.verbs),
    }
    if k.short_names:
        entry["shortNames"] = list(k.short_names)
    if k.categories:
        entry["categories"] = list(k.categories)
    return entry


def _sub_entry(k: Kind, sub: str) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": f"{k.plural}/{sub}", "singularName": "", "namespaced": k.namespaced}
    if sub == "scale":
        entry.update(group="autoscaling", version="v1", kind="Scale", verbs=["get", "patch", "update"])
    elif sub == "eviction":
        # kubectl drain (CheckEvictionSupport) looks for exactly this entry, with group and version.
        entry.update(group="policy", version="v1", kind="Eviction", verbs=["create"])
    elif sub == "log":
        entry.update(kind="Pod", verbs=["get"])
    elif sub == "finalize":
        entry.update(kind=k.kind, verbs=["update"])
    else:
        entry.update(kind=k.kind, verbs=["get", "patch", "update"])
    return entry


def api_resource_list(group: str, version: str) -> dict[str, Any] | None:
    """``GET /api/v1`` or ``/apis/{group}/{version}``: APIResourceList, None if not served."""
    if group and version not in GROUP_VERSIONS.get(group, []):
        return None
    if not group and version != "v1":
        return None
    resources: list[dict[str, Any]] = []
    for k in KINDS:
        if k.group == group and k.version == version:
            resources.append(_entry(k))
            resources.extend(_sub_entry(k, s) for s in k.subresources)
    gv = f"{group}/{version}" if group else version
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}


# --------------------------------------------------------------------------- errors


@dataclass
class ApiError(Exception):
    """An apiserver error answered as a metav1.Status (k8s.io/apimachinery/pkg/api/errors)."""

    code: int
    reason: str
    message: str
    details: dict[str, Any] = field(default_factory=dict)

    def status(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
        }
        if not self.reason:  # StatusReasonUnknown is "", left out (omitempty)
            del body["reason"]
        if self.details:
            body["details"] = self.details
        body["code"] = self.code  # metav1.Status field order: details, then code
        return body

    def __str__(self) -> str:
        return f"{self.code} {self.reason}: {self.message}"


def _details(k: Kind, name: str) -> dict[str, Any]:
    details: dict[str, Any] = {"name": name, "kind": k.plural}
    if k.group:
        details["group"] = k.group
    return details


def not_found(k: Kind, name: str) -> ApiError:
    return ApiError(404, "NotFound", f'{k.qualified} "{name}" not found', _details(k, name))


def already_exists(k: Kind, name: str) -> ApiError:
    return ApiError(409, "AlreadyExists", f'{k.qualified} "{name}" already exists', _details(k, name))


def conflict(k: Kind, name: str, why: str | None = None) -> ApiError:
    why = why or "the object has been modified; please apply your changes to the latest version and try again"
    return ApiError(409, "Conflict", f'Operation cannot be fulfilled on {k.qualified} "{name}": {why}',
                    _details(k, name))


def invalid(k: Kind, name: str, field_path: str, value: Any, detail: str,
            cause_type: str = "FieldValueInvalid") -> ApiError:
    """422 Invalid, as apimachinery's NewInvalid with one field error."""
    shown = json.dumps(value) if isinstance(value, str) else (
        "null" if value is None else (json.dumps(value) if isinstance(value, (dict, list)) else str(value)))
    if cause_type == "FieldValueRequired":
        text = f"Required value: {detail}" if detail else "Required value"
    elif cause_type == "FieldValueForbidden":
        text = f"Forbidden: {detail}"
    elif cause_type == "FieldValueNotSupported":
        text = f"Unsupported value: {shown}: {detail}"
    else:
        text = f"Invalid value: {shown}: {detail}"
    details = {"name": name, "kind": k.kind,
               "causes": [{"reason": cause_type, "message": text, "field": field_path}]}
    if k.group:
        details["group"] = k.group
    qual = f"{k.kind}.{k.group}" if k.group else k.kind
    return ApiError(422, "Invalid", f'{qual} "{name}" is invalid: {field_path}: {text}', details)


def go_value(value: Any) -> str:
    """A bad value as field.Error.ErrorBody prints it: strings quoted (``%q``), a string
    slice as ``%#v`` (``[]string{"a", "b"}``), null as ``null``, other scalars as ``%v``."""
    if value is None:
        return "null"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[]string{" + ", ".join(json.dumps(str(v), ensure_ascii=False) for v in value) + "}"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def invalid_options(options_kind: str, field_path: str, value: Any, detail: str,
                    cause_type: str = "FieldValueNotSupported") -> ApiError:
    """422 for invalid request options, as the REST handlers answer a failed
    ``ValidateCreateOptions``/``ValidateUpdateOptions``/``ValidatePatchOptions``/
    ``ValidateDeleteOptions`` (k8s.io/apimachinery pkg/apis/meta/v1/validation):
    ``errors.NewInvalid(GroupKind{"meta.k8s.io", options_kind}, "", errs)``, e.g.
    ``PatchOptions.meta.k8s.io "" is invalid: dryRun: Unsupported value: []string{"foo"}:
    supported values: "All"``."""
    kind_text = "Unsupported value" if cause_type == "FieldValueNotSupported" else "Invalid value"
    text = f"{kind_text}: {go_value(value)}: {detail}"
    return ApiError(422, "Invalid", f'{options_kind}.meta.k8s.io "" is invalid: {field_path}: {text}', {
        "group": "meta.k8s.io", "kind": options_kind,
        "causes": [{"reason": cause_type, "message": text, "field": field_path}]})


def dry_run_of(values: list[str] | None, options_kind: str) -> bool:
    """Whether a request's ``dryRun`` parameter values make it a dry run (apiserver
    util/dryrun.IsDryRun: any value), after the handler's ValidateDryRun: only ``All`` is
    supported; anything else is 422 Invalid for ``options_kind``."""
    if not values:
        return False
    if any(v != "All" for v in values):
        raise invalid_options(options_kind, "dryRun", list(values), 'supported values: "All"')
    return True


def forbidden(k: Kind, name: str, why: str) -> ApiError:
    """403 Forbidden, as apimachinery's NewForbidden for ``k`` (e.g. a PodDisruptionBudget)."""
    return ApiError(403, "Forbidden", f'{k.kind.lower()}.{k.group} "{name}" is forbidden: {why}' if k.group
                    else f'{k.kind.lower()} "{name}" is forbidden: {why}',
                    {"name": name, "group": k.group, "kind": k.kind.lower()} if k.group
                    else {"name": name, "kind": k.kind.lower()})


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def method_not_allowed() -> ApiError:
    return ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")


def no_route() -> ApiError:
    return ApiError(404, "NotFound", "the server could not find the requested resource")


REASON_BY_CODE = {
    400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound", 405: "MethodNotAllowed",
    409: "Conflict", 410: "Expired", 415: "UnsupportedMediaType", 422: "Invalid",
    429: "TooManyRequests", 500: "InternalError", 503: "ServiceUnavailable", 504: "Timeout",
}
