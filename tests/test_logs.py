"""Logs a person can read (text) and a pipeline can parse (JSON): the Temporal SDK's run details
leave the message for the record's extra, and come out as a short context or as fields."""

from __future__ import annotations

import dataclasses
import io
import json
import logging

import pytest
from temporalio import activity, workflow
from temporalio.testing import ActivityEnvironment

from remediator.app.logs import setup_logging

RUN_ID = "0193abcd-1111-2222-3333-444455556666"


@pytest.fixture
def logs():
    """``setup(simulate, log_format)`` logs to a buffer and returns it; the process's logging
    (root handlers, level, the SDK adapters' switches) is put back afterwards."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level, activity.logger.activity_info_on_message, workflow.logger.workflow_info_on_message)

    def setup(simulate: bool = False, log_format: str = "text") -> io.StringIO:
        out = io.StringIO()
        setup_logging(simulate, log_format=log_format, stream=out, temporal_core=False)
        return out

    try:
        yield setup
    finally:
        root.handlers[:], root.level = saved[0], saved[1]
        activity.logger.activity_info_on_message, workflow.logger.workflow_info_on_message = saved[2], saved[3]


def run_in_activity(*messages: tuple[int, str]) -> None:
    """Log through temporalio's activity logger adapter, inside an activity of a remediation run."""
    env = ActivityEnvironment()
    env.info = dataclasses.replace(
        env.info,
        activity_type="check_rollout_status",
        attempt=2,
        workflow_id="remediation/deployment/prod/checkout",
        workflow_run_id=RUN_ID,
        workflow_type="RemediationWorkflow",
    )

    def act() -> None:
        for level, message in messages:
            activity.logger.log(level, message)

    env.run(act)


def test_text_is_one_line_with_the_run_and_no_sdk_dict(logs):
    out = logs()
    run_in_activity((logging.INFO, "rollout status deployment/prod/checkout: 3 of 3 updated"))
    lines = out.getvalue().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].endswith(
        " INFO temporalio.activity: deployment/prod/checkout run 0193abcd check_rollout_status (attempt 2): "
        "rollout status deployment/prod/checkout: 3 of 3 updated"
    ), lines[0]
    assert "{" not in lines[0] and "activity_id" not in lines[0]


def test_json_is_one_object_per_line_with_the_temporal_info(logs):
    out = logs(log_format="json")
    run_in_activity((logging.INFO, "first"), (logging.WARNING, 'second, with "quotes"\nand a newline'))
    lines = out.getvalue().splitlines()
    assert len(lines) == 2, lines
    first, second = (json.loads(line) for line in lines)
    assert first["message"] == "first" and first["level"] == "INFO" and first["logger"] == "temporalio.activity"
    assert first["time"].endswith("Z") and "T" in first["time"]
    assert first["workflow_id"] == "remediation/deployment/prod/checkout"
    assert first["run_id"] == RUN_ID
    assert first["target"] == "deployment/prod/checkout"
    assert first["activity_type"] == "check_rollout_status"
    assert first["attempt"] == 2
    assert "simulated_cluster" not in first
    assert second["message"] == 'second, with "quotes"\nand a newline' and second["level"] == "WARNING"


def test_plain_records_have_no_run_context(logs):
    out = logs(log_format="json")
    logging.getLogger("remediator.app.intake").info("alert %s unmatched", "Foo")
    entry = json.loads(out.getvalue())
    assert entry["message"] == "alert Foo unmatched" and entry["logger"] == "remediator.app.intake"
    assert set(entry) == {"time", "level", "logger", "message"}
    out = logs()
    logging.getLogger("remediator.app.intake").info("alert %s unmatched", "Foo")
    assert out.getvalue().rstrip("\n").endswith(" INFO remediator.app.intake: alert Foo unmatched")


def test_simulate_marks_every_line(logs):
    out = logs(simulate=True)
    logging.getLogger("remediator").info("hello")
    run_in_activity((logging.INFO, "patched"))
    lines = out.getvalue().splitlines()
    assert lines[0].endswith(" INFO remediator: [simulated cluster] hello")
    assert ": [simulated cluster] deployment/prod/checkout run 0193abcd" in lines[1] and lines[1].endswith("patched")
    out = logs(simulate=True, log_format="json")
    logging.getLogger("remediator").info("hello")
    run_in_activity((logging.INFO, "patched"))
    entries = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [e["simulated_cluster"] for e in entries] == [True, True]
    assert [e["message"] for e in entries] == ["hello", "patched"]  # the message itself is not prefixed


def test_workflow_records_carry_their_run(logs):
    # What temporalio.workflow.logger puts in extra (it needs a running workflow to do it).
    details = {"workflow_id": "remediation/node/worker-2", "run_id": RUN_ID, "workflow_type": "RemediationWorkflow", "attempt": 1}
    out = logs()
    logging.getLogger("temporalio.workflow").info("remediation of node/worker-2 ended healed", extra={"temporal_workflow": details})
    assert out.getvalue().rstrip("\n").endswith(
        " INFO temporalio.workflow: node/worker-2 run 0193abcd: remediation of node/worker-2 ended healed"
    )
    out = logs(log_format="json")
    logging.getLogger("temporalio.workflow").info("ended", extra={"temporal_workflow": details})
    entry = json.loads(out.getvalue())
    assert (entry["target"], entry["run_id"], entry["workflow_type"]) == ("node/worker-2", RUN_ID, "RemediationWorkflow")


def test_the_sdk_adapters_no_longer_suffix_the_message(logs):
    logs()
    assert activity.logger.activity_info_on_message is False and activity.logger.activity_info_on_extra is True
    assert workflow.logger.workflow_info_on_message is False and workflow.logger.workflow_info_on_extra is True


def test_exceptions_in_text_a_summary_on_a_warning_a_traceback_on_an_error(logs):
    out = logs()
    log = logging.getLogger("remediator")
    try:
        raise KeyError("replicas")
    except KeyError:
        log.warning("attempt failed", exc_info=True)
        log.exception("internal error")
    lines = out.getvalue().splitlines()
    assert lines[0].endswith(" WARNING remediator: attempt failed: KeyError: 'replicas'")
    assert lines[1].endswith(" ERROR remediator: internal error")
    assert lines[2] == "Traceback (most recent call last):" and lines[-1] == "KeyError: 'replicas'"


def test_exceptions_in_json_stay_on_one_line(logs):
    out = logs(log_format="json")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logging.getLogger("remediator").exception("internal error")
    (line,) = out.getvalue().splitlines()
    entry = json.loads(line)
    assert entry["level"] == "ERROR" and entry["exception"].startswith("Traceback") and "RuntimeError: boom" in entry["exception"]


def test_an_unknown_format_is_refused():
    with pytest.raises(ValueError, match="text, json"):
        setup_logging(False, log_format="xml", temporal_core=False)
