"""``GET /metrics``: the kube-state-metrics series the kube-prometheus alert rules read.

Names, labels and values follow kube-state-metrics v2 (internal/store/{pod,deployment,
node,statefulset,daemonset}.go), so rules such as KubePodCrashLooping,
KubeDeploymentReplicasMismatch, KubeDeploymentRolloutStuck and KubeNodeNotReady fire
when Prometheus scrapes the emulator under the job name "kube-state-metrics". Exposed
through a prometheus_client custom collector over the emulator's store; called by the
HTTP server.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from remediator.sim.kube.controllers import DAEMONSET, DEPLOYMENT, NODE, POD, STATEFULSET, controller_of
from remediator.sim.kube.store import Store


def _cond_values(status: str) -> list[tuple[str, float]]:
    """kube-state-metrics' three series per condition: true/false/unknown, one of them 1."""
    low = (status or "Unknown").lower()
    return [(s, 1.0 if s == low else 0.0) for s in ("true", "false", "unknown")]


class KubeStateCollector:
    """prometheus_client collector reading the store at scrape time."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def collect(self) -> Iterator[Metric]:
        with self.store.lock:
            pods = [p for p in self.store.list(POD)]
            deployments = self.store.list(DEPLOYMENT)
            nodes = self.store.list(NODE)
            statefulsets = self.store.list(STATEFULSET)
            daemonsets = self.store.list(DAEMONSET)
            yield from self._pods(pods)
            yield from self._deployments(deployments)
            yield from self._nodes(nodes)
            yield from self._statefulsets(statefulsets)
            yield from self._daemonsets(daemonsets)

    @staticmethod
    def _pods(pods: list[dict[str, Any]]) -> Iterator[Metric]:
        waiting = GaugeMetricFamily("kube_pod_container_status_waiting_reason",
                                    "Describes the reason the container is currently in waiting state.",
                                    labels=["namespace", "pod", "uid", "container", "reason"])
        restarts = CounterMetricFamily("kube_pod_container_status_restarts_total",
                                       "The number of container restarts per container.",
                                       labels=["namespace", "pod", "uid", "container"])
        ready = GaugeMetricFamily("kube_pod_container_status_ready",
                                  "Describes whether the containers readiness check succeeded.",
                                  labels=["namespace", "pod", "uid", "container"])
        pod_ready = GaugeMetricFamily("kube_pod_status_ready", "Describes whether the pod is ready to serve requests.",
                                      labels=["namespace", "pod", "uid", "condition"])
        phase = GaugeMetricFamily("kube_pod_status_phase", "The pods current phase.",
                                  labels=["namespace", "pod", "uid", "phase"])
        owner = GaugeMetricFamily("kube_pod_owner", "Information about the Pod's owner.",
                                  labels=["namespace", "pod", "uid", "owner_kind", "owner_name",
                                          "owner_is_controller"])
        info = GaugeMetricFamily("kube_pod_info", "Information about pod.",
                                 labels=["namespace", "pod", "uid", "host_ip", "pod_ip", "node", "created_by_kind",
                                         "created_by_name", "priority_class", "host_network"])
        for p in pods:
            meta, status = p["metadata"], p.get("status") or {}
            base = [meta["namespace"], meta["name"], meta["uid"]]
            for cs in status.get("containerStatuses") or []:
                reason = (cs.get("state") or {}).get("waiting", {}).get("reason")
                if reason:
                    waiting.add_metric([*base, cs["name"], reason], 1.0)
                restarts.add_metric([*base, cs["name"]], float(cs.get("restartCount", 0)))
                ready.add_metric([*base, cs["name"]], 1.0 if cs.get("ready") else 0.0)
            cond = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), None)
            if cond is not None:
                for value, v in _cond_values(cond.get("status")):
                    pod_ready.add_metric([*base, value], v)
            current = status.get("phase", "Pending")
            for ph in ("Pending", "Succeeded", "Failed", "Unknown", "Running"):
                phase.add_metric([*base, ph], 1.0 if ph == current else 0.0)
            ref = controller_of(p)
            if ref is not None:
                owner.add_metric([*base, ref["kind"], ref["name"], "true"], 1.0)
                by_kind, by_name = ref["kind"], ref["name"]
            else:
                owner.add_metric([*base, "<none>", "<none>", "<none>"], 1.0)
                by_kind = by_name = ""
            info.add_metric([*base, status.get("hostIP", ""), status.get("podIP", ""), p["spec"].get("nodeName", ""),
                             by_kind, by_name, p["spec"].get("priorityClassName", ""),
                             "true" if p["spec"].get("hostNetwork") else "false"], 1.0)
        yield from (waiting, restarts, ready, pod_ready, phase, owner, info)

    @staticmethod
    def _deployments(deployments: list[dict[str, Any]]) -> Iterator[Metric]:
        labels = ["namespace", "deployment"]
        fams = {
            "spec_replicas": GaugeMetricFamily("kube_deployment_spec_replicas",
                                               "Number of desired pods for a deployment.", labels=labels),
            "replicas": GaugeMetricFamily("kube_deployment_status_replicas",
                                          "The number of replicas per deployment.", labels=labels),
            "available": GaugeMetricFamily("kube_deployment_status_replicas_available",
                                           "The number of available replicas per deployment.", labels=labels),
            "unavailable": GaugeMetricFamily("kube_deployment_status_replicas_unavailable",
                                             "The number of unavailable replicas per deployment.", labels=labels),
            "updated": GaugeMetricFamily("kube_deployment_status_replicas_updated",
                                         "The number of updated replicas per deployment.", labels=labels),
            "ready": GaugeMetricFamily("kube_deployment_status_replicas_ready",
                                       "The number of ready replicas per deployment.", labels=labels),
            "observed": GaugeMetricFamily("kube_deployment_status_observed_generation",
                                          "The generation observed by the deployment controller.", labels=labels),
            "generation": GaugeMetricFamily("kube_deployment_metadata_generation",
                                            "Sequence number representing a specific generation of the desired state.",
                                            labels=labels),
            "paused": GaugeMetricFamily("kube_deployment_spec_paused",
                                        "Whether the deployment is paused and will not be processed by the "
                                        "deployment controller.", labels=labels),
            "condition": GaugeMetricFamily("kube_deployment_status_condition",
                                           "The current status conditions of a deployment.",
                                           labels=[*labels, "reason", "condition", "status"]),
        }
        for d in deployments:
            base = [d["metadata"]["namespace"], d["metadata"]["name"]]
            st = d.get("status") or {}
            fams["spec_replicas"].add_metric(base, float(d["spec"].get("replicas", 1)))
            fams["replicas"].add_metric(base, float(st.get("replicas", 0)))
            fams["available"].add_metric(base, float(st.get("availableReplicas", 0)))
            fams["unavailable"].add_metric(base, float(st.get("unavailableReplicas", 0)))
            fams["updated"].add_metric(base, float(st.get("updatedReplicas", 0)))
            fams["ready"].add_metric(base, float(st.get("readyReplicas", 0)))
            fams["observed"].add_metric(base, float(st.get("observedGeneration", 0)))
            fams["generation"].add_metric(base, float(d["metadata"].get("generation", 1)))
            fams["paused"].add_metric(base, 1.0 if d["spec"].get("paused") else 0.0)
            for c in st.get("conditions") or []:
                for value, v in _cond_values(c.get("status")):
                    fams["condition"].add_metric([*base, c.get("reason", ""), c["type"], value], v)
        yield from fams.values()

    @staticmethod
    def _nodes(nodes: list[dict[str, Any]]) -> Iterator[Metric]:
        cond = GaugeMetricFamily("kube_node_status_condition", "The condition of a cluster node.",
                                 labels=["node", "condition", "status"])
        unsched = GaugeMetricFamily("kube_node_spec_unschedulable",
                                    "Whether a node can schedule new pods.", labels=["node"])
        info = GaugeMetricFamily("kube_node_info", "Information about a cluster node.",
                                 labels=["node", "kubelet_version", "os_image", "internal_ip"])
        for n in nodes:
            name = n["metadata"]["name"]
            for c in (n.get("status") or {}).get("conditions") or []:
                for value, v in _cond_values(c.get("status")):
                    cond.add_metric([name, c["type"], value], v)
            unsched.add_metric([name], 1.0 if n["spec"].get("unschedulable") else 0.0)
            st = n.get("status") or {}
            ip = next((a["address"] for a in st.get("addresses") or [] if a.get("type") == "InternalIP"), "")
            ni = st.get("nodeInfo") or {}
            info.add_metric([name, ni.get("kubeletVersion", ""), ni.get("osImage", ""), ip], 1.0)
        yield from (cond, unsched, info)

    @staticmethod
    def _statefulsets(statefulsets: list[dict[str, Any]]) -> Iterator[Metric]:
        labels = ["namespace", "statefulset"]
        spec = GaugeMetricFamily("kube_statefulset_replicas", "Number of desired pods for a StatefulSet.",
                                 labels=labels)
        ready = GaugeMetricFamily("kube_statefulset_status_replicas_ready",
                                  "The number of ready replicas per StatefulSet.", labels=labels)
        updated = GaugeMetricFamily("kube_statefulset_status_replicas_updated",
                                    "The number of updated replicas per StatefulSet.", labels=labels)
        observed = GaugeMetricFamily("kube_statefulset_status_observed_generation",
                                     "The generation observed by the StatefulSet controller.", labels=labels)
        generation = GaugeMetricFamily("kube_statefulset_metadata_generation",
                                       "Sequence number representing a specific generation of the desired state "
                                       "for the StatefulSet.", labels=labels)
        for s in statefulsets:
            base = [s["metadata"]["namespace"], s["metadata"]["name"]]
            st = s.get("status") or {}
            spec.add_metric(base, float(s["spec"].get("replicas", 1)))
            ready.add_metric(base, float(st.get("readyReplicas", 0)))
            updated.add_metric(base, float(st.get("updatedReplicas", 0)))
            observed.add_metric(base, float(st.get("observedGeneration", 0)))
            generation.add_metric(base, float(s["metadata"].get("generation", 1)))
        yield from (spec, ready, updated, observed, generation)

    @staticmethod
    def _daemonsets(daemonsets: list[dict[str, Any]]) -> Iterator[Metric]:
        labels = ["namespace", "daemonset"]
        names = {
            "desiredNumberScheduled": ("kube_daemonset_status_desired_number_scheduled",
                                       "The number of nodes that should be running the daemon pod."),
            "currentNumberScheduled": ("kube_daemonset_status_current_number_scheduled",
                                       "The number of nodes running at least one daemon pod and are supposed to."),
            "numberReady": ("kube_daemonset_status_number_ready",
                            "The number of nodes that should be running the daemon pod and have one or more of the "
                            "daemon pod running and ready."),
            "numberAvailable": ("kube_daemonset_status_number_available",
                                "The number of nodes that should be running the daemon pod and have one or more of "
                                "the daemon pod running and available"),
            "updatedNumberScheduled": ("kube_daemonset_status_updated_number_scheduled",
                                       "The total number of nodes that are running updated daemon pod"),
            "numberMisscheduled": ("kube_daemonset_status_number_misscheduled",
                                   "The number of nodes running a daemon pod but are not supposed to."),
        }
        fams = {k: GaugeMetricFamily(n, h, labels=labels) for k, (n, h) in names.items()}
        for ds in daemonsets:
            base = [ds["metadata"]["namespace"], ds["metadata"]["name"]]
            st = ds.get("status") or {}
            for key, fam in fams.items():
                fam.add_metric(base, float(st.get(key, 0)))
        yield from fams.values()


def metrics_registry(store: Store) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(KubeStateCollector(store))
    return registry


def render(registry: CollectorRegistry) -> tuple[str, str]:
    """(Prometheus text exposition, its content type)."""
    return generate_latest(registry).decode(), CONTENT_TYPE_LATEST



