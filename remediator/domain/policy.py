"""The policy above the playbooks: which namespaces may be touched, and the cluster-wide limits.

One file (``--policy``, default ``policy.yaml``), validated at start like the playbooks
(remediator.playbook.policy_loader: ``file:line: field: message``) and enforced by the brakes
(remediator.audit.brakes, activities/brakes.py) for every run of every worker on the cluster.
No I/O here: the workflow sandbox may import it.

Shape::

    namespaces:
      allow: ["prod", "staging-*"]    # globs; absent = every namespace not denied; [] = none
      deny: ["kube-system", "kube-public", "kube-node-lease"]
    limits:
      concurrent_remediations: 5      # runs past diagnosis at once, whole cluster
      unschedulable_nodes: "10%"      # or a count; every unschedulable node counts
      actions:                        # per action, across all runs
        rollback: {max: 3, per: 1h}
      per_target: {max: 3, per: 24h}  # remediations of one object
      queue_timeout: 15m              # how long a run waits for a concurrency slot
    gitops: approve                   # approve | refuse | allow

A limit left out of the file takes the conservative default shown by ``remediator schema
--policy``; there is no "unlimited" value, so a typo can never lift a limit.
"""

from __future__ import annotations

import fnmatch
import math
import re
from datetime import timedelta
from typing import Literal

from pydantic import Field, field_validator

from remediator.domain.actions import ACTION_NAMES, Strict
from remediator.domain.durations import Duration

SYSTEM_NAMESPACES = ("kube-system", "kube-public", "kube-node-lease")
_PERCENT = re.compile(r"^(\d+(?:\.\d+)?)%$")


class Rate(Strict):
    """At most ``max`` in any window of ``per`` (a sliding window, counted from the audit store)."""

    max: int = Field(ge=0, description="How many in any window of `per`; 0 forbids it.")
    per: Duration = Field(description="The window, e.g. 1h.")

    @field_validator("per")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("must be longer than 0s")
        return value

    def __str__(self) -> str:
        from remediator.domain.durations import format_duration

        return f"{self.max} per {format_duration(self.per)}"


class Namespaces(Strict):
    """Namespaces remediator may act in (shell globs, ``fnmatch``). ``allow`` absent: every
    namespace not denied; ``[]``: none. ``deny`` wins over ``allow``."""

    allow: list[str] | None = Field(None, description="Globs; absent: every namespace not denied; []: none.")
    deny: list[str] = Field(default_factory=lambda: list(SYSTEM_NAMESPACES), description="Globs; wins over allow.")

    def refusal(self, namespace: str | None) -> str | None:
        """Why a target in ``namespace`` may not be touched, or None. Cluster-scoped targets
        (Nodes, ``namespace`` None) are not subject to namespace rules."""
        if namespace is None:
            return None
        for glob in self.deny:
            if fnmatch.fnmatchcase(namespace, glob):
                return f"namespace {namespace} is denied by the policy (namespaces.deny: {glob!r})"
        if self.allow is None:
            return None
        if not any(fnmatch.fnmatchcase(namespace, glob) for glob in self.allow):
            allowed = ", ".join(repr(g) for g in self.allow) or "none"
            return f"namespace {namespace} is not allowed by the policy (namespaces.allow: {allowed})"
        return None


class Limits(Strict):
    """Cluster-wide limits; each holds across every run and worker (remediator.audit.brakes)."""

    concurrent_remediations: int = Field(5, ge=1, description="Runs past diagnosis at once, whole cluster.")
    unschedulable_nodes: int | str = Field(
        "10%",
        description='Most nodes unschedulable at once, whoever cordoned them: a count or a percentage of '
        'the nodes ("10%", rounded down as Kubernetes rounds maxUnavailable).',
    )
    actions: dict[str, Rate] = Field(
        default_factory=lambda: {
            "rollback": Rate(max=3, per=timedelta(hours=1)),
            "rollout_restart": Rate(max=10, per=timedelta(hours=1)),
        },
        description="Per action (its playbook key), across all runs.",
    )
    per_target: Rate = Field(
        default_factory=lambda: Rate(max=3, per=timedelta(hours=24)),
        description="Remediations of one object; past it a run asks (or escalates) instead of acting.",
    )
    queue_timeout: Duration = Field(
        timedelta(minutes=15), description="How long a run waits for a concurrency slot.",
        json_schema_extra={"default": "15m"},
    )

    @field_validator("unschedulable_nodes", mode="before")
    @classmethod
    def _count_or_percent(cls, value: object) -> int | str:
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise ValueError(f'expected a count such as 1 or a percentage such as "10%", got {value!r}')
        if isinstance(value, int):
            if value < 0:
                raise ValueError("must not be negative")
            return value
        match = _PERCENT.match(value.strip())
        if not match or float(match.group(1)) > 100:
            raise ValueError(f'expected a count such as 1 or a percentage such as "10%", got {value!r}')
        return value.strip()

    @field_validator("actions")
    @classmethod
    def _known_actions(cls, value: dict[str, Rate]) -> dict[str, Rate]:
        unknown = sorted(set(value) - set(ACTION_NAMES))
        if unknown:
            raise ValueError(f"unknown action {unknown[0]!r}; known: {', '.join(ACTION_NAMES)}")
        return value

    def node_limit(self, total: int) -> int:
        """The most nodes that may be unschedulable in a cluster of ``total`` nodes: the count,
        or the percentage of ``total`` rounded down (as Kubernetes rounds ``maxUnavailable``)."""
        if isinstance(self.unschedulable_nodes, int):
            return self.unschedulable_nodes
        percent = float(self.unschedulable_nodes.rstrip("%"))
        return math.floor(total * percent / 100 + 1e-9)


class Policy(Strict):
    """The policy file. ``gitops``: what a spec-changing step on an object a GitOps controller
    manages does: ``approve`` (always ask, saying the controller will revert it), ``refuse``,
    ``allow``."""

    namespaces: Namespaces = Field(default_factory=Namespaces)
    limits: Limits = Field(default_factory=Limits)
    gitops: Literal["approve", "refuse", "allow"] = "approve"


SPEC_CHANGING_ACTIONS = frozenset({"rollout_restart", "scale", "rollback"})
"""Actions that change a workload's spec, which a GitOps controller would revert."""

NODE_ACTIONS = frozenset({"cordon", "drain"})
"""Actions that make a node unschedulable (a drain cordons first, as kubectl drain)."""
