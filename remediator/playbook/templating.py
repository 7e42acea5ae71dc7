"""Jinja2 templates in playbooks, rendered in a sandbox against one alert.

The loader (remediator.playbook.loader) calls ``check_template`` on every templated playbook
string at load time, and ``render_string`` for each of them when an alert matches,
before the workflow starts (the workflow only ever sees rendered playbooks).

Templates run in Jinja2's ``ImmutableSandboxedEnvironment`` (no access to ``__class__``
and other internals, no mutation of the context) with ``StrictUndefined``: a label the
alert does not have is an error, never an empty string that would point a remediation at
the wrong object. A template can use three names:

* ``labels``: the alert's labels (``labels.namespace``, ``labels["app.kubernetes.io/name"]``);
* ``annotations``: the alert's annotations;
* ``alert``: ``status``, ``fingerprint``, ``starts_at``, ``ends_at`` (datetimes),
  ``generator_url``, ``receiver``, ``group_key``, ``external_url``, ``labels``,
  ``annotations``.

``labels.x`` looks the label up first, so a label named ``items`` or ``get`` is reachable
by attribute too; ``labels.get("team", "none")`` and ``labels.team | default("none")``
give a fallback for labels that may be absent.

Filters added to Jinja2's own: ``pod_controller_name`` and ``pod_statefulset_name``.
"""

from __future__ import annotations

import difflib
import functools
import re
from typing import Any, Mapping

from jinja2 import (
    StrictUndefined,
    Template,
    TemplateAssertionError,
    TemplateError,
    TemplateSyntaxError,
    Undefined,
    meta,
)
from jinja2.sandbox import ImmutableSandboxedEnvironment

from remediator.domain.messages import AlertRef

CONTEXT_NAMES: tuple[str, ...] = ("labels", "annotations", "alert")
"""The names a playbook template may use."""

TEMPLATE_MARKERS = re.compile(r"\{\{|\{%")


class RenderError(ValueError):
    """A template could not be rendered against an alert; the message says what to fix.

    When raised by remediator.playbook.loader.render the message reads
    ``playbook <name>: <field path>: <reason>``, e.g.
    ``playbook kube-pod-crashlooping: target.name: label "pod" is not set on the alert``.
    """


class FilterError(ValueError):
    """A filter was given a value it cannot work on (e.g. a pod name of the wrong shape)."""


class _Fields(dict):
    """Labels, annotations or alert fields; ``what`` names one entry in error messages."""

    def __init__(self, values: Mapping[str, Any], what: str) -> None:
        super().__init__(values)
        self.what = what

    def missing(self, key: object) -> str:
        if self.what == "alert field":
            close = difflib.get_close_matches(str(key), list(self), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            return f"the alert has no field {key!r}{hint}; fields: {', '.join(self)}"
        return f'{self.what} "{key}" is not set on the alert'


# --------------------------------------------------------------------------- filters

# Kubernetes' rand.String / rand.SafeEncodeString alphabet (k8s.io/apimachinery
# pkg/util/rand): no vowels, no 0, 1 or 3.
_SAFE = "bcdfghjklmnpqrstvwxz2456789"
_DEPLOYMENT_POD = re.compile(rf"^([a-z0-9]([-a-z0-9]*[a-z0-9])?)-[{_SAFE}]{{1,10}}-[{_SAFE}]{{5}}$")
_STATEFULSET_POD = re.compile(r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?)-(0|[1-9][0-9]*)$")
# generateName keeps at most 58 characters of "<replicaset>-" before the 5 random ones
# (k8s.io/apiserver pkg/storage/names), so a 63-character name may have lost the tail
# of the Deployment's name.
_MAX_POD_NAME = 63


def pod_controller_name(pod: Any) -> str:
    """The Deployment that owns a pod, from the pod's name alone.

    A Deployment's ReplicaSet is ``<deployment>-<pod-template-hash>`` and its pods are
    ``<replicaset>-<5 random characters>``, both from Kubernetes' vowel-free alphabet
    (deployment controller ``ComputeHash`` and ``generateName``):
    ``checkout-7d4b9c6f8-x2k4p`` -> ``checkout``.

    Raises:
        FilterError: the name does not have that shape (a StatefulSet, DaemonSet or Job
            pod, a bare pod), or it is 63 characters long so the Deployment's name may
            have been truncated by ``generateName``.
    """
    name = str(pod)  # StrictUndefined raises here when the label is missing
    found = _DEPLOYMENT_POD.fullmatch(name)
    if not found:
        raise FilterError(
            f"pod_controller_name: pod name {name!r} is not a Deployment's pod name "
            "(<deployment>-<pod-template-hash>-<5 characters>)"
        )
    if len(name) >= _MAX_POD_NAME:
        raise FilterError(
            f"pod_controller_name: pod name {name!r} is {len(name)} characters long, so "
            "Kubernetes may have truncated the Deployment's name in it; use a label that "
            "carries the Deployment's name instead"
        )
    return found.group(1)


def pod_statefulset_name(pod: Any) -> str:
    """The StatefulSet that owns a pod, from the pod's name ``<statefulset>-<ordinal>``.

    ``web-0`` -> ``web``, as the StatefulSet controller names pods.

    Raises:
        FilterError: the name does not end in ``-<ordinal>``.
    """
    name = str(pod)
    found = _STATEFULSET_POD.fullmatch(name)
    if not found:
        raise FilterError(
            f"pod_statefulset_name: pod name {name!r} is not a StatefulSet's pod name "
            "(<statefulset>-<ordinal>)"
        )
    return found.group(1)


# --------------------------------------------------------------------------- environment


class _Environment(ImmutableSandboxedEnvironment):
    """The sandbox, with lookups on labels/annotations/alert that name what is missing."""

    def getattr(self, obj: Any, attribute: str) -> Any:
        if isinstance(obj, _Fields):
            if attribute in obj:
                return obj[attribute]
            value = super().getattr(obj, attribute)
            if isinstance(value, Undefined) and not hasattr(obj, attribute):
                return self.undefined(hint=obj.missing(attribute), obj=obj, name=attribute)
            return value
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        if isinstance(obj, _Fields) and argument not in obj:
            return self.undefined(hint=obj.missing(argument), obj=obj, name=argument)
        return super().getitem(obj, argument)


ENVIRONMENT = _Environment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=False)
ENVIRONMENT.filters["pod_controller_name"] = pod_controller_name
ENVIRONMENT.filters["pod_statefulset_name"] = pod_statefulset_name

