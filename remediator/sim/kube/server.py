"""The emulator's HTTP side: the Kubernetes REST API, the admin API and /metrics.

``Api`` holds the apiserver's request semantics (routing of ``/api/v1/...`` and
``/apis/{group}/{version}/...`` paths, discovery, list/watch with label and field
selectors, create/update/patch/delete with DeleteOptions and propagationPolicy, graceful pod
deletion (gracePeriodSeconds, pkg/registry/core/pod/strategy.go), the scale, status and
eviction subresources (pkg/registry/core/pod/storage/eviction.go), server-side dry run
(``dryRun=All`` on any write: every check and the same answer, nothing persisted; any other
value 422, as the handlers' ValidateDryRun), metav1.Status errors).
``Handler`` is the ``http.server`` request handler: HTTP/1.1 keep-alive with
Content-Length, chunked transfer for watches, Nagle disabled (else each small response waits
~40 ms for a delayed ACK), service-account tokens authorized by their RBAC rules before
anything else (401/403, remediator.sim.kube.auth), every API request recorded. Built and
started by ``Emulator``.
"""

from __future__ import annotations

import copy
import json
import re
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from remediator.sim.kube import kinds
from remediator.sim.kube.controllers import (
    POD,
    PDB,
    pod_ready,
    pod_terminal,
    pod_terminating,
    update_disruption_allowed_condition,
)
from remediator.sim.kube.defaults import apply_defaults, validate
from remediator.sim.kube.kinds import (
    BY_PATH,
    REASON_BY_CODE,
    ApiError,
    Kind,
    bad_request,
    conflict,
    forbidden,
    method_not_allowed,
    no_route,
)
from remediator.sim.kube.patch import apply_patch, unsupported_media_type
from remediator.sim.kube.tables import as_table
from remediator.sim.kube.store import now_iso
from remediator.sim.kube.selectors import (
    label_selector_string,
    matches_label_selector,
    parse_field_selector,
    parse_label_selector,
)

if TYPE_CHECKING:
    from remediator.sim.kube.cluster import Emulator

# Deleting these returns the deleted object; others a Status (genericregistry ReturnDeletedObject).
RETURNS_DELETED_OBJECT = {"Pod", "Namespace", "Event"}
MAX_DISRUPTED_POD_SIZE = 2000  # eviction.go MaxDisruptedPodSize
WATCH_POLL_SECONDS = 0.5


@dataclass(frozen=True)
class RecordedRequest:
    """One API request as the emulator received it.

    ``path`` has no query string; ``query`` maps each parameter to its last value; ``body``
    is the parsed JSON body (None when absent or not JSON); ``status`` is the HTTP status
    answered; ``at`` is ``time.time()`` on receipt; ``user`` is the service account whose
    token it carried (``system:serviceaccount:<ns>:<name>``, remediator.sim.kube.auth), None
    for the admin (no token, or the placeholder token).
    """

    method: str
    path: str
    query: dict[str, str]
    content_type: str | None
    body: Any
    status: int
    at: float
    user: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "path": self.path, "query": self.query, "content_type": self.content_type,
                "body": self.body, "status": self.status, "at": self.at, "user": self.user}


@dataclass
class Response:
    status: int
    body: Any = None
    content_type: str = "application/json"
    stream: Iterator[dict[str, Any]] | None = None


