"""Consumes results-aggregation in batches: bring the touched tests' statistics up to date, once per test."""
import azure.functions as func

from functions.queues import consume_batch, consume_retry
from shared.bootstrap import services
from shared.bus.queues import AGGREGATION, retry_queue
from shared.pipeline import stages

bp = func.Blueprint()


def _aggregate(batch):
    return stages.aggregate(batch, store=services().store)


@bp.function_name("aggregator")
@bp.service_bus_queue_trigger(arg_name="batch", queue_name=AGGREGATION, connection="ServiceBusConnection",
                              cardinality=func.Cardinality.MANY)
def aggregator(batch: list[func.ServiceBusMessage]) -> None:
    consume_batch(AGGREGATION, batch, _aggregate)


@bp.function_name("aggregator_retry")
@bp.service_bus_queue_trigger(arg_name="msg", queue_name=retry_queue(AGGREGATION),
                              connection="ServiceBusConnection")
def aggregator_retry(msg: func.ServiceBusMessage) -> None:
    consume_retry(retry_queue(AGGREGATION), msg, _aggregate)
