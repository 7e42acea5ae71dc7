"""GitOps owner detection (remediator.k8s.gitops.gitops_owner) and ``KubeClient.describe``
reporting it, the latter against the Kubernetes API emulator over HTTP."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes.client import AppsV1Api

from remediator.domain.messages import TargetRef
from remediator.k8s.client import KubeClient
from remediator.k8s.gitops import gitops_owner


def obj(labels: dict[str, str] | None = None, annotations: dict[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "checkout", "namespace": "prod"}
    if labels is not None:
        meta["labels"] = labels
    if annotations is not None:
        meta["annotations"] = annotations
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta}


@pytest.mark.parametrize(
    ("labels", "annotations", "owner"),
    [
        # Argo CD annotation tracking: <app>:<group>/<kind>:<namespace>/<name>
        ({}, {"argocd.argoproj.io/tracking-id": "shop:apps/Deployment:prod/checkout"}, "Argo CD application shop"),
        # an Application outside Argo CD's namespace is <namespace>_<name>
        ({}, {"argocd.argoproj.io/tracking-id": "team-a_shop:apps/Deployment:prod/checkout"},
         "Argo CD application team-a_shop"),
        # a tracking id without the expected shape still names the application (fail closed)
        ({}, {"argocd.argoproj.io/tracking-id": "shop"}, "Argo CD application shop"),
        # Argo CD label tracking (also plain Helm's label: taken as Argo CD's, fail closed)
        ({"app.kubernetes.io/instance": "shop"}, {}, "Argo CD application shop"),
        ({"kustomize.toolkit.fluxcd.io/name": "apps", "kustomize.toolkit.fluxcd.io/namespace": "flux-system"}, {},
         "Flux Kustomization flux-system/apps"),
        ({"helm.toolkit.fluxcd.io/name": "checkout", "helm.toolkit.fluxcd.io/namespace": "prod"}, {},
         "Flux HelmRelease prod/checkout"),
        ({"kustomize.toolkit.fluxcd.io/name": "apps"}, {}, "Flux Kustomization apps"),
        # the marks that name their controller win over the ambiguous instance label
        ({"app.kubernetes.io/instance": "checkout", "helm.toolkit.fluxcd.io/name": "checkout",
          "helm.toolkit.fluxcd.io/namespace": "prod"}, {}, "Flux HelmRelease prod/checkout"),
        ({"app.kubernetes.io/instance": "legacy"}, {"argocd.argoproj.io/tracking-id": "shop:apps/Deployment:prod/checkout"},
         "Argo CD application shop"),
        ({"app": "checkout", "app.kubernetes.io/name": "checkout"}, {"deployment.kubernetes.io/revision": "2"}, None),
        ({"app.kubernetes.io/instance": ""}, {"argocd.argoproj.io/tracking-id": " "}, None),
        (None, None, None),
    ],
)
def test_gitops_owner(labels, annotations, owner):
    assert gitops_owner(obj(labels, annotations)) == owner


@pytest.mark.parametrize("bad", [{}, {"metadata": None}, {"metadata": {"labels": None, "annotations": "x"}},
                                 {"metadata": {"labels": {"app.kubernetes.io/instance": 3}}}])
def test_gitops_owner_never_raises_on_odd_metadata(bad):
    assert gitops_owner(bad) is None


def test_describe_reports_the_gitops_owner(emulator):
    kube = KubeClient(emulator.api_client())
    target = TargetRef(kind="Deployment", namespace="prod", name="checkout")
    plain = kube.describe(target)
    assert plain.gitops is None and "managed by" not in plain.summary

    AppsV1Api(emulator.api_client()).patch_namespaced_deployment("checkout", "prod", {"metadata": {"annotations": {
        "argocd.argoproj.io/tracking-id": "shop:apps/Deployment:prod/checkout"}}})
    managed = kube.describe(target)
    assert managed.gitops == "Argo CD application shop"
    assert managed.summary == plain.summary + "; managed by Argo CD application shop"

    node = kube.describe(TargetRef(kind="Node", name="worker-1"))
    assert node.gitops is None and node.summary == "node worker-1: Ready"
