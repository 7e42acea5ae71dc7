"""Readable renderings of the audit trail, for ``remediator audit show|list`` (remediator.cli).

* ``render_run``: one run as a timeline: a header (run, target, playbook with path and sha256,
  alerts, start/end, outcome, a SIMULATED CLUSTER banner for simulated runs), then one line per
  event with its time relative to the start of the run; mutations show the exact request sent
  (method, path, content type, compact JSON body) and resourceVersion before -> after, health
  checks pass/FAIL, decisions their reason;
* ``render_runs`` / ``render_intake``: tables for ``audit list`` / ``audit intake``;
* ``run_as_dict``: the same run as plain JSON-able data for ``--output json``.

Laid out for a 100-column terminal. All text from the database goes in as ``rich.text.Text``,
never as console markup, so a message holding ``[brackets]`` is shown as written.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from rich import box
from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from remediator.audit.store import AuditStore, EventRow, IntakeRow, RunRow
from remediator.domain.durations import format_duration

OUTCOME_STYLE = {
    "running": "bold cyan",
    "healed": "bold green",
    "resolved": "bold green",
    "not_healed": "bold yellow",
    "refused": "bold yellow",
    "rolled_back": "bold magenta",
    "failed": "bold red",
    "terminated": "bold red",
    "timed_out": "bold red",
    "cancelled": "bold yellow",
}
KIND_STYLE = {
    "run_started": "cyan",
    "alert": "magenta",
    "decision": "blue",
    "step_intent": "bold",
    "plan": "bold",
    "mutation": "bold yellow",
    "undo": "bold magenta",
    "health": "green",
    "outcome": "bold",
}
SIMULATED_BANNER = "SIMULATED CLUSTER: this run acted on a simulated cluster, not a real one"


def render_run(store: AuditStore, run_id: str) -> RenderableType:
    """The run (full ID or unique prefix, as ``AuditStore.get_run``) as a header and a timeline.

    Raises:
        LookupError: no such run, or an ambiguous prefix.
    """
    run = store.get_run(run_id)
    events = store.events(run.run_id)
    parts: list[RenderableType] = [_header(run, events)]
    if run.simulate:
        parts.append(Text(f" {SIMULATED_BANNER} ", style="bold white on red", justify="center"))
    parts.append(_timeline(run, events))
    return Group(*parts)


def run_as_dict(store: AuditStore, run_id: str) -> dict[str, Any]:
    """``{"run": {...}, "events": [{...}, ...]}`` with RFC 3339 UTC times, for ``--output json``.

    Raises:
        LookupError: as ``render_run``.
    """
    run = store.get_run(run_id)
    return {
        "run": run.model_dump(mode="json"),
        "events": [e.model_dump(mode="json") for e in store.events(run.run_id)],
    }


def render_runs(rows: list[RunRow]) -> Table:
    """Runs as a table, in the order given, two lines per run (alertname over playbook, outcome
    over "simulated") to fit 100 columns. RUN is the first 8 characters of the run ID: enough
    for ``remediator audit show``, which takes a unique prefix."""
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, padding=(0, 1, 0, 0))
    table.add_column("RUN", no_wrap=True)
    table.add_column("STARTED (UTC)", no_wrap=True)
    table.add_column("TOOK", no_wrap=True, justify="right")
    table.add_column("OUTCOME", no_wrap=True)
    table.add_column("ALERTNAME / PLAYBOOK", overflow="fold")
    table.add_column("TARGET", overflow="fold")
    # Only engines started with --cluster name one; a single-cluster trail reads as before.
    clustered = any(r.cluster for r in rows)
    for r in rows:
        outcome = Text()
        outcome.append(r.outcome, style=OUTCOME_STYLE.get(r.outcome, ""))
        if r.simulate:
            outcome.append("\nsimulated", style="bold red")
        names = Text(r.alertname)
        names.append(f"\n{r.playbook}", style="dim")
        table.add_row(
            Text(r.run_id[:8]),
            Text(_clock(r.started_at, zone=False)),
            Text(format_duration(_round(r.ended_at - r.started_at)) if r.ended_at else "-"),
            outcome,
            names,
            Text(f"{r.cluster or '-'}/{r.target}" if clustered else r.target),
        )
    return table


def render_intake(rows: list[IntakeRow]) -> Table:
    """Intake records (alerts handled without a run, refused approval decisions) as a table, in
    the order given, two lines per record (alertname over playbook; the message over the
    fingerprint and the run concerned) to fit 80 columns."""
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, padding=(0, 1, 0, 0), expand=True)
    table.add_column("AT (UTC)", no_wrap=True)
    table.add_column("KIND", no_wrap=True)
    table.add_column("ALERTNAME / PLAYBOOK", overflow="fold", max_width=28)
    table.add_column("MESSAGE", overflow="fold", ratio=1, min_width=20)
    for r in rows:
        names = Text(r.alertname or "-")
        names.append(f"\n{r.playbook or '-'}", style="dim")
        message = Text(r.message)
        detail = " ".join(
            part for part in (f"fingerprint {r.fingerprint}" if r.fingerprint else "", f"run {r.run_id[:8]}" if r.run_id else "")
            if part
        )
        if detail:
            message.append(f"\n{detail}", style="dim")
        table.add_row(
            Text(_clock(r.at, zone=False)),
            Text(r.kind, style="yellow" if r.kind in ("unmatched", "render_failed") else ""),
            names,
            message,
        )
    return table


# --------------------------------------------------------------------------- pieces


def _header(run: RunRow, events: list[EventRow]) -> Panel:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(overflow="fold")
    grid.add_row("Run", Text(run.run_id))
    grid.add_row("Workflow", Text(run.workflow_id))
    if run.cluster:
        grid.add_row("Cluster", Text(run.cluster))
    grid.add_row("Target", Text(run.target))
    playbook = Text()
    playbook.append(run.playbook, style="bold")
    playbook.append(f"  {run.playbook_path}")
    playbook.append(f"  sha256:{run.playbook_sha256[:12]}", style="dim")
    grid.add_row("Playbook", playbook)
    grid.add_row("Alerts", _alerts(run, events))
    grid.add_row("Started", Text(_clock(run.started_at)))
    if run.ended_at:
        took = format_duration(_round(run.ended_at - run.started_at))
        grid.add_row("Ended", Text(f"{_clock(run.ended_at)}  (took {took})"))
    else:
        grid.add_row("Ended", Text("-", style="dim"))
    outcome = Text()
    outcome.append(run.outcome, style=OUTCOME_STYLE.get(run.outcome, "bold"))
    reason = next((e.data.get("reason") for e in reversed(events) if e.kind == "outcome"), None)
    if reason:
        outcome.append(f"  {reason}")
    grid.add_row("Outcome", outcome)
    title = Text()
    title.append("remediation run", style="bold")
    if run.simulate:
        title.append("  SIMULATED", style="bold white on red")
    return Panel(grid, title=title, title_align="left", box=box.ROUNDED)


def _alerts(run: RunRow, events: list[EventRow]) -> Text:
    seen: dict[str, EventRow] = {}
    for e in events:
        if e.kind == "alert" and e.dedup_key and e.dedup_key not in seen:
            seen[e.dedup_key] = e
    if not seen:
        return Text(run.alertname)
    out = Text()
    for i, (dedup_key, e) in enumerate(seen.items()):
        if i:
            out.append("\n")
        out.append(_labels(e.data).get("alertname") or run.alertname, style="bold")
        status = e.data.get("status")
        if status:
            out.append(f" {status}", style="red" if status == "firing" else "green")
        disposition = e.data.get("disposition")
        if disposition and disposition != "started":
            out.append(f" ({disposition})")
        out.append(f"  {dedup_key}", style="dim")
    return out


def _labels(data: dict[str, Any]) -> dict[str, str]:
    """An alert event's labels: the workflow nests the ``AlertRef`` under ``alert``; a flat
    ``AlertRef`` dump is read too."""
    return data.get("labels") or (data.get("alert") or {}).get("labels") or {}


def _timeline(run: RunRow, events: list[EventRow]) -> Table:
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, padding=(0, 1, 0, 0), expand=True)
    table.add_column("TIME", justify="right", no_wrap=True)
    table.add_column("KIND", no_wrap=True)
    table.add_column("EVENT", overflow="fold", ratio=1)
    for e in events:
        table.add_row(
            Text(_relative(e.at - run.started_at), style="dim"),
            Text(e.kind, style=KIND_STYLE.get(e.kind, "")),
            _event_body(e),
        )
    if not events:
        table.add_row("", "", Text("no events recorded", style="dim"))
    return table


def _event_body(e: EventRow) -> Text:
    d = e.data
    out = Text(e.message)
    if e.kind == "mutation" and d.get("undo") is True and not e.message.startswith("undo"):
        out = Text("undo: ", style="magenta") + out
    if e.kind in ("mutation", "undo"):
        for req in d.get("requests") or []:
            out.append("\n")
            out.append(f"{req.get('method', '?')} {req.get('path', '?')}", style="bold")
            if req.get("content_type"):
                out.append(f"\nContent-Type: {req['content_type']}", style="dim")
            if req.get("body") is not None:
                out.append("\n")
                out.append(_compact(req["body"]), style="cyan")
        if d.get("changed") is False and not d.get("requests"):
            out.append("\nno change sent (already in the desired state)", style="dim")
        if d.get("already_applied"):
            out.append("\nno request sent again: an earlier attempt had applied the plan", style="dim")
        before, after = d.get("resource_version_before"), d.get("resource_version_after")
        if before and after:
            out.append(f"\nresourceVersion {before} -> {after}", style="dim")
        elif before or after:
            out.append(f"\nresourceVersion {before or after}", style="dim")
    elif e.kind == "health":
        healthy = d.get("healthy")
        if healthy is not None:
            prefix = Text()
            prefix.append(
                "PASS" if healthy else "FAIL", style="bold green" if healthy else "bold red"
            )
            prefix.append(" ")
            check = d.get("check")
            if check and not e.message.startswith(f"{check}:"):
                prefix.append(f"{check}: ", style="bold")
            out = prefix + out
            if not healthy and d.get("final"):
                out.append("  (final)", style="red")
    elif e.kind in ("decision", "outcome"):
        outcome = d.get("outcome")
        if e.kind == "outcome" and outcome and not e.message.startswith(outcome):
            prefix = Text()
            prefix.append(outcome, style=OUTCOME_STYLE.get(outcome, "bold"))
            prefix.append(" ")
            out = prefix + out
        elif e.kind == "outcome" and outcome:
            out.stylize(OUTCOME_STYLE.get(outcome, "bold"), 0, len(outcome))
        reason = d.get("reason")
        if reason and str(reason) not in e.message:
            out.append("\nbecause: ", style="dim")
            out.append(str(reason))
    elif e.kind == "plan":
        if d.get("precondition"):
            out.append("\nprecondition " + _compact(d["precondition"]), style="dim")
        for req in d.get("requests") or []:
            out.append("\nwill send ", style="dim")
            out.append(f"{req.get('method', '?')} {req.get('path', '?')}", style="bold")
            if req.get("body") is not None:
                out.append(" " + _compact(req["body"]), style="cyan")
    elif e.kind == "step_intent":
        if d.get("action"):
            out.append(f"\n{d['action']}", style="bold")
            if d.get("params"):
                out.append(" " + _compact(d["params"]), style="cyan")
    elif e.kind == "alert":
        labels = _labels(d)
        if labels:
            out.append(
                "\n" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())), style="dim"
            )
    elif e.kind == "run_started":
        if d.get("steps"):
            out.append("\nsteps: " + ", ".join(str(s) for s in d["steps"]), style="dim")
    return out


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _clock(value: datetime, zone: bool = True) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S" + ("Z" if zone else ""))


def _round(value: timedelta) -> timedelta:
    return timedelta(seconds=round(value.total_seconds()))


def _relative(delta: timedelta) -> str:
    """``+1.2s``, ``+2m03.4s``, ``+1h02m03s``; negative for an event before the run started."""
    seconds = delta.total_seconds()
    sign = "-" if seconds < 0 else "+"
    seconds = abs(seconds)
    if seconds < 60:
        return f"{sign}{seconds:.1f}s"
    minutes, secs = divmod(seconds, 60)
    if minutes < 60:
        return f"{sign}{int(minutes)}m{secs:04.1f}s"
    hours, minutes = divmod(int(minutes), 60)
    return f"{sign}{hours}h{minutes:02d}m{int(secs):02d}s"
