"""The brakes as activities: concurrency slots, the gate before every mutation, flip-flops.

Registered by worker.py with the process's ``Brakes`` (remediator.audit.brakes: the audit
database every worker of the cluster shares) and ``KubeClient`` (the node limit counts the
cluster's unschedulable nodes). Sync activities on the worker's thread pool. Each decision is
one database transaction, so it holds across runs, crashes and worker processes; a retried
activity finds what its first attempt decided.
"""

from __future__ import annotations

import json

from sqlalchemy import text
from temporalio import activity

from remediator.audit.brakes import Brakes
from remediator.db import json_int, json_text, json_true
from remediator.domain.messages import (
    FlipFlopInput,
    FlipFlopResult,
    GateInput,
    GateResult,
    ReleaseInput,
    SlotInput,
    SlotResult,
)
from remediator.k8s.client import KubeClient
from remediator.k8s.errors import api_errors


class BrakesActivities:
    """``BrakesActivities(brakes, kube).gate_mutation`` etc."""

    def __init__(self, brakes: Brakes, kube: KubeClient) -> None:
        self.brakes = brakes
        self.kube = kube

    @activity.defn
    def acquire_slot(self, inp: SlotInput) -> SlotResult:
        """Take a concurrency slot, or say where the run waits (``Brakes.acquire_slot``)."""
        return self.brakes.acquire_slot(inp)

    @activity.defn
    def release_brakes(self, inp: ReleaseInput) -> None:
        """The run ended or hands over: free its slot, drop its frozen marker."""
        self.brakes.release(inp.run_id)

    @activity.defn
    def gate_mutation(self, inp: GateInput) -> GateResult:
        """Pause and limits before one mutation (``Brakes.gate``); the node limit lists the
        cluster's Nodes (every unschedulable one counts, whoever cordoned it).

        Raises:
            ApplicationError: the Nodes cannot be listed (classified as the other API calls).
        """
        with api_errors("count unschedulable nodes"):
            return self.brakes.gate(inp, self._nodes)

    def _nodes(self) -> tuple[set[str], int]:
        nodes = self.kube.list("Node")
        unschedulable = {n["metadata"]["name"] for n in nodes if (n.get("spec") or {}).get("unschedulable")}
        return unschedulable, len(nodes)

    @activity.defn
    def rolled_away_from(self, inp: FlipFlopInput) -> FlipFlopResult:
        """The earlier run, if any, whose rollback of the same Deployment rolled away from the
        pod template this rollback would return to (``template_sha256`` of the plan's
        ``to_template_sha256``), read from the audit trail's plan and mutation events."""
        store = self.brakes.store
        d = store.dialect
        with store.transaction() as db:
            row = db.execute(
                text(f"""
                SELECT p.run_id, {json_int(d, 'p.data', 'change.revision')} AS revision, p.at
                FROM events p JOIN runs r ON r.run_id = p.run_id
                WHERE r.workflow_id = :workflow_id AND p.run_id != :run_id AND p.kind = 'plan'
                  AND {json_text(d, 'p.data', 'action')} = 'rollback'
                  AND {json_int(d, 'p.data', 'step')} >= 0
                  AND {json_text(d, 'p.data', 'change.from_template_sha256')} = :template_sha256
                  AND EXISTS (SELECT 1 FROM events m WHERE m.run_id = p.run_id AND m.kind = 'mutation'
                              AND {json_int(d, 'm.data', 'step')} = {json_int(d, 'p.data', 'step')}
                              AND {json_true(d, 'm.data', 'changed')})
                ORDER BY p.seq DESC LIMIT 1
                """),
                {"workflow_id": inp.workflow_id, "run_id": inp.run_id, "template_sha256": inp.template_sha256},
            ).mappings().first()
        if row is None:
            return FlipFlopResult()
        return FlipFlopResult(run_id=row["run_id"], at=row["at"], detail=json.dumps({"revision": row["revision"]}))
