"""Consumes submission-validation in batches: parse and check vaulted documents; reject or pass them on."""
import azure.functions as func

from functions.queues import consume_batch, consume_retry
from shared.bootstrap import services
from shared.bus.queues import VALIDATION, retry_queue
from shared.pipeline import stages

bp = func.Blueprint()


def _validate(batch):
    s = services()
    return stages.validate(batch, vault=s.vault, bus=s.bus, store=s.store)


@bp.function_name("validator")
@bp.service_bus_queue_trigger(arg_name="batch", queue_name=VALIDATION, connection="ServiceBusConnection",
                              cardinality=func.Cardinality.MANY)
def validator(batch: list[func.ServiceBusMessage]) -> None:
    consume_batch(VALIDATION, batch, _validate)


@bp.function_name("validator_retry")
@bp.service_bus_queue_trigger(arg_name="msg", queue_name=retry_queue(VALIDATION), connection="ServiceBusConnection")
def validator_retry(msg: func.ServiceBusMessage) -> None:
    consume_retry(retry_queue(VALIDATION), msg, _validate)
