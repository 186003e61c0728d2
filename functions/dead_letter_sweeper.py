"""Timer: turn dead-lettered pipeline messages into `failed` statuses (see shared/ops/sweep.py)."""
import logging

import azure.functions as func

from shared.bootstrap import services
from shared.ops.sweep import PostgresCheckpoints, sweep

bp = func.Blueprint()
log = logging.getLogger(__name__)


@bp.function_name("dead_letter_sweeper")
@bp.timer_trigger(arg_name="timer", schedule="%MARKR_DEAD_LETTER_SWEEP_SCHEDULE%", run_on_startup=False)
def dead_letter_sweeper(timer: func.TimerRequest) -> None:
    s = services()
    report = sweep(s.bus_admin, s.bus, checkpoints=PostgresCheckpoints(s.pool))
    if any(report.notified.values()) or report.unreadable:
        log.info("dead letters reported as failed: %s; unreadable: %d", report.notified, len(report.unreadable))
