"""How a remediation run is named and found in Temporal.

* ``TASK_QUEUE`` and ``workflow_id_for``: one workflow ID per target object (and cluster),
  which is what gives mutual exclusion (signal-with-start either starts the remediation or
  hands the alert to the one already running);
* ``cluster_task_queue``, ``cluster_of``, ``check_cluster_name``: an engine started with
  ``--cluster NAME`` names its runs ``remediation/NAME/<target key>`` and polls its own task
  queue ``<task queue>-NAME``, so engines of several clusters share one Temporal namespace;
  without a cluster, IDs and queues are exactly as before clusters existed;
* the typed search attributes (``AlertName``, ``KubeNamespace``, ``Target``, ``Playbook``,
  ``Outcome``, ``KubeCluster``) the intake and the workflow set and the worker registers on
  the server.

Used by the workflow (so no I/O), the intake, the settling of ended runs and the CLI.
"""

from __future__ import annotations

import re

from temporalio.common import SearchAttributeKey

TASK_QUEUE = "remediator"
WORKFLOW_ID_PREFIX = "remediation/"

SA_ALERTNAME = SearchAttributeKey.for_keyword("AlertName")
SA_NAMESPACE = SearchAttributeKey.for_keyword("KubeNamespace")
SA_TARGET = SearchAttributeKey.for_keyword("Target")
SA_PLAYBOOK = SearchAttributeKey.for_keyword("Playbook")
SA_OUTCOME = SearchAttributeKey.for_keyword("Outcome")
SA_CLUSTER = SearchAttributeKey.for_keyword("KubeCluster")
SEARCH_ATTRIBUTES = (SA_ALERTNAME, SA_NAMESPACE, SA_TARGET, SA_PLAYBOOK, SA_OUTCOME, SA_CLUSTER)

TARGET_KINDS = ("deployment", "statefulset", "daemonset", "node")
"""The first segment of every target key (``TargetRef.key``): a cluster may not be named so,
or ``remediation/node/worker-1`` would read both as a Node without cluster and as cluster
``node``."""

CLUSTER_NAME_MAX = 40
"""Longest cluster name: it is part of every workflow ID and of the task queue's name."""

_CLUSTER_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


def check_cluster_name(name: str) -> str | None:
    """None when ``name`` may name a cluster, else why not, as a person reads it.

    A cluster name is a DNS-1123 label (lower-case letters, digits and ``-``, starting and
    ending with a letter or digit, as Kubernetes names a namespace) of at most
    ``CLUSTER_NAME_MAX`` characters, and not one of ``TARGET_KINDS``.
    """
    if not _CLUSTER_NAME.fullmatch(name):
        return (
            f"{name!r} is not a DNS-1123 label: use lower-case letters, digits and '-', starting and ending "
            "with a letter or digit (e.g. 'prod-eu-1')"
        )
    if len(name) > CLUSTER_NAME_MAX:
        return f"{name!r} is {len(name)} characters long; at most {CLUSTER_NAME_MAX}"
    if name in TARGET_KINDS:
        return f"{name!r} is a target kind ({', '.join(TARGET_KINDS)}); workflow IDs would be ambiguous"
    return None


def workflow_id_for(target_key: str, cluster: str | None = None) -> str:
    """Workflow ID of the remediation of one target: ``remediation/deployment/prod/checkout``,
    or ``remediation/east/deployment/prod/checkout`` on cluster ``east``.

    One ID per target object (of a cluster) is what gives mutual exclusion: signal-with-start
    on it either starts the remediation or hands the alert to the one already running.
    """
    return WORKFLOW_ID_PREFIX + (f"{cluster}/{target_key}" if cluster else target_key)


def cluster_of(workflow_id: str) -> str | None:
    """The cluster a remediation's workflow ID names (``east`` of
    ``remediation/east/deployment/prod/checkout``), or None for an ID without one
    (``remediation/deployment/prod/checkout``) or one that is not a remediation's."""
    if not workflow_id.startswith(WORKFLOW_ID_PREFIX):
        return None
    first, sep, _ = workflow_id.removeprefix(WORKFLOW_ID_PREFIX).partition("/")
    if not sep or first in TARGET_KINDS:
        return None
    return first


def target_key_of(workflow_id: str) -> str:
    """The target key of a remediation's workflow ID, without its cluster
    (``deployment/prod/checkout``); the ID itself when it is not a remediation's."""
    if not workflow_id.startswith(WORKFLOW_ID_PREFIX):
        return workflow_id
    rest = workflow_id.removeprefix(WORKFLOW_ID_PREFIX)
    cluster = cluster_of(workflow_id)
    return rest.removeprefix(f"{cluster}/") if cluster else rest


def qualified_target(target_key: str, cluster: str | None) -> str:
    """The target as people name it across clusters: ``east/deployment/prod/checkout``, or
    the target key alone without a cluster (messages, CLI output, Slack notice threads)."""
    return f"{cluster}/{target_key}" if cluster else target_key


def cluster_task_queue(task_queue: str, cluster: str | None) -> str:
    """The task queue of the engine of ``cluster``: ``remediator-east`` for ``--task-queue
    remediator --cluster east``; ``task_queue`` itself without a cluster."""
    return f"{task_queue}-{cluster}" if cluster else task_queue
