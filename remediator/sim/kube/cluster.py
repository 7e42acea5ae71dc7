"""``Emulator``: an in-process Kubernetes cluster served over real HTTP on loopback.

The facade that tests, the worker's ``--simulate`` mode and ``python -m remediator.sim.kube``
use: it owns the store, the controllers (run after each write and every ``tick_seconds``
on a background thread), the HTTP server (a ``ThreadingHTTPServer``), the request
recording, the fault injection and the demo seed. The official ``kubernetes`` client and
kubectl (the version remediator.k8s.kubectl.KUBECTL_VERSION names) talk to it unchanged through ``api_client()`` and ``write_kubeconfig()``.
"""

from __future__ import annotations

import base64
import copy
import re
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from remediator.sim.httpserve import LoopbackHTTPServer
from remediator.sim.kube.auth import ADMIN_TOKEN, Authorizer
from remediator.sim.kube.controllers import NAMESPACE, NODE, ApiErrorFault, Controllers, Faults
from remediator.sim.kube.kinds import BY_KIND, REASON_BY_CODE, Kind, resolve_kind
from remediator.sim.kube.metrics import metrics_registry, render
from remediator.sim.kube.server import Api, Handler, RecordedRequest
from remediator.sim.kube.store import Store, now_iso

FAULT_TYPES = ("crashloop_image", "crashloop_pods", "stall_rollout", "node_not_ready", "api_error", "clear")


class _Server(LoopbackHTTPServer):
    emulator: Emulator

    def handle_error(self, request, client_address) -> None:
        if isinstance(sys.exc_info()[1], (ssl.SSLError, TimeoutError)):  # a client that gave up the TLS handshake
            return
        super().handle_error(request, client_address)


