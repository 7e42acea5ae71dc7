"""Logging of the worker process: one line per event, as text for people or JSON for pipelines.

Temporal's logger adapters (``temporalio.activity.logger`` and ``temporalio.workflow.logger``,
which the activities and the workflow log through) append a dict of the run's details to every
message by default: ``... ({'activity_id': '2', 'activity_type': ..., 'attempt': 1, ...})``.
``setup_logging`` turns that off (``activity_info_on_message``, ``workflow_info_on_message``)
and keeps the details where the SDK also puts them, in the record's extra
(``temporal_activity``, ``temporal_workflow``), from which the formatters take what matters:

* ``text``: ``TIME LEVEL LOGGER: [simulated cluster] [CLUSTER/]TARGET run RUN8 ACTIVITY (attempt N): message``,
  the context only where a run is known (``run`` is the prefix ``remediator audit show`` takes),
  an exception summed up on its line (the traceback follows only an ERROR);
* ``json``: one object per line: ``time`` (UTC, RFC 3339), ``level``, ``logger``, ``message``,
  ``simulated_cluster`` (with ``--simulate``), and from a run: ``workflow_id``, ``run_id``,
  ``cluster`` (with ``--cluster``), ``target``, ``workflow_type``, ``activity_type``, ``activity_id``, ``attempt``,
  ``update_name``, ``update_id``, ``namespace``, ``task_queue``; ``exception`` when there is one.

The Temporal core's own lines (Rust; e.g. poll errors while the server is away) are forwarded
to the ``temporalio.core`` logger, so they come out in the same format instead of raw on stderr.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import IO, Any

from temporalio import activity, workflow
from temporalio.runtime import LogForwardingConfig, LoggingConfig, Runtime, TelemetryConfig, TelemetryFilter

from remediator.domain.runs import WORKFLOW_ID_PREFIX, cluster_of, target_key_of

LOG_FORMATS = ("text", "json")
NOISY = ("uvicorn.access", "kubernetes", "urllib3", "httpx")

_CONTEXT_KEYS = (
    "workflow_id", "run_id", "cluster", "target", "workflow_type", "activity_type", "activity_id", "attempt",
    "update_name", "update_id", "namespace", "task_queue",
)


def temporal_context(record: logging.LogRecord) -> dict[str, Any]:
    """What the Temporal SDK put in the record's extra about the run it was logged from (empty
    outside workflows and activities), with the remediation's ``target`` (and ``cluster``, with
    ``--cluster``) from its workflow ID."""
    found: dict[str, Any] = {}
    wf = getattr(record, "temporal_workflow", None)
    if isinstance(wf, Mapping):
        found.update(wf)
    act = getattr(record, "temporal_activity", None)
    if isinstance(act, Mapping):
        found.update(act)
        found["run_id"] = act.get("workflow_run_id")
    workflow_id = found.get("workflow_id")
    if isinstance(workflow_id, str) and workflow_id.startswith(WORKFLOW_ID_PREFIX):
        found["target"] = target_key_of(workflow_id)
        found["cluster"] = cluster_of(workflow_id)
    return {k: found[k] for k in _CONTEXT_KEYS if found.get(k) is not None}


def _core_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The extra fields of a line forwarded from the Temporal core (``temporal_log``)."""
    entry = getattr(record, "temporal_log", None)
    if entry is None:
        return {}
    try:
        return {"core_target": entry.target, **{str(k): v for k, v in (entry.fields or {}).items()}}
    except Exception:  # the SDK documents fields may fail to convert
        return {"core_target": getattr(entry, "target", "?")}


class TextFormatter(logging.Formatter):
    """``2026-11-21 05:00:02,114 INFO temporalio.activity: deployment/prod/checkout run 0193ab12
    check_rollout_status: rollout status ...``: one line per event. An exception is summed up on
    its line (``: KeyError: 'x'``); only an ERROR is followed by its traceback."""

    def format(self, record: logging.LogRecord) -> str:
        parts = []
        if getattr(record, "simulated_cluster", False):
            parts.append("[simulated cluster]")
        ctx = temporal_context(record)
        if ctx:
            parts.append(_context_text(ctx) + ":")
        message = record.getMessage()
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None and record.levelno < logging.ERROR:
            message += f": {_one_line(exc)}"  # e.g. the SDK's warning on each failed activity attempt
        parts.append(message)
        core = _core_fields(record)
        core.pop("core_target", None)
        if core:
            parts.append(" ".join(f"{k}={v}" for k, v in core.items()))
        line = f"{self.formatTime(record)} {record.levelname} {record.name}: {' '.join(parts)}"
        if exc is not None and record.levelno >= logging.ERROR:
            line += "\n" + self.formatException(record.exc_info)  # type: ignore[arg-type]
        if record.stack_info:
            line += "\n" + self.formatStack(record.stack_info)
        return line


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _context_text(ctx: Mapping[str, Any]) -> str:
    target = str(ctx.get("target") or ctx.get("workflow_id", "?"))
    words = [f"{ctx['cluster']}/{target}" if ctx.get("cluster") else target]
    if ctx.get("run_id"):
        words.append(f"run {str(ctx['run_id'])[:8]}")
    if ctx.get("activity_type"):
        words.append(str(ctx["activity_type"]))
    if ctx.get("update_name"):
        words.append(f"update {ctx['update_name']}")
    if ctx.get("activity_type") and isinstance(ctx.get("attempt"), int) and ctx["attempt"] > 1:
        words.append(f"(attempt {ctx['attempt']})")
    return " ".join(words)


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log pipelines (the fields are in the module docstring)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if getattr(record, "simulated_cluster", False):
            entry["simulated_cluster"] = True
        entry.update(temporal_context(record))
        entry.update({k: v for k, v in _core_fields(record).items() if k not in entry})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


class SimulatedClusterFilter(logging.Filter):
    """Marks every record ``simulated_cluster`` while the emulator is in use: the text format
    prefixes it ``[simulated cluster]``, the JSON format has ``"simulated_cluster": true``."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.simulated_cluster = True
        return True


def setup_logging(
    simulate: bool,
    level: int = logging.INFO,
    log_format: str = "text",
    *,
    stream: IO[str] | None = None,
    temporal_core: bool = True,
) -> logging.Handler:
    """Log to ``stream`` (stderr) in ``log_format`` (``text`` or ``json``); every record says it
    comes from the simulated cluster when ``simulate``. Temporal's run details go to the
    record's extra, not its message. ``temporal_core``: forward the Temporal core's lines to
    Python logging (sets the process's default Temporal runtime: call before any Client).
    Returns the handler."""
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}, got {log_format!r}")
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    if simulate:
        handler.addFilter(SimulatedClusterFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in NOISY:
        logging.getLogger(noisy).setLevel(logging.WARNING)
    activity.logger.activity_info_on_message = False
    activity.logger.activity_info_on_extra = True
    workflow.logger.workflow_info_on_message = False
    workflow.logger.workflow_info_on_extra = True
    if temporal_core:
        forwarding = LogForwardingConfig(
            logger=logging.getLogger("temporalio.core"),
            append_target_to_name=False,
            prepend_target_on_message=False,
            append_log_fields_to_message=False,
        )
        telemetry = TelemetryConfig(
            logging=LoggingConfig(filter=TelemetryFilter(core_level="WARN", other_level="ERROR"), forwarding=forwarding)
        )
        Runtime.set_default(Runtime(telemetry=telemetry), error_if_already_set=False)
    return handler
