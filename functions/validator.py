"""Consumes submission-validation: parse and check a vaulted document; reject it or pass it on."""
import azure.functions as func

from functions.bindings import consume
from shared import wiring
from shared.bus.queues import VALIDATION
from shared.db.connection import pool
from shared.pipeline import stages

bp = func.Blueprint()


@bp.function_name("validator")
@bp.service_bus_queue_trigger(arg_name="msg", queue_name=VALIDATION, connection="ServiceBusConnection")
def validator(msg: func.ServiceBusMessage) -> None:
    consume(VALIDATION, msg, lambda data: stages.validate(data, vault=wiring.vault(), bus=wiring.bus(), pool=pool()))
