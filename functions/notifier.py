"""Consumes submission-notification: the only writer of the submissions status table."""
import azure.functions as func

from functions.bindings import consume
from shared.bus.queues import NOTIFICATION
from shared.db.connection import pool
from shared.pipeline import stages

bp = func.Blueprint()


@bp.function_name("notifier")
@bp.service_bus_queue_trigger(arg_name="msg", queue_name=NOTIFICATION, connection="ServiceBusConnection")
def notifier(msg: func.ServiceBusMessage) -> None:
    consume(NOTIFICATION, msg, lambda data: stages.notify(data, pool=pool()))
