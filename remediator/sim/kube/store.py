"""The emulator's object store: etcd plus the apiserver's generic registry semantics.

Holds every object as the JSON dict the apiserver would return, keyed by kind, namespace and
name. Gives each write a resourceVersion from one global counter, sets uid,
creationTimestamp and generation (bumped only when ``spec`` changes, for the kinds whose
controllers report ``observedGeneration``), refuses a stale resourceVersion with the
apiserver's 409 Conflict, answers dry-run creates and updates without writing anything, keeps ``status`` out of main-resource writes and ``spec`` out of
``/status`` writes, keeps ``deletionTimestamp``/``deletionGracePeriodSeconds`` out of client
writes (only a DELETE sets them, see ``Controllers.delete_pod``), and keeps a bounded log of
watch events.

Called by the HTTP server (``server.py``), the controllers (``controllers.py``) and the
``Emulator`` facade. All methods take ``lock``; callers that read-modify-write hold it too.
"""

from __future__ import annotations

import copy
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from remediator.sim.kube.names import random_suffix
from remediator.sim.kube.kinds import BY_KIND, Kind, already_exists, bad_request, conflict, not_found

# Kinds whose metadata.generation the apiserver maintains (their strategies' PrepareForUpdate).
GENERATION_KINDS = {"Deployment", "ReplicaSet", "StatefulSet", "DaemonSet", "PodDisruptionBudget"}

WATCH_LOG_SIZE = 10_000


