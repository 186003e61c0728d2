"""Discovery of functions from a FunctionApp, binding expressions, NCRONTAB schedules, timers,
host.json and local settings."""
from __future__ import annotations

import json
import os
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import azure.functions as func
import pytest

from devhost.discovery import HttpFunction, QueueFunction, TimerFunction, discover
from devhost.host import LocalFunctionHost
from devhost.hostjson import load_host_config, parse_timespan
from devhost.ncrontab import parse_schedule
from devhost.settings import apply_values, load_local_settings
from devhost.stack import ROOT


def _app() -> func.FunctionApp:
    app = func.FunctionApp()

    @app.route(route="things/{id}", methods=["GET"])
    def things(req: func.HttpRequest) -> func.HttpResponse:
        return func.HttpResponse("ok")

    @app.function_name("consume")
    @app.service_bus_queue_trigger(arg_name="msg", queue_name="%DISCOVERY_QUEUE%", connection="Conn")
    def consume(msg: func.ServiceBusMessage) -> None:
        pass

    @app.timer_trigger(schedule="%DISCOVERY_SCHEDULE%", arg_name="timer")
    def tick(timer: func.TimerRequest) -> None:
        pass

    return app


def test_discovery_reads_triggers_and_resolves_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISCOVERY_QUEUE", "q-from-setting")
    monkeypatch.setenv("DISCOVERY_SCHEDULE", "0 */5 * * * *")
    found = {f.name: f for f in discover(_app())}
    assert isinstance(found["things"], HttpFunction)
    assert found["things"].route.template == "things/{id}" and found["things"].methods == ("GET",)
    assert isinstance(found["consume"], QueueFunction)
    assert (found["consume"].queue, found["consume"].connection, found["consume"].arg_name) == (
        "q-from-setting", "Conn", "msg")
    assert isinstance(found["tick"], TimerFunction) and found["tick"].schedule.text == "0 */5 * * * *"


def test_missing_setting_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DISCOVERY_QUEUE", raising=False)
    monkeypatch.setenv("DISCOVERY_SCHEDULE", "0 * * * * *")
    with pytest.raises(LookupError, match="DISCOVERY_QUEUE"):
        discover(_app())


def test_route_defaults_to_function_name_and_all_methods() -> None:
    app = func.FunctionApp()

    @app.route()
    def plain(req: func.HttpRequest) -> func.HttpResponse:
        return func.HttpResponse("ok")

    [fn] = discover(app)
    assert fn.route.template == "plain" and "DELETE" in fn.methods and "GET" in fn.methods


T0 = datetime(2026, 3, 14, 15, 9, 26, tzinfo=UTC)  # a Saturday


@pytest.mark.parametrize(("schedule", "expected"), [
    ("0 */1 * * * *", datetime(2026, 3, 14, 15, 10, 0, tzinfo=UTC)),
    ("*/10 * * * * *", datetime(2026, 3, 14, 15, 9, 30, tzinfo=UTC)),
    ("0 0 9-17 * * *", datetime(2026, 3, 14, 16, 0, 0, tzinfo=UTC)),
    ("0 30 9 * * Mon-Fri", datetime(2026, 3, 16, 9, 30, 0, tzinfo=UTC)),
    ("0 0 0 1 Jan,Jul *", datetime(2026, 7, 1, 0, 0, 0, tzinfo=UTC)),
    ("5,45 9 15 * * *", datetime(2026, 3, 14, 15, 9, 45, tzinfo=UTC)),
    ("0 0 12 29 2 *", datetime(2028, 2, 29, 12, 0, 0, tzinfo=UTC)),
    ("0 0 0 * * 0", datetime(2026, 3, 15, 0, 0, 0, tzinfo=UTC)),
    ("0 0 0 * * 7", datetime(2026, 3, 15, 0, 0, 0, tzinfo=UTC)),
    ("10-20/5 * * * * *", datetime(2026, 3, 14, 15, 10, 10, tzinfo=UTC)),
])
def test_ncrontab_next_occurrence(schedule: str, expected: datetime) -> None:
    assert parse_schedule(schedule).next_after(T0) == expected


@pytest.mark.parametrize("bad", ["* * * * *", "60 * * * * *", "* * * 0 * *", "*/0 * * * * *", "x * * * * *",
                                 "5-1 * * * * *"])
def test_ncrontab_rejects_bad_schedules(bad: str) -> None:
    with pytest.raises(ValueError, match="NCRONTAB"):
        parse_schedule(bad)


def test_timer_fires_with_a_timer_request(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEVHOST_TICK", "* * * * * *")
    fired: list[func.TimerRequest] = []
    two = threading.Event()
    app = func.FunctionApp()

    @app.timer_trigger(schedule="%DEVHOST_TICK%", arg_name="timer", run_on_startup=True)
    def tick(timer: func.TimerRequest) -> None:
        fired.append(timer)
        if len(fired) >= 2:
            two.set()

    host = LocalFunctionHost(app, port=0).start()
    try:
        assert two.wait(10)
    finally:
        assert host.stop(5)
    assert all(isinstance(t, func.TimerRequest) for t in fired)
    assert fired[0].past_due is False
    next_run = datetime.fromisoformat(fired[1].schedule_status["Next"])
    assert next_run - datetime.fromisoformat(fired[1].schedule_status["Last"]) == timedelta(seconds=1)


def test_host_json_values() -> None:
    config = load_host_config()
    spec = json.loads((ROOT / "host.json").read_text())["extensions"]
    assert config.route_prefix == spec["http"]["routePrefix"]
    assert config.max_concurrent_calls == spec["serviceBus"]["maxConcurrentCalls"]
    assert config.max_auto_lock_renewal == parse_timespan(spec["serviceBus"]["maxAutoLockRenewalDuration"])
    assert parse_timespan("1.02:03:04.5") == timedelta(days=1, hours=2, minutes=3, seconds=4.5)
    with pytest.raises(ValueError, match="TimeSpan"):
        parse_timespan("5 minutes")


def test_local_settings_created_from_template_and_env_wins(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    template = ROOT / "local.settings.template.json"
    target = tmp_path / "local.settings.json"
    spec = load_local_settings(target, template)
    assert target.read_text() == template.read_text()
    values = spec["Values"]
    for name in ("MARKR_DATABASE_URL", "MARKR_BUS", "VaultStorage", "MARKR_MAX_BODY_BYTES",
                 "MARKR_DEAD_LETTER_SWEEP_SCHEDULE", "FUNCTIONS_WORKER_RUNTIME"):
        assert name in values
    parse_schedule(values["MARKR_DEAD_LETTER_SWEEP_SCHEDULE"])
    monkeypatch.setenv("MARKR_VAULT_TABLE", "from-env")
    # setenv first, so monkeypatch records the variable and removes what apply_values sets below
    # (a bare delenv of an absent variable records nothing, and the value leaked into later tests).
    monkeypatch.setenv("MARKR_DEFAULT_SOURCE", "placeholder")
    monkeypatch.delenv("MARKR_DEFAULT_SOURCE")
    applied = apply_values({"MARKR_VAULT_TABLE": "from-file", "MARKR_DEFAULT_SOURCE": "file-source"})
    assert os.environ["MARKR_VAULT_TABLE"] == "from-env"
    assert os.environ["MARKR_DEFAULT_SOURCE"] == "file-source" and applied == ["MARKR_DEFAULT_SOURCE"]