class Api:
    """The apiserver's REST semantics over the emulator's store (see the module docstring)."""

    def __init__(self, emulator: Emulator) -> None:
        self.emu = emulator
        self.store = emulator.store
        self.controllers = emulator.controllers

    # ------------------------------------------------------------------ routing

    def handle(self, method: str, path: str, query: dict[str, str], body: Any, content_type: str | None,
               accept: str = "", dry_run: list[str] | None = None) -> Response:
        """Answer one API request. ``query`` holds each parameter's last value; ``dry_run``
        every value of the ``dryRun`` parameter (a list, as metav1 options decode it; None
        when absent). ``body`` None means the request had none."""
        response = self._handle(method, path, query, body, content_type, dry_run)
        if "as=Table" in accept and response.stream is None and isinstance(response.body, dict) \
                and response.status == 200 and method == "GET":
            return Response(200, as_table(response.body))
        return response

    def _handle(self, method: str, path: str, query: dict[str, str], body: Any, content_type: str | None,
                dry_run: list[str] | None) -> Response:
        parts = [p for p in path.split("/") if p]
        if path == "/version" or path == "/version/":
            return Response(200, kinds.KUBERNETES_VERSION)
        if path in ("/healthz", "/readyz", "/livez"):
            return Response(200, "ok", "text/plain; charset=utf-8")
        if not parts or parts[0] not in ("api", "apis"):
            raise no_route()
        if parts[0] == "api":
            if len(parts) == 1:
                return Response(200, kinds.api_versions())
            group, version, rest = "", parts[1], parts[2:]
        else:
            if len(parts) == 1:
                return Response(200, kinds.api_group_list())
            if len(parts) == 2:
                doc = kinds.api_group(parts[1])
                if doc is None:
                    raise no_route()
                return Response(200, doc)
            group, version, rest = parts[1], parts[2], parts[3:]
        if not rest:
            if method != "GET":
                raise method_not_allowed()
            doc = kinds.api_resource_list(group, version)
            if doc is None:
                raise no_route()
            return Response(200, doc)
        namespace: str | None = None
        if rest[0] == "namespaces" and len(rest) >= 3 and not (len(rest) == 3 and rest[2] in ("status", "finalize")):
            namespace, rest = rest[1], rest[2:]
        kind = BY_PATH.get((group, version, rest[0]))
        if kind is None or len(rest) > 3 or (namespace is not None and not kind.namespaced):
            raise no_route()
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else None
        if sub is not None and sub not in kind.subresources:
            raise no_route()
        if name is not None and kind.namespaced and namespace is None:
            raise no_route()
        if name is None:
            return self._collection(method, kind, namespace, query, body, dry_run)
        return self._item(method, kind, namespace, name, sub, query, body, content_type, dry_run)

    def _admit_create(self, kind: Kind, namespace: str | None, name: str) -> None:
        """NamespaceLifecycle admission (plugin/pkg/admission/namespace/lifecycle): no new
        content, evictions included, in a namespace being deleted: 403 with the
        ``NamespaceTerminating`` cause kubectl drain looks for."""
        if kind.namespaced and self.controllers.namespace_terminating(namespace):
            err = kinds.forbidden(kind, name, f"unable to create new content in namespace {namespace} because it is being terminated")
            err.details["causes"] = [{
                "type": "NamespaceTerminating", "message": f"namespace {namespace} is being terminated",
                "field": "metadata.namespace",
            }]
            raise err

    def _collection(self, method: str, kind: Kind, namespace: str | None, query: dict[str, str],
                    body: Any, dry_run: list[str] | None) -> Response:
        if method == "GET":
            if query.get("watch") in ("true", "1"):
                return Response(200, stream=self._watch(kind, namespace, query))
            return Response(200, self._list(kind, namespace, query))
        if method == "POST":
            if kind.namespaced and namespace is None:
                raise method_not_allowed()
            dry = kinds.dry_run_of(dry_run, "CreateOptions")
            if not isinstance(body, dict):
                raise bad_request("Object 'Kind' is missing in 'null'" if body is None else "invalid object")
            self._admit_create(kind, namespace, (body or {}).get("metadata", {}).get("name", "") if isinstance(body, dict) else "")
            return Response(201, self.create(kind, body, namespace, dry_run=dry))
        if method == "DELETE":
            return Response(200, self._delete_collection(kind, namespace, query, self.delete_options(body, query, dry_run)))
        raise method_not_allowed()

    def _item(self, method: str, kind: Kind, namespace: str | None, name: str, sub: str | None,
              query: dict[str, str], body: Any, content_type: str | None, dry_run: list[str] | None) -> Response:
        if sub == "log":
            if method != "GET":
                raise method_not_allowed()
            return self._log(namespace or "", name, query)
        if sub == "eviction":
            if method != "POST":
                raise method_not_allowed()
            kinds.dry_run_of(dry_run, "CreateOptions")
            self._admit_create(kind, namespace, name)
            return self._evict(namespace or "", name, body, dry_run)
        if sub == "scale":
            return self._scale(method, kind, namespace, name, body, content_type, dry_run)
        if sub == "finalize":
            if method != "PUT":
                raise method_not_allowed()
            kinds.dry_run_of(dry_run, "UpdateOptions")
            return Response(200, copy.deepcopy(self.store.must_get(kind, None, name)))
        if method == "GET":
            return Response(200, copy.deepcopy(self.store.must_get(kind, namespace, name)))
        if method == "PUT":
            dry = kinds.dry_run_of(dry_run, "UpdateOptions")
            if not isinstance(body, dict):
                raise bad_request("invalid object")
            return Response(200, self.update(kind, namespace, name, body, sub, dry_run=dry))
        if method == "PATCH":
            check_patch_type(content_type)
            dry = kinds.dry_run_of(dry_run, "PatchOptions")
            return Response(200, self.patch(kind, namespace, name, body, content_type, sub, dry_run=dry))
        if method == "DELETE":
            if sub is not None:
                raise method_not_allowed()
            return Response(200, self.delete(kind, namespace, name, self.delete_options(body, query, dry_run)))
        raise method_not_allowed()

    # ------------------------------------------------------------------ reads

    def _selected(self, kind: Kind, query: dict[str, str]):
        labels = parse_label_selector(query.get("labelSelector"))
        fields = parse_field_selector(query.get("fieldSelector"), kind.kind)
        return lambda o: labels(o["metadata"].get("labels") or {}) and fields(o)

    def _list(self, kind: Kind, namespace: str | None, query: dict[str, str]) -> dict[str, Any]:
        where = self._selected(kind, query)
        with self.store.lock:
            items = [copy.deepcopy(o) for o in self.store.list(kind, namespace, where)]
            rv = self.store.resource_version
        for item in items:
            # The apiserver leaves kind/apiVersion out of list items.
            item.pop("kind", None)
            item.pop("apiVersion", None)
        return {"kind": f"{kind.kind}List", "apiVersion": kind.api_version,
                "metadata": {"resourceVersion": rv}, "items": items}

    def _watch(self, kind: Kind, namespace: str | None, query: dict[str, str]) -> Iterator[dict[str, Any]]:
        """Watch events as the apiserver streams them; ends after timeoutSeconds or on stop."""
        where = self._selected(kind, query)
        timeout = float(query.get("timeoutSeconds") or 1800)
        deadline = time.monotonic() + timeout
        rv_text = query.get("resourceVersion") or ""
        initial: list[dict[str, Any]] = []
        with self.store.lock:
            current = int(self.store.resource_version)
            if rv_text in ("", "0") or query.get("sendInitialEvents") == "true":
                initial = [copy.deepcopy(o) for o in self.store.list(kind, namespace, where)]
                start = current
            else:
                try:
                    start = int(rv_text)
                except ValueError:
                    raise bad_request(f'invalid resource version "{rv_text}"') from None
                _, ok = self.store.events_after(start)
                if not ok:
                    raise ApiError(410, "Expired", f"too old resource version: {start} ({current})")

        def stream() -> Iterator[dict[str, Any]]:
            nonlocal start
            for obj in initial:
                yield {"type": "ADDED", "object": obj}
            if query.get("sendInitialEvents") == "true":
                yield {"type": "BOOKMARK", "object": {
                    "kind": kind.kind, "apiVersion": kind.api_version,
                    "metadata": {"resourceVersion": str(start),
                                 "annotations": {"k8s.io/initial-events-end": "true"}}}}
            while not self.emu.stopping and time.monotonic() < deadline:
                with self.store.changed:
                    events, _ = self.store.events_after(start)
                    if not events:
                        self.store.changed.wait(min(WATCH_POLL_SECONDS, max(deadline - time.monotonic(), 0)))
                        events, _ = self.store.events_after(start)
                for rv, kind_name, event_type, obj in events:
                    start = rv
                    if kind_name != kind.kind:
                        continue
                    if namespace is not None and obj["metadata"].get("namespace") != namespace:
                        continue
                    if not where(obj):
                        continue
                    yield {"type": event_type, "object": copy.deepcopy(obj)}

        return stream()

    # ------------------------------------------------------------------ writes

    def create(self, kind: Kind, body: dict[str, Any], namespace: str | None = None, *,
               dry_run: bool = False) -> dict[str, Any]:
        """POST: default, validate, store, then run the controllers once. ``dry_run``: the
        same checks (AlreadyExists, the namespace), and the object as it would be created is
        answered without a resourceVersion; nothing is stored and no controller runs."""
        obj = copy.deepcopy(body)
        meta = obj.setdefault("metadata", {})
        if kind.namespaced and namespace is not None:
            if meta.get("namespace") and meta["namespace"] != namespace:
                raise bad_request("the namespace of the provided object does not match the namespace sent on "
                                  "the request")
            meta["namespace"] = namespace
        for ro in ("uid", "resourceVersion", "creationTimestamp", "generation", "deletionTimestamp"):
            meta.pop(ro, None)
        if body.get("kind") and body["kind"] != kind.kind:
            raise bad_request(f"the API version in the data ({body.get('apiVersion')}) does not match the "
                              f"expected API version ({kind.api_version})" if body.get("apiVersion") != kind.api_version
                              else f"the kind in the data ({body['kind']}) does not match the expected kind")
        apply_defaults(kind, obj)
        validate(kind, obj)
        if kind.kind not in ("Pod", "Namespace", "Node", "Event"):
            obj.pop("status", None)
        if kind.kind == "Node":
            self.emu.fill_node_status(obj)
        if dry_run:
            return self.store.create(kind, obj, dry_run=True)
        if kind.kind == "Pod":
            created = self.controllers.create_pod(obj)
        else:
            created = self.store.create(kind, obj)
        self.controllers.reconcile()
        return copy.deepcopy(self.store.get(kind, created["metadata"].get("namespace"), created["metadata"]["name"])
                             or created)

    def update(self, kind: Kind, namespace: str | None, name: str, body: dict[str, Any],
               sub: str | None = None, *, dry_run: bool = False) -> dict[str, Any]:
        """PUT (optionally to /status). ``dry_run``: every check, then the object as it would
        be stored is answered (its resourceVersion unchanged); nothing is written and no
        controller runs."""
        obj = copy.deepcopy(body)
        meta = obj.setdefault("metadata", {})
        if meta.get("name") and meta["name"] != name:
            raise bad_request(f"the name of the object ({meta['name']}) does not match the name on the URL ({name})")
        if kind.namespaced and meta.get("namespace") and meta["namespace"] != namespace:
            raise bad_request("the namespace of the provided object does not match the namespace sent on the request")
        meta["name"] = name
        if kind.namespaced:
            meta["namespace"] = namespace
        with self.store.lock:
            current = self.store.must_get(kind, namespace, name)
            if sub != "status":
                apply_defaults(kind, obj)
                if kind.kind == "Namespace":
                    obj["status"] = current.get("status")
                validate(kind, obj, current)
            updated = self.store.update(kind, obj, subresource=sub, dry_run=dry_run)
            if dry_run:
                return copy.deepcopy(updated)
            self.controllers.reconcile()
            return copy.deepcopy(self.store.get(kind, namespace, name) or updated)

    def patch(self, kind: Kind, namespace: str | None, name: str, body: Any, content_type: str | None,
              sub: str | None = None, *, dry_run: bool = False) -> dict[str, Any]:
        """PATCH with one of the three patch content types (415 otherwise). ``dry_run`` as
        for ``update``."""
        check_patch_type(content_type)
        with self.store.lock:
            current = self.store.must_get(kind, namespace, name)
            patched = apply_patch(content_type or "", copy.deepcopy(current), body)
            if not isinstance(patched, dict):
                raise bad_request("the patch did not result in an object")
            sent_rv = (patched.get("metadata") or {}).get("resourceVersion")
            if sent_rv and sent_rv != current["metadata"]["resourceVersion"]:
                raise conflict(kind, name)
            patched.setdefault("metadata", {})["resourceVersion"] = current["metadata"]["resourceVersion"]
            patched["metadata"]["name"] = name
            return self.update(kind, namespace, name, patched, sub, dry_run=dry_run)

    def delete_options(self, body: Any, query: dict[str, str], dry_run: list[str] | None) -> dict[str, Any]:
        """The DELETE request's DeleteOptions, as handlers/delete.go reads them: the body when
        there is one (its query is then not read at all), else the query parameters
        (``gracePeriodSeconds``, ``propagationPolicy``, ``orphanDependents``, ``dryRun``);
        then ValidateDeleteOptions. Raises 400 for an unparsable value, 422 Invalid
        (``DeleteOptions.meta.k8s.io ""``) for orphanDependents with propagationPolicy, an
        unsupported propagationPolicy or a dryRun other than ``All``."""
        if body is not None:
            if not isinstance(body, dict):
                raise bad_request("decoded object cannot be converted to DeleteOptions")
            options = copy.deepcopy(body)
        else:
            options = {}
            if query.get("gracePeriodSeconds") not in (None, ""):
                try:
                    options["gracePeriodSeconds"] = int(query["gracePeriodSeconds"])
                except ValueError:
                    raise bad_request(f'invalid gracePeriodSeconds "{query["gracePeriodSeconds"]}"') from None
            if query.get("propagationPolicy"):
                options["propagationPolicy"] = query["propagationPolicy"]
            if query.get("orphanDependents") in ("true", "false"):
                options["orphanDependents"] = query["orphanDependents"] == "true"
            if dry_run is not None:
                options["dryRun"] = list(dry_run)
        policy = options.get("propagationPolicy")
        if options.get("orphanDependents") is not None and policy is not None:
            raise kinds.invalid_options("DeleteOptions", "propagationPolicy", policy,
                                        "orphanDependents and deletionPropagation cannot be both set",
                                        "FieldValueInvalid")
        if policy is not None and policy not in ("Foreground", "Background", "Orphan"):
            raise kinds.invalid_options("DeleteOptions", "propagationPolicy", policy,
                                        'supported values: "Foreground", "Background", "Orphan", "nil"')
        kinds.dry_run_of(options.get("dryRun"), "DeleteOptions")
        return options

    def delete(self, kind: Kind, namespace: str | None, name: str, options: dict[str, Any]) -> dict[str, Any]:
        """DELETE with DeleteOptions (``delete_options``): preconditions and propagationPolicy
        (Background/Foreground delete dependents by ownerReferences, Orphan strips those
        references). A pod is deleted gracefully (``gracePeriodSeconds``, else the pod's
        terminationGracePeriodSeconds; see ``Controllers.delete_pod``) and the answer is the
        pod, terminating, or removed for a grace period of 0. With ``dryRun`` the preconditions
        are checked and the answer is the same, but nothing is deleted: a pod comes back as the
        deletion would mark it, with its resourceVersion unchanged."""
        with self.store.lock:
            current = self.store.must_get(kind, namespace, name)
            pre = options.get("preconditions") or {}
            if pre.get("uid") and pre["uid"] != current["metadata"]["uid"]:
                raise conflict(kind, name, f"Precondition failed: UID in precondition: {pre['uid']}, "
                                           f"UID in object meta: {current['metadata']['uid']}")
            if pre.get("resourceVersion") and pre["resourceVersion"] != current["metadata"]["resourceVersion"]:
                raise conflict(kind, name, f"Precondition failed: ResourceVersion in precondition: "
                                           f"{pre['resourceVersion']}, ResourceVersion in object meta: "
                                           f"{current['metadata']['resourceVersion']}")
            policy = "Orphan" if options.get("orphanDependents") is True else options.get("propagationPolicy")
            grace = options.get("gracePeriodSeconds")
            if options.get("dryRun"):
                deleted = self._dry_run_delete(kind, current, grace)
            else:
                deleted = self.emu.delete_cascading(kind, current, policy or "Background", grace_seconds=grace)
                self.controllers.reconcile()
        if kind.kind in RETURNS_DELETED_OBJECT:
            return deleted
        details = {"name": name, "kind": kind.plural, "uid": current["metadata"]["uid"]}
        if kind.group:
            details["group"] = kind.group
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details}

    def _dry_run_delete(self, kind: Kind, current: dict[str, Any], grace: int | None) -> dict[str, Any]:
        """What a dry-run DELETE answers: the object as the deletion would leave it, unstored."""
        if kind.kind == "Pod":
            return self.controllers.delete_pod(current, grace, dry_run=True)
        would = copy.deepcopy(current)
        if kind.kind == "Namespace" and not would["metadata"].get("deletionTimestamp"):
            would["metadata"]["deletionTimestamp"] = now_iso()
            would.setdefault("status", {})["phase"] = "Terminating"
        return would

    def _delete_collection(self, kind: Kind, namespace: str | None, query: dict[str, str],
                           options: dict[str, Any]) -> dict[str, Any]:
        where = self._selected(kind, query)
        with self.store.lock:
            items = [copy.deepcopy(o) for o in self.store.list(kind, namespace, where)]
            for obj in items:
                self.delete(kind, obj["metadata"].get("namespace"), obj["metadata"]["name"], options)
            rv = self.store.resource_version
        for item in items:
            item.pop("kind", None)
            item.pop("apiVersion", None)
        return {"kind": f"{kind.kind}List", "apiVersion": kind.api_version, "metadata": {"resourceVersion": rv},
                "items": items}

    # ------------------------------------------------------------------ subresources

    def _scale_of(self, kind: Kind, obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj["metadata"]
        return {
            "kind": "Scale",
            "apiVersion": "autoscaling/v1",
            "metadata": {k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
                         if k in meta},
            "spec": {"replicas": obj["spec"].get("replicas", 1)},
            "status": {"replicas": (obj.get("status") or {}).get("replicas", 0),
                       "selector": label_selector_string(obj["spec"].get("selector"))},
        }

    def _scale(self, method: str, kind: Kind, namespace: str | None, name: str, body: Any,
               content_type: str | None, dry_run: list[str] | None) -> Response:
        """The autoscaling/v1 Scale subresource of Deployments, ReplicaSets and StatefulSets.
        With ``dryRun=All`` a write answers the Scale it would leave and changes nothing."""
        if method == "PUT":
            dry = kinds.dry_run_of(dry_run, "UpdateOptions")
        elif method == "PATCH":
            check_patch_type(content_type)
            dry = kinds.dry_run_of(dry_run, "PatchOptions")
        elif method != "GET":
            raise method_not_allowed()
        with self.store.lock:
            current = self.store.must_get(kind, namespace, name)
            scale = self._scale_of(kind, current)
            if method == "GET":
                return Response(200, scale)
            if method == "PUT":
                new_scale = body if isinstance(body, dict) else {}
            else:
                new_scale = apply_patch(content_type or "", scale, body)
            sent_rv = (new_scale.get("metadata") or {}).get("resourceVersion")
            if sent_rv and sent_rv != current["metadata"]["resourceVersion"]:
                raise conflict(kind, name)
            replicas = (new_scale.get("spec") or {}).get("replicas", 0)
            if not isinstance(replicas, int) or replicas < 0:
                error = kinds.invalid(kind, name, "spec.replicas", replicas, "must be greater than or equal to 0")
                error.details["kind"] = "Scale"
                error.details["group"] = "autoscaling"
                error.message = f'Scale.autoscaling "{name}" is invalid: spec.replicas: Invalid value: ' \
                                f"{replicas}: must be greater than or equal to 0"
                raise error
            obj = copy.deepcopy(current)
            obj["spec"]["replicas"] = replicas
            if dry:
                return Response(200, self._scale_of(kind, self.store.update(kind, obj, check_version=False, dry_run=True)))
            self.store.update(kind, obj, check_version=False)
            self.controllers.reconcile()
            return Response(200, self._scale_of(kind, self.store.must_get(kind, namespace, name)))

    def _log(self, namespace: str, name: str, query: dict[str, str]) -> Response:
        """``kubectl logs``: a few synthetic lines per container, and the crash for crash-looping ones."""
        pod = self.store.must_get(POD, namespace, name)
        containers = [c["name"] for c in pod["spec"]["containers"]]
        container = query.get("container") or containers[0]
        if container not in containers:
            raise bad_request(f"container {container} is not valid for pod {name}")
        statuses = {cs["name"]: cs for cs in (pod.get("status") or {}).get("containerStatuses") or []}
        cs = statuses.get(container) or {}
        image = next(c.get("image", "") for c in pod["spec"]["containers"] if c["name"] == container)
        lines = [f"emulated container {container} ({image}) on {pod['spec'].get('nodeName', '<unscheduled>')}"]
        if cs.get("state", {}).get("waiting", {}).get("reason") == "CrashLoopBackOff":
            lines.append("fatal: emulated crash (fault injection), exiting with code 1")
        elif cs.get("ready"):
            lines.append("ready")
        return Response(200, "\n".join(lines) + "\n", "text/plain")

    def _evict(self, namespace: str, name: str, body: Any, dry_run: list[str] | None) -> Response:
        """POST pods/{name}/eviction, as pkg/registry/core/pod/storage/eviction.go.

        A pod that has finished, is Pending or is already being deleted (canIgnorePDB) is
        deleted without consulting budgets: evicting a terminating pod again answers 201 and
        only deletes it again, which may shorten its grace period. Otherwise the one matching
        PodDisruptionBudget decides (more than one: 500): an unready pod is deleted without
        spending the budget under ``unhealthyPodEvictionPolicy: AlwaysAllow``, or under
        IfHealthyBudget (the default) when currentHealthy >= desiredHealthy > 0; else
        checkAndDecrement (429 when no disruption is allowed or the budget's generation is not
        observed yet). The pod then gets the DisruptionTarget condition (EvictionByEvictionAPI)
        and is deleted with the Eviction's deleteOptions (gracefully, see
        ``Controllers.delete_pod``).

        A dry run (``dryRun`` of the request, already validated as CreateOptions, or of the
        Eviction's deleteOptions; eviction.go propagateDryRun: both set and different is a 500)
        runs every check above and answers the same, but neither spends the budget nor
        touches the pod.
        """
        body = body if isinstance(body, dict) else {}
        if (body.get("metadata") or {}).get("name") not in (None, name):
            raise bad_request("name in URL does not match name in Eviction object")
        options = body.get("deleteOptions") or {}
        own = options.get("dryRun") or []
        if own and dry_run and own != dry_run:
            # A plain error in the REST storage: the handler answers 500 with no reason.
            raise ApiError(500, "", f"Non-matching dry-run options in request and content: "
                                    f"[{' '.join(dry_run)}] and [{' '.join(map(str, own))}]")
        dry_run_eviction = bool(own or dry_run)  # util/dryrun.IsDryRun of the propagated options
        with self.store.lock:
            pod = self.store.must_get(POD, namespace, name)
            pre = options.get("preconditions") or {}
            if pre.get("uid") and pre["uid"] != pod["metadata"]["uid"]:
                raise conflict(POD, name, f"Precondition failed: UID in precondition: {pre['uid']}, "
                                          f"UID in object meta: {pod['metadata']['uid']}")
            if pre.get("resourceVersion") and pre["resourceVersion"] != pod["metadata"]["resourceVersion"]:
                raise conflict(POD, name, f"Precondition failed: ResourceVersion in precondition: "
                                          f"{pre['resourceVersion']}, ResourceVersion in object meta: "
                                          f"{pod['metadata']['resourceVersion']}")
            can_ignore_pdb = (pod_terminal(pod) or pod_terminating(pod)
                              or (pod.get("status") or {}).get("phase") == "Pending")
            if not can_ignore_pdb:
                pdbs = [p for p in self.store.list(PDB, namespace)
                        if matches_label_selector(p["spec"].get("selector"), pod["metadata"].get("labels"))]
                if len(pdbs) > 1:
                    raise ApiError(500, "InternalError",
                                   "This pod has more than one PodDisruptionBudget, which the eviction subresource "
                                   "does not support.")
                if pdbs:
                    pdb = self.controllers.pdb_status(pdbs[0])
                    if not self._unhealthy_may_go(pod, pdb):
                        self._check_and_decrement(pod, pdb, dry_run_eviction)
            if not dry_run_eviction:
                self._add_condition_and_delete(pod, options.get("gracePeriodSeconds"))
                self.controllers.reconcile()
        return Response(201, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"})

    @staticmethod
    def _unhealthy_may_go(pod: dict[str, Any], pdb: dict[str, Any]) -> bool:
        """An unready pod deleted without spending the budget: AlwaysAllow, or IfHealthyBudget
        with the budget met (it does not count towards currentHealthy)."""
        if pod_ready(pod):
            return False
        if pdb["spec"].get("unhealthyPodEvictionPolicy") == "AlwaysAllow":
            return True
        status = pdb.get("status") or {}
        return status.get("currentHealthy", 0) >= status.get("desiredHealthy", 0) > 0

    def _add_condition_and_delete(self, pod: dict[str, Any], grace_seconds: int | None) -> None:
        """eviction.go addConditionAndDeletePod: DisruptionTarget=True (EvictionByEvictionAPI),
        as apipod.UpdatePodCondition sets it, then the pod's DELETE."""
        new = copy.deepcopy(pod)
        conditions = new.setdefault("status", {}).setdefault("conditions", [])
        cur = next((c for c in conditions if c.get("type") == "DisruptionTarget"), None)
        cond = {"type": "DisruptionTarget", "status": "True", "lastProbeTime": None,
                "lastTransitionTime": cur["lastTransitionTime"] if cur and cur.get("status") == "True" else now_iso(),
                "reason": "EvictionByEvictionAPI", "message": "Eviction API: evicting"}
        if cur is None:
            conditions.append(cond)
        else:
            conditions[conditions.index(cur)] = cond
        self.emu.delete_cascading(POD, self.store.put(POD, new), "Background", grace_seconds=grace_seconds)

    def _check_and_decrement(self, pod: dict[str, Any], pdb: dict[str, Any], dry_run: bool) -> None:
        """eviction.go checkAndDecrement."""
        status = pdb.get("status") or {}
        pdb_name = pdb["metadata"]["name"]
        if status.get("observedGeneration", 0) < pdb["metadata"].get("generation", 1):
            raise ApiError(429, "TooManyRequests", "Cannot evict pod as it would violate the pod's disruption budget.",
                           {"retryAfterSeconds": 10, "causes": [{
                               "reason": "DisruptionBudget",
                               "message": f"The disruption budget {pdb_name} is still being processed by the server."}]})
        if status.get("disruptionsAllowed", 0) < 0:
            raise forbidden(PDB, pdb_name, "pdb disruptions allowed is negative")
        if len(status.get("disruptedPods") or {}) > MAX_DISRUPTED_POD_SIZE:
            raise forbidden(PDB, pdb_name, "DisruptedPods map too big - too many evictions not confirmed by PDB "
                                           "controller")
        if status.get("disruptionsAllowed", 0) == 0:
            raise ApiError(429, "TooManyRequests", "Cannot evict pod as it would violate the pod's disruption budget.",
                           {"causes": [{
                               "reason": "DisruptionBudget",
                               "message": f"The disruption budget {pdb_name} needs {status.get('desiredHealthy', 0)} "
                                          f"healthy pods and has {status.get('currentHealthy', 0)} currently"}]})
        if dry_run:
            return
        new = copy.deepcopy(pdb)
        new["status"]["disruptionsAllowed"] = status["disruptionsAllowed"] - 1
        if new["status"]["disruptionsAllowed"] == 0:
            update_disruption_allowed_condition(new["status"])
        new["status"].setdefault("disruptedPods", {})[pod["metadata"]["name"]] = now_iso()
        self.store.put(PDB, new)


# --------------------------------------------------------------------------- HTTP


PATCH_TYPES = ("application/json-patch+json", "application/merge-patch+json", "application/strategic-merge-patch+json")


def check_patch_type(content_type: str | None) -> None:
    """handlers/patch.go: an unsupported patch Content-Type is 415, before anything else."""
    if (content_type or "").split(";")[0].strip() not in PATCH_TYPES:
        raise unsupported_media_type()


def status_for_code(code: int, message: str) -> dict[str, Any]:
    return ApiError(code, REASON_BY_CODE.get(code, "Unknown"), message).status()


class Handler(BaseHTTPRequestHandler):
    """http.server handler; ``server.emulator`` is the owning Emulator."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server_version = "remediator-emulator/1"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's signature
        return

    def setup(self) -> None:
        if isinstance(self.request, ssl.SSLSocket):  # an HTTPS emulator: handshake in this thread
            self.request.settimeout(10)
            self.request.do_handshake()
            self.request.settimeout(None)
        super().setup()
        self.server.emulator.track_connection(self.connection, True)  # type: ignore[attr-defined]

    def finish(self) -> None:
        self.server.emulator.track_connection(self.connection, False)  # type: ignore[attr-defined]
        super().finish()

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._handle("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._handle("POST")

    def do_PUT(self) -> None:  # noqa: N802
        self._handle("PUT")

    def do_PATCH(self) -> None:  # noqa: N802
        self._handle("PATCH")

    def do_DELETE(self) -> None:  # noqa: N802
        self._handle("DELETE")

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _handle(self, method: str) -> None:
        emu: Emulator = self.server.emulator  # type: ignore[attr-defined]
        received = time.time()
        split = urlsplit(self.path)
        path = split.path
        parsed = parse_qs(split.query, keep_blank_values=True)
        query = {k: v[-1] for k, v in parsed.items()}
        raw = self._read_body()
        content_type = self.headers.get("Content-Type")
        body: Any = None
        parse_error: ApiError | None = None
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                if (content_type or "").startswith("application/") and "json" in (content_type or ""):
                    parse_error = bad_request("the server could not parse the request body as JSON")
                elif method in ("POST", "PUT", "PATCH"):
                    parse_error = unsupported_media_type() if method == "PATCH" else ApiError(
                        415, "UnsupportedMediaType", "the body of the request was in an unknown format - accepted "
                        "media types include: application/json, application/yaml")
        if path.startswith("/_emulator/") or path == "/metrics":
            self._admin(emu, method, path, query, body)
            return
        # Authentication and authorization come first, as the API server's filters run
        # before any handler reads the body (remediator.sim.kube.auth).
        user, refusal = emu.authorizer.check(self.headers.get("Authorization"), method, path, parsed)
        if refusal is not None:
            code, status = refusal
            emu.record(RecordedRequest(method, path, query, content_type, body, code, received, user))
            self._send(code, status)
            return
        try:
            if parse_error:
                raise parse_error
            injected = emu.take_api_fault(method, path)
            if injected is not None:
                raise ApiError(injected, REASON_BY_CODE.get(injected, "Unknown"),
                               f"injected fault: {REASON_BY_CODE.get(injected, injected)}")
            response = emu.api.handle(method, path, query, body, content_type, self.headers.get("Accept", ""),
                                      dry_run=parsed.get("dryRun"))
        except ApiError as err:
            response = Response(err.code, err.status())
        except Exception as exc:  # an emulator bug must still answer, as an apiserver 500 would
            response = Response(500, status_for_code(500, f"emulator error: {type(exc).__name__}: {exc}"))
        emu.record(RecordedRequest(method, path, query, content_type, body, response.status, received, user))
        if response.stream is not None:
            self._send_stream(response)
        else:
            self._send(response.status, response.body, response.content_type)

    def _send(self, status: int, body: Any, content_type: str = "application/json") -> None:
        data = body.encode() if isinstance(body, str) else json.dumps(body, separators=(",", ":")).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-cache, private")
        self.end_headers()
        self.wfile.write(data)

    def _send_stream(self, response: Response) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Cache-Control", "no-cache, private")
        self.end_headers()
        self.wfile.flush()
        try:
            for event in response.stream or ():
                data = json.dumps(event, separators=(",", ":")).encode() + b"\n"
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _admin(self, emu: Emulator, method: str, path: str, query: dict[str, str], body: Any) -> None:
        try:
            if path == "/metrics" and method == "GET":
                text, ctype = emu.metrics_text()
                self._send(200, text, ctype)
            elif path == "/_emulator/requests" and method == "GET":
                self._send(200, [r.to_dict() for r in emu.requests()])
            elif path == "/_emulator/requests" and method == "DELETE":
                emu.clear_requests()
                self._send(200, {"cleared": True})
            elif path == "/_emulator/faults" and method == "POST":
                self._send(200, emu.apply_fault(body if isinstance(body, dict) else {}))
            elif path == "/_emulator/objects" and method == "POST":
                self._send(201, emu.create(body if isinstance(body, dict) else {}))
            else:
                raise no_route()
        except ApiError as err:
            self._send(err.code, err.status())
        except (KeyError, TypeError, ValueError, re.error) as exc:
            self._send(400, status_for_code(400, f"bad admin request: {exc}"))
