"""Every function's trigger, as the Functions host will index it from function_app.app."""
import function_app
from devhost.discovery import indexed_functions
from shared.bus import queues


def bindings():
    found = {}
    for fn in indexed_functions(function_app.app):
        trigger = fn.get_trigger().get_dict_repr()
        found[fn.get_function_name()] = {k: getattr(v, "value", v) for k, v in trigger.items()}
        if "methods" in trigger:
            found[fn.get_function_name()]["methods"] = sorted(getattr(m, "value", m) for m in trigger["methods"])
    return found


def test_http_functions_routes_and_methods():
    b = bindings()
    http = {name: (spec["route"], spec["methods"], spec["authLevel"]) for name, spec in b.items()
            if spec["type"] == "httpTrigger"}
    assert http == {
        "receiver": ("import", ["POST"], "anonymous"),
        "results_aggregate": ("results/{testId}/aggregate", ["GET"], "anonymous"),
        "submission_status": ("submissions/{submissionId}", ["GET"], "anonymous"),
        "health": ("health", ["GET"], "anonymous"),
        "ops_queues": ("ops/queues", ["GET"], "admin"),
        "tests_catalogue": ("tests", ["GET"], "anonymous"),
        "results_histogram": ("results/{testId}/histogram", ["GET"], "anonymous"),
        "results_items": ("results/{testId}/items", ["GET"], "anonymous"),
        "results_students_csv": ("results/{testId}/students.csv", ["GET"], "anonymous"),
        "openapi": ("openapi.json", ["GET"], "anonymous"),
    }


def test_queue_functions_consume_their_own_queue_through_one_connection_setting():
    b = bindings()
    consumers = {name: (spec["queueName"], spec["connection"], spec.get("cardinality", "one"))
                 for name, spec in b.items() if spec["type"] == "serviceBusTrigger"}
    retry = queues.retry_queue
    assert consumers == {
        "validator": (queues.VALIDATION, "ServiceBusConnection", "many"),
        "marker": (queues.MARKING, "ServiceBusConnection", "many"),
        "aggregator": (queues.AGGREGATION, "ServiceBusConnection", "many"),
        # Messages that failed inside a batch are retried one at a time, so each dead-letters alone.
        "validator_retry": (retry(queues.VALIDATION), "ServiceBusConnection", "one"),
        "marker_retry": (retry(queues.MARKING), "ServiceBusConnection", "one"),
        "aggregator_retry": (retry(queues.AGGREGATION), "ServiceBusConnection", "one"),
        "notifier": (queues.NOTIFICATION, "ServiceBusConnection", "one"),
    }
    # Every queue a function consumes is defined once, in schemas/queues.json.
    assert {q for q, _, _ in consumers.values()} == set(queues.queue_definitions())


def test_dead_letter_sweeper_runs_on_the_configured_schedule():
    spec = bindings()["dead_letter_sweeper"]
    assert spec["type"] == "timerTrigger"
    assert spec["schedule"] == "%MARKR_DEAD_LETTER_SWEEP_SCHEDULE%"
