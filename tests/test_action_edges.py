"""Edges of the Kubernetes actions (activities.kube) that tests/test_actions.py leaves out: a
scale clamped to ``min_replicas``, drain's mirror pods and its ``force`` / ``delete_emptydir_data``
paths, and API errors 400 and 401.

Driven as tests/test_actions.py drives the actions (its helpers: ``plan_mutation`` then the
action, in Temporal's ActivityEnvironment, against the Kubernetes API emulator over HTTP), and
compared with what the pinned kubectl sends to an emulator seeded alike.
"""

from __future__ import annotations

import pytest
from temporalio.exceptions import ApplicationError

from remediator.domain.errors import NON_RETRYABLE_KUBE
from remediator.k8s.kubectl import LOCAL_STORAGE_WARNING, MIRROR_POD, UNMANAGED_WARNING
from tests.test_actions import (  # noqa: F401 - kube and kubectl_emulator are fixtures
    CHECKOUT,
    WORKER_1,
    _scale_put,
    apply,
    kube,
    kubectl_emulator,
    mutation,
    plan,
    run,
    sent,
)

# --------------------------------------------------------------------------- scale


def test_scale_delta_below_min_replicas_is_clamped_and_says_so(emulator, kubectl_emulator, kube):
    emulator.clear_requests()
    kubectl_emulator.clear_requests()
    planned = plan(kube, CHECKOUT, "scale", delta=-5, min_replicas=2, max_replicas=10)
    assert planned.change == {"replicas": 2} and planned.precondition == {"replicas": 3}
    assert planned.message == (
        "scale deployment/prod/checkout from 3 to 2 replicas (clamped from -2 to min_replicas 2) "
        "(kubectl scale --current-replicas=3 --replicas=2)"
    )
    result = apply(kube, planned)
    out = kubectl_emulator.kubectl("-n", "prod", "scale", "deployment/checkout", "--current-replicas=3", "--replicas=2")
    assert out.returncode == 0, out.stderr

    [ours], [theirs] = sent(emulator), sent(kubectl_emulator)
    assert _scale_put(ours) == _scale_put(theirs)
    assert ours[3]["spec"] == {"replicas": 2}
    assert result.state_after == {"replicas": 2} and result.undo.params.replicas == 3
    assert emulator.get("Deployment", "checkout", "prod")["spec"]["replicas"] == 2


# --------------------------------------------------------------------------- drain


def _pod(name: str, *, annotations: dict | None = None, volumes: list | None = None) -> dict:
    """A pod bound to worker-1 with no controller (as a static pod's mirror or a bare pod is)."""
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "annotations": annotations or {}},
        "spec": {"nodeName": "worker-1", "containers": [{"name": "c", "image": "busybox"}], "volumes": volumes or []},
    }


def _evicted(requests) -> list[str]:
    """namespace/name of each pod an Eviction was POSTed for."""
    return sorted(
        f"{body['metadata']['namespace']}/{body['metadata']['name']}"
        for method, path, _, body in requests if method == "POST" and path.endswith("/eviction")
    )


def test_drain_skips_mirror_pods_as_kubectl_does(emulator, kubectl_emulator, kube):
    """A static pod's mirror (annotation kubernetes.io/config.mirror) is the kubelet's: never
    evicted, and not refused as unmanaged either."""
    mirror = _pod("etcd-worker-1", annotations={MIRROR_POD: "4c1b2f0e"})
    for emu in (emulator, kubectl_emulator):
        emu.create(mirror)
        emu.clear_requests()
    planned = plan(kube, WORKER_1, "drain", ignore_daemonsets=True, timeout="30s")
    assert "default/etcd-worker-1" not in planned.change["evict"]
    result = apply(kube, planned)
    out = kubectl_emulator.kubectl("drain", "worker-1", "--ignore-daemonsets", "--timeout=30s")
    assert out.returncode == 0, out.stderr

    ours, theirs = sent(emulator), sent(kubectl_emulator)
    assert _evicted(ours) and "default/etcd-worker-1" not in _evicted(ours)
    assert [p.rsplit("-", 2)[0] for p in _evicted(ours)] == [p.rsplit("-", 2)[0] for p in _evicted(theirs)]
    assert emulator.get("Pod", "etcd-worker-1", "default") is not None
    assert "etcd-worker-1" not in result.message


@pytest.mark.parametrize(
    ("pod", "params", "flags"),
    [
        (_pod("bare"), {"force": True}, ["--force"]),
        (
            _pod("scratch", volumes=[{"name": "tmp", "emptyDir": {}}]),
            {"force": True, "delete_emptydir_data": True},
            ["--force", "--delete-emptydir-data"],
        ),
    ],
    ids=["force", "force-and-delete-emptydir-data"],
)
def test_drain_evicts_what_force_and_delete_emptydir_data_allow(emulator, kubectl_emulator, kube, pod, params, flags):
    """Pods drain refuses by default (tests/test_actions.py) are evicted when the playbook says
    so, through the Eviction API like every other pod, with kubectl's warning. kubectl keeps the
    status of a pod's last filter (pkg/drain/drain.go GetPodsForDeletion), so an unmanaged pod
    with an emptyDir is warned about as unmanaged only; so is it here."""
    name = f"default/{pod['metadata']['name']}"
    for emu in (emulator, kubectl_emulator):
        emu.create(pod)
        emu.clear_requests()
    result, _ = run(kube.drain, mutation(WORKER_1, ignore_daemonsets=True, timeout="30s", **params))
    out = kubectl_emulator.kubectl("drain", "worker-1", "--ignore-daemonsets", "--timeout=30s", *flags)
    assert out.returncode == 0, out.stderr

    ours, theirs = sent(emulator), sent(kubectl_emulator)
    assert name in _evicted(ours) and name in _evicted(theirs)
    assert emulator.requests(method="DELETE") == []
    # kubectl: "Warning: deleting Pods that declare no controller: default/bare; ignoring ...", the
    # parts in Go map order (pkg/drain PodDeleteList.warnings), so either may come first.
    [line] = [ln for ln in out.stderr.splitlines() if ln.startswith("Warning: ")]
    assert f"{UNMANAGED_WARNING}: {name}" in line.removeprefix("Warning: ").split("; ")
    assert f"Warning: {UNMANAGED_WARNING}: {name}" in result.message
    assert LOCAL_STORAGE_WARNING not in out.stderr and LOCAL_STORAGE_WARNING not in result.message
    emulator.wait_until(lambda e: e.get("Pod", pod["metadata"]["name"], "default") is None)


# --------------------------------------------------------------------------- API errors


@pytest.mark.parametrize(("status", "reason"), [(400, "Bad Request"), (401, "Unauthorized")])
def test_bad_request_and_unauthorized_are_permanent(emulator, kube, status, reason):
    emulator.fault_api_error("PATCH", r"/deployments/checkout$", status)
    with pytest.raises(ApplicationError) as info:
        run(kube.rollout_restart, mutation(CHECKOUT))
    err = info.value
    assert err.type == "KubePermanentError" and err.non_retryable and err.type in NON_RETRYABLE_KUBE
    assert err.message.startswith(f"PATCH deployment/prod/checkout: {status} {reason}")
    assert err.__cause__ is not None and getattr(err.__cause__, "status", None) == status
    assert err.details == ({"status": status},)
