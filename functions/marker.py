"""Consumes submission-marking: merge a validated document into the results (highest marks kept)."""
import azure.functions as func

from functions.bindings import consume
from shared import wiring
from shared.bus.queues import MARKING
from shared.db.connection import pool
from shared.pipeline import stages

bp = func.Blueprint()


@bp.function_name("marker")
@bp.service_bus_queue_trigger(arg_name="msg", queue_name=MARKING, connection="ServiceBusConnection")
def marker(msg: func.ServiceBusMessage) -> None:
    consume(MARKING, msg, lambda data: stages.mark(data, vault=wiring.vault(), bus=wiring.bus(), pool=pool()))
