"""Consumes submission-marking in batches: merge validated documents into the results (highest marks kept)."""
import azure.functions as func

from functions.queues import consume_batch, consume_retry
from shared.bootstrap import services
from shared.bus.queues import MARKING, retry_queue
from shared.pipeline import stages

bp = func.Blueprint()


def _mark(batch):
    s = services()
    return stages.mark(batch, bus=s.bus, store=s.store)


@bp.function_name("marker")
@bp.service_bus_queue_trigger(arg_name="batch", queue_name=MARKING, connection="ServiceBusConnection",
                              cardinality=func.Cardinality.MANY)
def marker(batch: list[func.ServiceBusMessage]) -> None:
    consume_batch(MARKING, batch, _mark)


@bp.function_name("marker_retry")
@bp.service_bus_queue_trigger(arg_name="msg", queue_name=retry_queue(MARKING), connection="ServiceBusConnection")
def marker_retry(msg: func.ServiceBusMessage) -> None:
    consume_retry(retry_queue(MARKING), msg, _mark)
