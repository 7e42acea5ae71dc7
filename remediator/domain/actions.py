"""The action registry: one entry per action a playbook step can take.

For each action: its parameter model (the step's YAML under the action's key, e.g.
``scale: {delta: 1, min_replicas: 2, max_replicas: 10}``), the target kinds it acts on, the
kubectl command it mirrors, how its change is described to a person, and how it is undone (or
that it cannot be). The playbook model (remediator.domain.playbook: one optional field per
entry on ``Step``), the loader's checks, the worker's activity list (remediator.app.runtime),
the workflow (timeouts, heartbeats) and the Slack text all read it. Adding an action is one
entry here plus its activities (``plan_mutation`` planner and the action activity, in
activities/kube.py, named as the action).

Params travel through Temporal as these models (``ActionParams``), never as dicts validated
twice; ``params_for`` turns the dict an older workflow history carries into the model.

No I/O: the workflow sandbox imports this module.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from remediator.domain.durations import Duration

if TYPE_CHECKING:
    from remediator.domain.messages import TargetRef

TEMPLATE_PATTERN = r"(\{\{|\{%)"
TemplateString = Annotated[str, StringConstraints(pattern=TEMPLATE_PATTERN)]
"""A string that contains a Jinja2 expression; valid only until the playbook is rendered."""

TemplatedInt = Union[int, TemplateString]
"""An integer, or a template that must render to one."""

WorkloadKind = Literal["Deployment", "StatefulSet", "DaemonSet"]
TargetKind = Literal["Deployment", "StatefulSet", "DaemonSet", "Node"]
WORKLOAD_KINDS: tuple[str, ...] = ("Deployment", "StatefulSet", "DaemonSet")


class Strict(BaseModel):
    """Base for playbook models: unknown keys are errors (a typo must not be ignored)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)



class RolloutRestartParams(Strict):
    """``kubectl rollout restart``: patch ``kubectl.kubernetes.io/restartedAt`` on the pod template.

    Refused for a paused Deployment, as kubectl does.
    """


class ScaleParams(Strict):
    """``kubectl scale`` through the scale subresource, bounded by ``min_replicas``/``max_replicas``.

    Exactly one of ``replicas`` (absolute) or ``delta`` (relative to the current
    ``spec.replicas``; may be negative). The result is clamped into [min, max] and the
    clamp is recorded in the audit trail.
    """

    replicas: TemplatedInt | None = None
    delta: TemplatedInt | None = None
    min_replicas: int = Field(ge=0)
    max_replicas: int = Field(ge=1)

    @model_validator(mode="after")
    def _one_of(self) -> "ScaleParams":
        if (self.replicas is None) == (self.delta is None):
            raise ValueError("exactly one of replicas or delta is required")
        if self.min_replicas > self.max_replicas:
            raise ValueError("min_replicas must not be greater than max_replicas")
        return self


class RollbackParams(Strict):
    """``kubectl rollout undo``: back to ``to_revision`` (0 = the previous revision). Deployments only."""

    to_revision: int = Field(0, ge=0)


class CordonParams(Strict):
    """``kubectl cordon``: mark the target Node unschedulable."""


class UncordonParams(Strict):
    """``kubectl uncordon``: mark the target Node schedulable."""


class DrainParams(Strict):
    """``kubectl drain``: cordon, then evict every pod on the Node through the Eviction API.

    Field names follow kubectl's flags. Evictions refused by a PodDisruptionBudget (HTTP
    429) are retried every 5 s until ``timeout``; a pod is never deleted instead.
    """

    ignore_daemonsets: bool = True
    delete_emptydir_data: bool = False
    force: bool = Field(False, description="Also evict pods that no controller manages.")
    grace_period_seconds: int = Field(-1, ge=-1, description="-1: the pod's own terminationGracePeriodSeconds.")
    pod_selector: str = ""
    timeout: Duration = timedelta(minutes=5)


class DeletePodParams(Strict):
    """``kubectl delete pod``: delete one pod of the target (it must belong to the target)."""

    pod: str
    grace_period_seconds: int = Field(-1, ge=-1)


ActionParams = Union[
    RolloutRestartParams, ScaleParams, RollbackParams, CordonParams, UncordonParams, DrainParams, DeletePodParams
]
"""The parameters of any action; which one is named by the ``action`` next to it."""


def _obj(target: "TargetRef") -> str:
    return f"{target.kind.lower()} {target.namespace + '/' if target.namespace else ''}{target.name}"


