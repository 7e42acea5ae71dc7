"""How a remediation run is named and found in Temporal.

* ``TASK_QUEUE`` and ``workflow_id_for``: one workflow ID per target object, which is what
  gives mutual exclusion (signal-with-start either starts the remediation or hands the alert
  to the one already running);
* the typed search attributes (``AlertName``, ``KubeNamespace``, ``Target``, ``Playbook``,
  ``Outcome``) the workflow sets and the worker registers on the server.

Used by the workflow (so no I/O), the intake, the settling of ended runs and the CLI.
"""

from __future__ import annotations

from temporalio.common import SearchAttributeKey

TASK_QUEUE = "remediator"
WORKFLOW_ID_PREFIX = "remediation/"

SA_ALERTNAME = SearchAttributeKey.for_keyword("AlertName")
SA_NAMESPACE = SearchAttributeKey.for_keyword("KubeNamespace")
SA_TARGET = SearchAttributeKey.for_keyword("Target")
SA_PLAYBOOK = SearchAttributeKey.for_keyword("Playbook")
SA_OUTCOME = SearchAttributeKey.for_keyword("Outcome")
SEARCH_ATTRIBUTES = (SA_ALERTNAME, SA_NAMESPACE, SA_TARGET, SA_PLAYBOOK, SA_OUTCOME)


def workflow_id_for(target_key: str) -> str:
    """Workflow ID of the remediation of one target: ``remediation/deployment/prod/checkout``.

    One ID per target object is what gives mutual exclusion: signal-with-start on it either
    starts the remediation or hands the alert to the one already running.
    """
    return WORKFLOW_ID_PREFIX + target_key
