"""The ``render_playbook`` activity: a queued alert's own playbook, rendered by the worker.

When an alert for a busy target matches another playbook than the run's, the run queues it
and, once it ends, hands the target over to that playbook if the alert still fires
(workflows/remediation.py). The playbooks are the worker's, loaded and validated at start
(remediator.playbook.loader); rendering is the intake's (``render``).
"""

from __future__ import annotations

from temporalio import activity

from remediator.domain.messages import RenderPlaybookInput, RenderPlaybookResult
from remediator.playbook.loader import PlaybookSet, RenderError, render


class PlaybookActivities:
    """``PlaybookActivities(playbooks, dry_run).render_playbook``; ``dry_run``: the worker's --dry-run."""

    def __init__(self, playbooks: PlaybookSet | None, dry_run: bool = False) -> None:
        self._playbooks = playbooks
        self._dry_run = dry_run

    @activity.defn
    def render_playbook(self, inp: RenderPlaybookInput) -> RenderPlaybookResult:
        """Render playbook ``inp.playbook`` against the alert; ``error`` says why it cannot be
        (no playbooks on this worker, a playbook of that name no longer loaded, a template
        that fails), never raised: the run records it and does not hand over."""
        if self._playbooks is None:
            return RenderPlaybookResult(error="this worker has no playbooks loaded")
        loaded = self._playbooks.by_name(inp.playbook)
        if loaded is None:
            return RenderPlaybookResult(error=f"playbook {inp.playbook} is not loaded on this worker")
        try:
            target, playbook = render(loaded, inp.alert)
        except RenderError as err:
            return RenderPlaybookResult(error=str(err))
        return RenderPlaybookResult(
            target=target, playbook=playbook, playbook_ref=loaded.ref, dry_run=self._dry_run or playbook.dry_run
        )