@dataclass(frozen=True)
class ActionSpec:
    """One action. ``kinds``: target kinds it acts on. ``kubectl``: the command it mirrors.
    ``undo``: what undoes its change (an action name), None when it cannot be undone (a restart
    is not taken back). ``long_running``: its activity runs for minutes and reports progress
    (a drain); its start-to-close timeout is the step's ``timeout`` or its own, whichever is
    longer."""

    name: str
    params: type[BaseModel]
    kinds: tuple[str, ...]
    kubectl: str
    undo: str | None
    long_running: bool = False

    def describe(self, params: BaseModel, target: "TargetRef") -> str:
        """What the action will change, in the words of the kubectl command it mirrors."""
        obj = _obj(target)
        if isinstance(params, ScaleParams):
            size = f"to {params.replicas} replicas" if params.replicas is not None else f"by {int(params.delta):+d} replicas"
            return f"scale {obj} {size}, within {params.min_replicas}..{params.max_replicas} ({self.kubectl})"
        if isinstance(params, RollbackParams):
            where = "the previous revision" if params.to_revision == 0 else f"revision {params.to_revision}"
            return f"roll {obj} back to {where} ({self.kubectl})"
        if isinstance(params, DrainParams):
            return f"cordon {obj} and evict its pods through the Eviction API ({self.kubectl})"
        if isinstance(params, DeletePodParams):
            return f"delete pod {target.namespace}/{params.pod} of {obj} ({self.kubectl})"
        if isinstance(params, RolloutRestartParams):
            return f"restart every pod of {obj} ({self.kubectl})"
        return f"{self.name} {obj} ({self.kubectl})"

    def timeout(self, params: BaseModel, step_timeout: timedelta) -> timedelta:
        """Start-to-close timeout of the action's activity: the step's, or for a drain its own
        ``timeout`` plus a minute, so the drain's timeout decides."""
        if isinstance(params, DrainParams):
            return max(step_timeout, params.timeout + timedelta(minutes=1))
        return step_timeout


ACTIONS: dict[str, ActionSpec] = {
    spec.name: spec
    for spec in (
        ActionSpec("rollout_restart", RolloutRestartParams, WORKLOAD_KINDS, "kubectl rollout restart", undo=None),
        ActionSpec("scale", ScaleParams, ("Deployment", "StatefulSet"), "kubectl scale", undo="scale"),
        ActionSpec("rollback", RollbackParams, ("Deployment",), "kubectl rollout undo", undo="rollback"),
        ActionSpec("cordon", CordonParams, ("Node",), "kubectl cordon", undo="uncordon"),
        ActionSpec("uncordon", UncordonParams, ("Node",), "kubectl uncordon", undo="cordon"),
        ActionSpec("drain", DrainParams, ("Node",), "kubectl drain", undo="uncordon", long_running=True),
        ActionSpec("delete_pod", DeletePodParams, WORKLOAD_KINDS, "kubectl delete pod", undo=None),
    )
}
"""Every action, by the name a playbook step uses as its key."""

ACTION_NAMES: tuple[str, ...] = tuple(ACTIONS)
ACTION_KINDS: dict[str, tuple[str, ...]] = {name: spec.kinds for name, spec in ACTIONS.items()}
"""Which target kinds each action can act on."""


def params_for(action: str, params: Any) -> BaseModel:
    """The action's parameter model for ``params`` (a model already, or the dict an older
    workflow history carries).

    Raises:
        ValueError: unknown action; pydantic.ValidationError: params the model refuses.
    """
    spec = ACTIONS.get(action)
    if spec is None:
        raise ValueError(f"unknown action {action!r}; known: {', '.join(ACTIONS)}")
    if isinstance(params, spec.params):
        return params
    if isinstance(params, BaseModel):
        params = params.model_dump()
    return spec.params.model_validate(params or {})


def typed_params(data: Any, name_field: str, registry: dict[str, type[BaseModel]]) -> Any:
    """A model_validator(mode="before") body: ``data["params"]`` as the model
    ``registry[data[name_field]]`` names (dicts from older histories included)."""
    if isinstance(data, dict):
        model = registry.get(data.get(name_field))  # type: ignore[arg-type]
        params = data.get("params")
        if model is not None and not isinstance(params, model):
            data = {**data, "params": model.model_validate(params.model_dump() if isinstance(params, BaseModel) else (params or {}))}
    return data


ACTION_PARAMS: dict[str, type[BaseModel]] = {name: spec.params for name, spec in ACTIONS.items()}
