"""Which GitOps controller manages a Kubernetes object, read from its labels and annotations.

``gitops_owner`` is called by ``KubeClient.describe`` (remediator.k8s.client), which puts the
answer in ``TargetState.gitops``; the workflow's policy decides what a step that changes the
spec of such an object needs (a controller syncing from Git would undo the change). Pure: no
I/O.

The marks are the ones the controllers write on every object they apply:

* Argo CD annotation tracking (the default since Argo CD 3.0): the annotation
  ``argocd.argoproj.io/tracking-id`` = ``<app>:<group>/<kind>:<namespace>/<name>``
  (``<app>`` is ``<namespace>_<name>`` for an Application outside Argo CD's namespace);
* Flux kustomize-controller: the labels ``kustomize.toolkit.fluxcd.io/name`` and
  ``kustomize.toolkit.fluxcd.io/namespace``;
* Flux helm-controller: the labels ``helm.toolkit.fluxcd.io/name`` and
  ``helm.toolkit.fluxcd.io/namespace``;
* Argo CD label tracking (the default before 3.0): the label ``app.kubernetes.io/instance``
  = ``<app>``.

``app.kubernetes.io/instance`` is also the recommended label of every Helm chart, so a release
installed by plain ``helm install`` is reported as an Argo CD application too. That is on
purpose (fail closed): taking an object for GitOps-managed when it is not costs a question to
a person; missing one that is lets remediator fight its controller. It is therefore tried last,
after the marks that name their controller without doubt.
"""

from __future__ import annotations

from typing import Any

ARGOCD_TRACKING_ID = "argocd.argoproj.io/tracking-id"
ARGOCD_INSTANCE_LABEL = "app.kubernetes.io/instance"
FLUX_KUSTOMIZATION_NAME = "kustomize.toolkit.fluxcd.io/name"
FLUX_KUSTOMIZATION_NAMESPACE = "kustomize.toolkit.fluxcd.io/namespace"
FLUX_HELMRELEASE_NAME = "helm.toolkit.fluxcd.io/name"
FLUX_HELMRELEASE_NAMESPACE = "helm.toolkit.fluxcd.io/namespace"


def gitops_owner(obj: dict[str, Any]) -> str | None:
    """The GitOps controller that manages ``obj`` (a Kubernetes object as JSON), in words, or
    None when it carries none of the marks in the module docstring.

    Returns, in this order of precedence:

    * ``"Argo CD application <app>"`` from ``argocd.argoproj.io/tracking-id`` (``<app>`` is the
      text before its first ``:``; a value without one is taken whole);
    * ``"Flux Kustomization <namespace>/<name>"`` from the ``kustomize.toolkit.fluxcd.io``
      labels, ``"Flux HelmRelease <namespace>/<name>"`` from the ``helm.toolkit.fluxcd.io``
      ones (just ``<name>`` when the namespace label is missing);
    * ``"Argo CD application <value>"`` from the label ``app.kubernetes.io/instance``, which
      plain Helm sets too (see the module docstring: taken as Argo CD's, fail closed).

    Never raises: missing or non-string metadata counts as no mark.
    """
    meta = obj.get("metadata") if isinstance(obj, dict) else None
    meta = meta if isinstance(meta, dict) else {}
    annotations = _strings(meta.get("annotations"))
    labels = _strings(meta.get("labels"))

    tracking = annotations.get(ARGOCD_TRACKING_ID, "").strip()
    if tracking:
        return f"Argo CD application {tracking.split(':', 1)[0]}"
    for kind, name_label, namespace_label in (
        ("Flux Kustomization", FLUX_KUSTOMIZATION_NAME, FLUX_KUSTOMIZATION_NAMESPACE),
        ("Flux HelmRelease", FLUX_HELMRELEASE_NAME, FLUX_HELMRELEASE_NAMESPACE),
    ):
        name = labels.get(name_label, "").strip()
        if name:
            namespace = labels.get(namespace_label, "").strip()
            return f"{kind} {namespace}/{name}" if namespace else f"{kind} {name}"
    instance = labels.get(ARGOCD_INSTANCE_LABEL, "").strip()
    if instance:
        return f"Argo CD application {instance}"
    return None


def _strings(mapping: Any) -> dict[str, str]:
    if not isinstance(mapping, dict):
        return {}
    return {k: v for k, v in mapping.items() if isinstance(k, str) and isinstance(v, str)}