def now_iso(at: float | None = None) -> str:
    """RFC 3339 UTC timestamp with seconds precision, as metav1.Time marshals."""
    moment = datetime.fromtimestamp(at if at is not None else time.time(), UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(text: str) -> float:
    """Inverse of ``now_iso``: seconds since the epoch."""
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()


class Store:
    """Objects by kind; see the module docstring for the semantics."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self._rv = 0
        self._objects: dict[str, dict[tuple[str, str], dict[str, Any]]] = {k: {} for k in BY_KIND}
        self._log: deque[tuple[int, str, str, dict[str, Any]]] = deque(maxlen=WATCH_LOG_SIZE)

    # ------------------------------------------------------------------ reading

    @property
    def resource_version(self) -> str:
        with self.lock:
            return str(self._rv)

    def get(self, kind: Kind, namespace: str | None, name: str) -> dict[str, Any] | None:
        """The stored object itself (not a copy): callers must not mutate it."""
        with self.lock:
            return self._objects[kind.kind].get((namespace or "", name))

    def must_get(self, kind: Kind, namespace: str | None, name: str) -> dict[str, Any]:
        """As ``get``; raises ApiError 404 NotFound worded as the apiserver."""
        obj = self.get(kind, namespace, name)
        if obj is None:
            raise not_found(kind, name)
        return obj

    def list(self, kind: Kind, namespace: str | None = None,
             where: Callable[[dict[str, Any]], bool] | None = None) -> list[dict[str, Any]]:
        """Stored objects (not copies) of ``kind``, in one namespace or all, sorted by namespace/name."""
        with self.lock:
            items = [o for (ns, _), o in self._objects[kind.kind].items()
                     if namespace is None or ns == namespace]
        items.sort(key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"]))
        return [o for o in items if where is None or where(o)]

    def owned_by(self, uid: str, kind: Kind | None = None) -> list[dict[str, Any]]:
        """Objects with an ownerReference to ``uid`` (optionally of one kind)."""
        kinds: Iterable[Kind] = [kind] if kind else BY_KIND.values()
        with self.lock:
            return [o for k in kinds for o in self._objects[k.kind].values()
                    if any(r.get("uid") == uid for r in o["metadata"].get("ownerReferences") or [])]

    # ------------------------------------------------------------------ writing

    def _bump(self) -> str:
        self._rv += 1
        return str(self._rv)

    def _emit(self, kind: Kind, event_type: str, obj: dict[str, Any]) -> None:
        self._log.append((self._rv, kind.kind, event_type, obj))
        self.changed.notify_all()

    def create(self, kind: Kind, obj: dict[str, Any], *, dry_run: bool = False) -> dict[str, Any]:
        """Store a new object (a copy of ``obj``) and return it.

        Fills apiVersion/kind, uid, resourceVersion, creationTimestamp, generation and
        namespace; a ``generateName`` gets 5 random characters as the apiserver does.
        Raises ApiError 409 AlreadyExists, 404 if the namespace does not exist, 400 without a name.
        ``dry_run``: every check and fill, then the object is returned unstored, without a
        resourceVersion and with no watch event (apiserver DryRunnableStorage.Create).
        """
        obj = copy.deepcopy(obj)
        meta = obj.setdefault("metadata", {})
        with self.lock:
            if kind.namespaced:
                ns = meta.get("namespace") or "default"
                meta["namespace"] = ns
                if ("", ns) not in self._objects["Namespace"]:
                    raise not_found(BY_KIND["Namespace"], ns)
            else:
                meta.pop("namespace", None)
            if not meta.get("name"):
                if meta.get("generateName"):
                    meta["name"] = meta["generateName"] + random_suffix()
                else:
                    raise bad_request("resource name may not be empty")
            key = (meta.get("namespace", ""), meta["name"])
            if key in self._objects[kind.kind]:
                raise already_exists(kind, meta["name"])
            obj["apiVersion"] = kind.api_version
            obj["kind"] = kind.kind
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = now_iso()
            meta.pop("deletionTimestamp", None)
            meta.pop("deletionGracePeriodSeconds", None)
            if kind.kind in GENERATION_KINDS:
                meta["generation"] = 1
            if dry_run:
                return obj
            meta["resourceVersion"] = self._bump()
            self._objects[kind.kind][key] = obj
            self._emit(kind, "ADDED", obj)
            return obj

    def update(self, kind: Kind, obj: dict[str, Any], *, subresource: str | None = None,
               check_version: bool = True, dry_run: bool = False) -> dict[str, Any]:
        """Replace a stored object with (a copy of) ``obj``, as a PUT does.

        ``subresource`` "status" keeps the stored spec; None keeps the stored status for kinds
        with a status subresource. A resourceVersion in ``obj`` that differs from the stored
        one raises ApiError 409 Conflict (when ``check_version``); a missing object 404.
        Returns the stored object; no write (and no new resourceVersion) when nothing changed.
        ``dry_run``: every check, then the object as it would be stored is returned (a copy:
        its generation bumped on a spec change, its resourceVersion still the stored one)
        and nothing is written (apiserver DryRunnableStorage.GuaranteedUpdate).
        """
        with self.lock:
            meta = obj.get("metadata") or {}
            ns = meta.get("namespace", "") if kind.namespaced else ""
            current = self.must_get(kind, ns, meta.get("name", ""))
            sent_rv = meta.get("resourceVersion")
            if check_version and sent_rv and sent_rv != current["metadata"]["resourceVersion"]:
                raise conflict(kind, current["metadata"]["name"])
            new = copy.deepcopy(obj)
            new["apiVersion"], new["kind"] = kind.api_version, kind.kind
            new_meta = new.setdefault("metadata", {})
            for fixed in ("uid", "creationTimestamp", "namespace", "name", "generation", "deletionTimestamp",
                          "deletionGracePeriodSeconds"):
                if fixed in current["metadata"]:
                    new_meta[fixed] = current["metadata"][fixed]
                else:
                    new_meta.pop(fixed, None)
            if subresource == "status":
                new = {**copy.deepcopy(current), "status": new.get("status", {})}
            elif kind.has_status and "status" in current:
                new["status"] = copy.deepcopy(current["status"])
            elif kind.has_status:
                new.pop("status", None)
            if kind.kind in GENERATION_KINDS and new.get("spec") != current.get("spec"):
                new_meta["generation"] = current["metadata"].get("generation", 1) + 1
            new["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
            if dry_run:
                return new
            if new == current:
                return current
            new["metadata"]["resourceVersion"] = self._bump()
            self._objects[kind.kind][(ns, new_meta["name"])] = new
            self._emit(kind, "MODIFIED", new)
            return new

    def put(self, kind: Kind, obj: dict[str, Any]) -> dict[str, Any]:
        """Controller write: store ``obj`` whole (spec, status and metadata as given; generation
        bumped on a spec change) if it differs from the stored object. Returns the stored object."""
        with self.lock:
            meta = obj["metadata"]
            key = (meta.get("namespace", ""), meta["name"])
            current = self._objects[kind.kind].get(key)
            if current is None:
                return obj
            if obj is current:
                raise RuntimeError("controllers must write copies of stored objects")
            if kind.kind in GENERATION_KINDS and obj.get("spec") != current.get("spec"):
                meta["generation"] = current["metadata"].get("generation", 1) + 1
            meta["resourceVersion"] = current["metadata"]["resourceVersion"]
            if obj == current:
                return current
            meta["resourceVersion"] = self._bump()
            self._objects[kind.kind][key] = obj
            self._emit(kind, "MODIFIED", obj)
            return obj

    def delete(self, kind: Kind, namespace: str | None, name: str) -> dict[str, Any]:
        """Remove one object (no cascade: see ``Emulator``/server for propagationPolicy).

        Returns the removed object with a fresh resourceVersion; raises ApiError 404.
        """
        with self.lock:
            key = (namespace or "" if kind.namespaced else "", name)
            obj = self._objects[kind.kind].pop(key, None)
            if obj is None:
                raise not_found(kind, name)
            obj = copy.deepcopy(obj)
            obj["metadata"]["resourceVersion"] = self._bump()
            self._emit(kind, "DELETED", obj)
            return obj

    # ------------------------------------------------------------------ watch

    def events_after(self, resource_version: int) -> tuple[list[tuple[int, str, str, dict[str, Any]]], bool]:
        """Logged watch events newer than ``resource_version``, and whether the log still
        reaches back that far (False means the caller must answer 410 Expired)."""
        with self.lock:
            if self._log and self._log[0][0] > resource_version + 1 and len(self._log) == self._log.maxlen:
                return [], False
            return [e for e in self._log if e[0] > resource_version], True

