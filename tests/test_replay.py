"""Replay: every recorded history of every released workflow version replays against the
current RemediationWorkflow without a nondeterminism error.

The histories in tests/histories/ were recorded by tests/histories/record.py from the code of
their version (``v1-*``: before plans, regular-activity audit writes and outcome notices;
``v2-*``: with them; ``v3-*``: alerts folded in at every step boundary; ``v4-*``: the brakes),
finished runs and runs
left in flight (waiting for approval). A change to
the workflow that would break a run in flight fails here unless guarded by
``workflow.patched()``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from workflows.remediation import RemediationWorkflow

HISTORIES = sorted((Path(__file__).parent / "histories").glob("*.json"))


def test_histories_of_every_released_version_are_here():
    versions = {p.name.split("-", 1)[0] for p in HISTORIES}
    assert {"v1", "v2", "v3", "v4"} <= versions
    assert any("waiting-for-approval" in p.name for p in HISTORIES)  # a run in flight


@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
async def test_recorded_history_replays(path: Path):
    history = WorkflowHistory.from_json(path.stem, path.read_text())
    replayer = Replayer(workflows=[RemediationWorkflow], data_converter=pydantic_data_converter)
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is None, f"{path.name}: {result.replay_failure}"
