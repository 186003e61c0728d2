"""Consumes submission-notification: status events from outside the stages (replays, dead letters)."""
import azure.functions as func

from functions.queues import consume_one
from shared.bootstrap import services
from shared.bus.queues import NOTIFICATION
from shared.pipeline import stages

bp = func.Blueprint()


@bp.function_name("notifier")
@bp.service_bus_queue_trigger(arg_name="msg", queue_name=NOTIFICATION, connection="ServiceBusConnection")
def notifier(msg: func.ServiceBusMessage) -> None:
    consume_one(NOTIFICATION, msg, lambda batch: stages.notify(batch, store=services().store))
