"""Timer, the app's housekeeping (one timer, so one Flex Consumption instance group), in two steps:
1. turn dead-lettered pipeline messages into `failed` statuses (shared/ops/sweep.py);
2. enqueue documents that were vaulted but never queued (shared/ops/reconcile.py).
A step that fails does not keep the other from running; the invocation then fails with its error."""
import logging

import azure.functions as func

from shared.bootstrap import services
from shared.ops.reconcile import PostgresProgress, reconcile
from shared.ops.sweep import PostgresCheckpoints, sweep

bp = func.Blueprint()
log = logging.getLogger(__name__)


def _sweep() -> None:
    s = services()
    report = sweep(s.bus_admin, s.bus, checkpoints=PostgresCheckpoints(s.pool))
    if any(report.notified.values()) or report.unreadable:
        log.info("dead letters reported as failed: %s; unreadable: %d", report.notified, len(report.unreadable))


def _reconcile() -> None:
    s = services()
    progress = PostgresProgress(s.pool)
    report = reconcile(progress.sources(), vault=s.vault, bus=s.bus, progress=progress)
    if report.requeued:
        log.warning("enqueued %d document(s) vaulted but never queued: %s", len(report.requeued),
                    ", ".join(report.requeued[:20]))


def housekeeping() -> None:
    errors = []
    for step in (_sweep, _reconcile):
        try:
            step()
        except Exception as exc:  # noqa: BLE001 - run the other step; fail the invocation below
            log.exception("housekeeping step %s failed", step.__name__.lstrip("_"))
            errors.append(exc)
    if errors:
        raise errors[0]


@bp.function_name("dead_letter_sweeper")
@bp.timer_trigger(arg_name="timer", schedule="%MARKR_DEAD_LETTER_SWEEP_SCHEDULE%", run_on_startup=False)
def dead_letter_sweeper(timer: func.TimerRequest) -> None:
    housekeeping()