_ALLOWED_NAMES = frozenset(CONTEXT_NAMES) | frozenset(ENVIRONMENT.globals)


def is_template(text: Any) -> bool:
    """Whether a value is a string holding a Jinja2 expression or statement."""
    return isinstance(text, str) and TEMPLATE_MARKERS.search(text) is not None


def check_template(text: str) -> None:
    """Check a template at load time: it compiles, its filters exist, and it uses no
    names other than ``labels``, ``annotations`` and ``alert``.

    Raises:
        ValueError: e.g. ``template syntax error: unexpected '}' (line 1)`` or
            ``unknown name 'lables' (did you mean 'labels'?); templates can use labels,
            annotations and alert``.
    """
    try:
        ENVIRONMENT.from_string(text)  # compiles, so unknown filters fail here
        ast = ENVIRONMENT.parse(text)
    except TemplateAssertionError as err:  # compiled, but e.g. an unknown filter or test
        raise ValueError(f"template error: {err.message}") from None
    except TemplateSyntaxError as err:
        where = f" (line {err.lineno} of the template)" if "\n" in text else ""
        raise ValueError(f"template syntax error: {err.message}{where}") from None
    for name in sorted(meta.find_undeclared_variables(ast) - _ALLOWED_NAMES):
        close = difflib.get_close_matches(name, CONTEXT_NAMES, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown name {name!r}{hint}; templates can use labels, annotations and alert")


def alert_context(alert: AlertRef) -> dict[str, Any]:
    """The template context for one alert: ``labels``, ``annotations`` and ``alert``."""
    labels = _Fields(alert.labels, "label")
    annotations = _Fields(alert.annotations, "annotation")
    fields = {
        "status": alert.status,
        "fingerprint": alert.fingerprint,
        "starts_at": alert.starts_at,
        "ends_at": alert.ends_at,
        "generator_url": alert.generator_url,
        "receiver": alert.receiver,
        "group_key": alert.group_key,
        "external_url": alert.external_url,
        "labels": labels,
        "annotations": annotations,
    }
    return {"labels": labels, "annotations": annotations, "alert": _Fields(fields, "alert field")}


@functools.lru_cache(maxsize=1024)
def _compiled(text: str) -> Template:
    """A template compiled once: a playbook's few templates are rendered for every alert."""
    return ENVIRONMENT.from_string(text)


def render_string(text: str, context: Mapping[str, Any]) -> str:
    """Render one template with a context from ``alert_context``. Whitespace around the
    template as written is ignored (YAML block scalars leave a trailing newline); what the
    alert's values bring is kept as is, so ``deployment="checkout\n"`` renders to
    ``"checkout\n"`` and fails the name check (remediator.playbook.loader.render), never
    trimmed into another object's name.

    Raises:
        RenderError: e.g. ``label "pod" is not set on the alert``, or a filter's or the
            sandbox's refusal (``access to attribute '__class__' of 'str' object is unsafe.``).
    """
    try:
        rendered = _compiled(text.strip()).render(context)
    except FilterError as err:
        raise RenderError(str(err)) from None
    except TemplateError as err:  # UndefinedError, SecurityError, syntax
        raise RenderError(err.message or type(err).__name__) from None
    except (ArithmeticError, TypeError, ValueError, LookupError) as err:
        raise RenderError(f"template failed: {err}") from None
    if is_template(rendered):
        raise RenderError(f"the template rendered to {rendered!r}, which is still a template")
    return rendered