class Emulator:
    """A Kubernetes API server plus control plane, good enough for kubectl and the official client.

    ``host`` must be a loopback address; ``port`` 0 picks a free port. Pods become Ready
    ``pod_ready_seconds`` after they are scheduled; a deleted pod terminates gracefully: its
    emulated containers exit ``termination_seconds`` after SIGTERM (or at the end of its grace
    period if that is sooner), then the kubelet removes it. The controllers tick every
    ``tick_seconds``. Call ``start()`` before use and ``stop()`` after (or use ``with``).

    ``tls_cert`` / ``tls_key`` (PEM files): serve HTTPS with that certificate, ``tls_ca`` the
    CA that signed it (written into kubeconfigs, given to ``api_client()``). kubectl (client-go)
    sends a bearer token only over TLS, so a kubectl run with a service-account token
    (``add_service_account_token``) needs it; the ``kubernetes`` Python client sends it either way.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, pod_ready_seconds: float = 0.2,
                 tick_seconds: float = 0.05, termination_seconds: float = 0.5, *,
                 tls_cert: str | Path | None = None, tls_key: str | Path | None = None,
                 tls_ca: str | Path | None = None) -> None:
        if not (host.startswith("127.") or host in ("localhost", "::1")):
            raise ValueError(f"the emulator listens on loopback only, not {host!r}")
        self.host = host
        self.port = port
        if (tls_cert is None) != (tls_key is None):
            raise ValueError("tls_cert and tls_key go together")
        self.tls_cert, self.tls_key, self.tls_ca = tls_cert, tls_key, tls_ca
        self.tick_seconds = tick_seconds
        self.store = Store()
        self.faults = Faults()
        self.controllers = Controllers(self.store, self.faults, pod_ready_seconds, termination_seconds)
        self.api = Api(self)
        self.authorizer = Authorizer()
        self.stopping = False
        self._requests: list[RecordedRequest] = []
        self._requests_lock = threading.Lock()
        self._hooks: list[Callable[[RecordedRequest], None]] = []
        self._connections: set[Any] = set()
        self._down = False
        self._server: _Server | None = None
        self._threads: list[threading.Thread] = []
        self._registry = metrics_registry(self.store)
        for ns in ("default", "kube-system", "kube-public", "kube-node-lease"):
            self.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> Emulator:
        """Bind and serve on background daemon threads; returns self."""
        if self._server is not None:
            return self
        self.stopping = False
        self._serve()
        tick = threading.Thread(target=self._tick_loop, name="k8s-emulator-controllers", daemon=True)
        self._threads.append(tick)
        tick.start()
        return self

    def _serve(self) -> None:
        self._server = _Server((self.host, self.port), Handler)
        self._server.emulator = self
        if self.tls_cert is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(str(self.tls_cert), str(self.tls_key))
            # The handshake happens in each connection's handler thread (Handler.setup), not
            # in the accepting thread, so one slow client holds up no other.
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True,
                                                      do_handshake_on_connect=False)
        self.port = self._server.server_address[1]
        serve = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                 name="k8s-emulator-http", daemon=True)
        self._threads.append(serve)
        serve.start()

    def _close_server(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        with self._requests_lock:
            connections, self._connections = list(self._connections), set()
        for conn in connections:  # keep-alive connections would go on being served
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def stop(self) -> None:
        """Stop serving and ticking; open watches end within half a second."""
        self.stopping = True
        with self.store.changed:
            self.store.changed.notify_all()
        self._close_server()
        for t in self._threads:
            t.join(timeout=5)
        self._threads = []

    def api_down(self) -> None:
        """The API server becomes unreachable, as during a control-plane restart: the port
        refuses connections and open ones are cut. The cluster itself (store, controllers)
        keeps going. ``api_up()`` serves again on the same port."""
        self._down = True
        self._close_server()

    def api_up(self) -> None:
        """Serve again on the same port after ``api_down()``."""
        if self._server is None and not self.stopping:
            self._down = False
            self._serve()

    def track_connection(self, conn: Any, open_: bool) -> None:
        """Called by the HTTP handler for each connection it opens and closes."""
        with self._requests_lock:
            if open_ and not self._down:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _tick_loop(self) -> None:
        while not self.stopping:
            self.controllers.reconcile()
            time.sleep(self.tick_seconds)

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` once started (``https://`` with ``tls_cert``)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.tls_cert is not None else 'http'}://{host}:{self.port}"

    # ------------------------------------------------------------------ clients

    def add_service_account_token(self, token: str, rules: Any, namespace: str = "remediator",
                                  name: str = "remediator") -> str:
        """Register ``token`` as the token of service account ``namespace/name`` bound to
        ``rules`` (rbac/v1 PolicyRules as JSON, e.g. a ClusterRole's ``rules``, as a
        ClusterRoleBinding binds them); returns its user name
        (``system:serviceaccount:remediator:remediator``).

        From then on its requests are authorized as the API server's RBAC authorizer does: what
        the rules (or the discovery roles every authenticated user has) do not allow is answered
        403 Forbidden with the API server's Status (remediator.sim.kube.auth). The placeholder
        token ``emulator`` and requests without a token keep full access; any other token is
        401 Unauthorized. Registering a token again replaces its rules.
        """
        return self.authorizer.add(token, rules, namespace, name).username

    def write_kubeconfig(self, path: str | Path, context: str = "remediator-simulated",
                         token: str = ADMIN_TOKEN) -> Path:
        """Write a kubeconfig for kubectl and ``kubernetes.config.load_kube_config``; returns its path.

        ``token``: the user's bearer token; by default the placeholder ``emulator`` (full
        access; it keeps clients from prompting), else one registered with
        ``add_service_account_token``, whose rules then authorize every request. kubectl sends
        it only to an HTTPS emulator (``tls_cert``); over plain HTTP it sends no token, which
        the emulator takes for the admin.
        """
        path = Path(path)
        cluster: dict[str, Any] = {"server": self.url}
        if self.tls_ca is not None:
            cluster["certificate-authority-data"] = base64.b64encode(Path(self.tls_ca).read_bytes()).decode()
        path.parent.mkdir(parents=True, exist_ok=True)
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": context, "cluster": cluster}],
            "users": [{"name": context, "user": {"token": token}}],
            "contexts": [{"name": context, "context": {"cluster": context, "user": context, "namespace": "default"}}],
            "current-context": context,
            "preferences": {},
        }
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path

    def api_client(self, token: str = ADMIN_TOKEN) -> Any:
        """A ``kubernetes.client.ApiClient`` pointed at this emulator, sending ``token`` (by
        default the placeholder: full access; see ``add_service_account_token``)."""
        from kubernetes import client

        configuration = client.Configuration()
        configuration.host = self.url
        if self.tls_ca is not None:
            configuration.ssl_ca_cert = str(self.tls_ca)
        configuration.api_key = {"authorization": token}
        configuration.api_key_prefix = {"authorization": "Bearer"}
        return client.ApiClient(configuration)

    # ------------------------------------------------------------------ objects

    def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Create any served kind (from ``obj``'s kind), as a POST would; runs the controllers.

        Raises ApiError (AlreadyExists, Invalid, NotFound namespace...) like the API would.
        """
        kind = self._kind_of(obj)
        return self.api.create(kind, obj, (obj.get("metadata") or {}).get("namespace") if kind.namespaced else None)

    def get(self, kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        """A copy of one object, or None. ``kind`` as kubectl accepts it (``deploy``, ``Deployment``)."""
        k = resolve_kind(kind)
        obj = self.store.get(k, namespace if k.namespaced else None, name)
        return copy.deepcopy(obj) if obj is not None else None

    def list(self, kind: str, namespace: str | None = None) -> list[dict[str, Any]]:
        """Copies of the objects of ``kind``, in one namespace or all, sorted by namespace/name."""
        k = resolve_kind(kind)
        with self.store.lock:
            return [copy.deepcopy(o) for o in self.store.list(k, namespace if k.namespaced else None)]

    def delete_cascading(self, kind: Kind, obj: dict[str, Any], policy: str, *,
                         grace_seconds: int | None = None) -> dict[str, Any]:
        """Delete ``obj`` and, unless ``policy`` is Orphan, its dependents by ownerReferences
        (the garbage collector, done at once). A pod is deleted gracefully with
        ``grace_seconds`` (``Controllers.delete_pod``), and so are dependent pods, with their
        own grace period, as the garbage collector deletes them; the answer for a pod is the
        pod, terminating or removed. A namespace turns Terminating: its contents are deleted
        (pods gracefully) and it goes when no pod is left (``Controllers.terminate_namespace``)."""
        with self.store.lock:
            return self._delete_cascading(kind, obj, policy, grace_seconds, immediate=False)

    def _delete_cascading(self, kind: Kind, obj: dict[str, Any], policy: str, grace_seconds: int | None, *,
                          immediate: bool) -> dict[str, Any]:
        meta = obj["metadata"]
        uid = meta["uid"]
        if kind.kind == "Pod":
            return self.controllers.delete_pod(obj, 0 if immediate else grace_seconds)
        if kind.kind == "Namespace":
            return self.controllers.terminate_namespace(obj)
        deleted = self.store.delete(kind, meta.get("namespace"), meta["name"])
        for dep in self.store.owned_by(uid):
            dep_kind = BY_KIND[dep["kind"]]
            if policy == "Orphan":
                new = copy.deepcopy(dep)
                new["metadata"]["ownerReferences"] = [
                    r for r in dep["metadata"].get("ownerReferences") or [] if r.get("uid") != uid]
                if not new["metadata"]["ownerReferences"]:
                    del new["metadata"]["ownerReferences"]
                self.store.put(dep_kind, new)
            else:
                self._delete_cascading(dep_kind, dep, policy, None, immediate=immediate)
        return deleted

    @staticmethod
    def _kind_of(obj: dict[str, Any]) -> Kind:
        kind = BY_KIND.get(obj.get("kind", ""))
        if kind is None:
            raise ValueError(f"unsupported kind {obj.get('kind')!r}; served: {', '.join(BY_KIND)}")
        if obj.get("apiVersion") not in (None, kind.api_version):
            raise ValueError(f"{kind.kind} is served as {kind.api_version}, not {obj.get('apiVersion')}")
        return kind

    def fill_node_status(self, node: dict[str, Any]) -> None:
        """Give a new Node the status a healthy kubelet posts (addresses, capacity, nodeInfo)."""
        name = node["metadata"]["name"]
        index = len(self.store.list(NODE)) + 1
        labels = node["metadata"].setdefault("labels", {})
        labels.setdefault("kubernetes.io/hostname", name)
        labels.setdefault("kubernetes.io/os", "linux")
        labels.setdefault("kubernetes.io/arch", "amd64")
        labels.setdefault("beta.kubernetes.io/os", "linux")
        labels.setdefault("beta.kubernetes.io/arch", "amd64")
        node.setdefault("spec", {}).setdefault("podCIDR", f"10.244.{index}.0/24")
        node["spec"].setdefault("podCIDRs", [node["spec"]["podCIDR"]])
        status = node.setdefault("status", {})
        now = now_iso()
        resources = {"cpu": "4", "memory": "16310740Ki", "pods": "110", "ephemeral-storage": "101430960Ki",
                     "hugepages-2Mi": "0"}
        status.setdefault("capacity", dict(resources))
        status.setdefault("allocatable", dict(resources))
        conditions = status.setdefault("conditions", [])
        for ctype, reason, message in (
                ("MemoryPressure", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
                ("DiskPressure", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
                ("PIDPressure", "KubeletHasSufficientPID", "kubelet has sufficient PID available")):
            if not any(c.get("type") == ctype for c in conditions):
                conditions.append({"type": ctype, "status": "False", "lastHeartbeatTime": now,
                                   "lastTransitionTime": now, "reason": reason, "message": message})
        if not any(c.get("type") == "Ready" for c in conditions):
            conditions.append({"type": "Ready", "status": "True", "lastHeartbeatTime": now,
                               "lastTransitionTime": now, "reason": "KubeletReady",
                               "message": "kubelet is posting ready status"})
        status.setdefault("addresses", [{"type": "InternalIP", "address": f"172.18.0.{index + 1}"},
                                        {"type": "Hostname", "address": name}])
        status.setdefault("daemonEndpoints", {"kubeletEndpoint": {"Port": 10250}})
        status.setdefault("nodeInfo", {
            "machineID": f"{index:032x}", "systemUUID": f"{index:08x}-0000-0000-0000-000000000000",
            "bootID": f"{index:08x}-1111-1111-1111-111111111111", "kernelVersion": "6.1.0-emulated",
            "osImage": "Debian GNU/Linux 12 (bookworm)", "containerRuntimeVersion": "containerd://1.7.24",
            "kubeletVersion": "v1.32.4", "kubeProxyVersion": "v1.32.4", "operatingSystem": "linux",
            "architecture": "amd64"})
        status.setdefault("images", [])

    # ------------------------------------------------------------------ requests

    def record(self, request: RecordedRequest) -> None:
        """Record a handled request, then run the ``on_request`` hooks (before the response
        is sent)."""
        with self._requests_lock:
            self._requests.append(request)
            hooks = list(self._hooks)
        for hook in hooks:
            hook(request)

    def on_request(self, hook: Callable[[RecordedRequest], None]) -> None:
        """Call ``hook(request)`` for every API request once it has been applied and recorded,
        before its response is sent (in the serving thread): a test can, say, kill the client
        the instant its PATCH lands, before the client hears the answer."""
        with self._requests_lock:
            self._hooks.append(hook)

    def requests(self, method: str | None = None, path_contains: str | None = None) -> list[RecordedRequest]:
        """API requests received so far (admin and /metrics excluded), oldest first, filtered by
        exact method and path substring."""
        with self._requests_lock:
            return [r for r in self._requests
                    if (method is None or r.method == method.upper())
                    and (path_contains is None or path_contains in r.path)]

    def clear_requests(self) -> None:
        with self._requests_lock:
            self._requests.clear()

    def wait_until(self, predicate: Callable[[Emulator], bool], timeout: float = 10) -> None:
        """Poll ``predicate(self)`` (every tick) until true; raises TimeoutError after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            with self.store.lock:
                if predicate(self):
                    return
            if time.monotonic() > deadline:
                raise TimeoutError(f"emulator condition not met within {timeout}s")
            time.sleep(min(self.tick_seconds, 0.05))

    def metrics_text(self) -> tuple[str, str]:
        """(kube-state-metrics text, content type) for ``GET /metrics``."""
        return render(self._registry)

    # ------------------------------------------------------------------ faults

    def fault_crashloop_image(self, image: str, reason: str = "Error") -> None:
        """Every container running ``image`` (now or later) crash-loops: CrashLoopBackOff, restartCount
        growing about once a second, BackOff events, pod not Ready. ``reason`` is the last
        termination's reason (``Error`` exit code 1, ``OOMKilled`` exit code 137)."""
        with self.store.lock:
            self.faults.crashloop_images.add(image)
            if reason != "Error":
                self.faults.crash_image_reasons[image] = reason
            self.controllers.reconcile()

    def fault_crashloop_pods(self, namespace: str, label_selector: str, reason: str = "Error") -> int:
        """The pods matching now crash-loop (terminating with ``reason``, as for
        ``fault_crashloop_image``); their replacements are healthy, so a restart heals.
        Returns how many pods were affected."""
        with self.store.lock:
            count = self.controllers.crashloop_selected_pods(namespace, label_selector, reason)
            self.controllers.reconcile()
            return count

    def fault_stall_rollout(self, namespace: str, deployment: str) -> None:
        """Pods of ReplicaSets created from now on for this Deployment never become Ready
        (as with a failing readiness probe), so a rollout stalls until its progress deadline."""
        with self.store.lock:
            self.faults.stalled_deployments.add((namespace, deployment))

    def fault_node_not_ready(self, node: str, reason: str = "KubeletNotReady") -> None:
        """The node's Ready condition turns False (Unknown for reason NodeStatusUnknown), with the
        not-ready taint; its pods turn unready and the scheduler avoids it."""
        with self.store.lock:
            if self.store.get(NODE, None, node) is None:
                raise KeyError(f"no node {node!r}")
            self.faults.nodes_not_ready[node] = reason
            self.controllers.reconcile()

    def fault_api_error(self, method: str, path_regex: str, status: int, count: int = 1) -> None:
        """The next ``count`` API requests with ``method`` whose path matches ``path_regex``
        (re.search) answer a metav1.Status with HTTP ``status``."""
        re.compile(path_regex)
        if status not in REASON_BY_CODE:
            raise ValueError(f"unsupported status {status}; use one of {sorted(REASON_BY_CODE)}")
        with self.store.lock:
            self.faults.api_errors.append(ApiErrorFault(method.upper(), path_regex, status, count))

    def take_api_fault(self, method: str, path: str) -> int | None:
        """The status an injected api_error fault answers for this request, if any (consumes one)."""
        with self.store.lock:
            for fault in self.faults.api_errors:
                if fault.count > 0 and fault.method == method and re.search(fault.path_regex, path):
                    fault.count -= 1
                    if fault.count == 0:
                        self.faults.api_errors.remove(fault)
                    return fault.status
        return None

    def clear_faults(self) -> None:
        """Remove every fault; crash-looping and stalled pods turn healthy, nodes Ready."""
        with self.store.lock:
            self.faults.clear()
            self.controllers.reconcile()

    def apply_fault(self, spec: dict[str, Any]) -> dict[str, Any]:
        """The admin API's ``POST /_emulator/faults``: ``{"type": ..., <the method's arguments>}``."""
        args = {k: v for k, v in spec.items() if k != "type"}
        ftype = spec.get("type")
        if ftype not in FAULT_TYPES:
            raise ValueError(f"unknown fault type {ftype!r}; expected one of {', '.join(FAULT_TYPES)}")
        result = getattr(self, "clear_faults" if ftype == "clear" else f"fault_{ftype}")(**args)
        return {"type": ftype, "applied": True, **({"pods": result} if isinstance(result, int) else {})}

    # ------------------------------------------------------------------ seed

    def seed_demo(self) -> None:
        """Seed the demo cluster, settled (every pod Ready) when this returns.

        Namespaces default, kube-system, prod; Ready nodes worker-1..3; Deployment prod/checkout
        (3 replicas, image registry.example/checkout:1.4.2, revisions 1 and 2 from 1.4.1 to
        1.4.2) with a PodDisruptionBudget (maxUnavailable 1); DaemonSet kube-system/node-exporter;
        StatefulSet prod/orders-db (2 replicas).
        """
        with self.store.lock:
            self.controllers.instant = True
            try:
                self._seed_demo()
            finally:
                self.controllers.instant = False

    def _seed_demo(self) -> None:
        if self.store.get(NAMESPACE, None, "prod") is None:
            self.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "prod"}})
        for i in (1, 2, 3):
            if self.store.get(NODE, None, f"worker-{i}") is None:
                self.create({"apiVersion": "v1", "kind": "Node", "metadata": {"name": f"worker-{i}"}})
        labels = {"app": "checkout"}
        deployment = {
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "checkout", "namespace": "prod", "labels": labels},
            "spec": {
                "replicas": 3,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {"containers": [{
                        "name": "checkout", "image": "registry.example/checkout:1.4.1",
                        "ports": [{"containerPort": 8080, "name": "http"}],
                        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
                    }]},
                },
            },
        }
        self.create(deployment)
        self.controllers.settle()
        current = copy.deepcopy(self.store.get(BY_KIND["Deployment"], "prod", "checkout"))
        current["spec"]["template"]["spec"]["containers"][0]["image"] = "registry.example/checkout:1.4.2"
        self.api.update(BY_KIND["Deployment"], "prod", "checkout", current)
        self.controllers.settle()
        self.create({
            "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": {"name": "checkout", "namespace": "prod"},
            "spec": {"maxUnavailable": 1, "selector": {"matchLabels": labels}},
        })
        exporter = {"app.kubernetes.io/name": "node-exporter"}
        self.create({
            "apiVersion": "apps/v1", "kind": "DaemonSet",
            "metadata": {"name": "node-exporter", "namespace": "kube-system", "labels": exporter},
            "spec": {
                "selector": {"matchLabels": exporter},
                "template": {"metadata": {"labels": exporter}, "spec": {"containers": [{
                    "name": "node-exporter", "image": "quay.io/prometheus/node-exporter:v1.8.2",
                    "ports": [{"containerPort": 9100, "name": "metrics"}]}]}},
            },
        })
        db = {"app": "orders-db"}
        self.create({
            "apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"name": "orders-db", "namespace": "prod", "labels": db},
            "spec": {
                "replicas": 2, "serviceName": "orders-db",
                "selector": {"matchLabels": db},
                "template": {"metadata": {"labels": db}, "spec": {"containers": [{
                    "name": "postgres", "image": "docker.io/library/postgres:16.4",
                    "ports": [{"containerPort": 5432, "name": "postgres"}]}]}},
            },
        })
        self.controllers.settle(passes=60)



