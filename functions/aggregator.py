"""Consumes results-aggregation: bring a test's statistics up to date."""
import azure.functions as func

from functions.bindings import consume
from shared import wiring
from shared.bus.queues import AGGREGATION
from shared.db.connection import pool
from shared.pipeline import stages

bp = func.Blueprint()


@bp.function_name("aggregator")
@bp.service_bus_queue_trigger(arg_name="msg", queue_name=AGGREGATION, connection="ServiceBusConnection")
def aggregator(msg: func.ServiceBusMessage) -> None:
    consume(AGGREGATION, msg, lambda data: stages.aggregate(data, bus=wiring.bus(), pool=pool()))
