"""Reads functions and their triggers from a FunctionApp, the way the Functions host indexes them.

Nothing is declared twice: routes, queue names and schedules come from `app.get_functions()`.
`%SETTING%` binding expressions are resolved from the environment (app settings).
"""
from __future__ import annotations

import os
import re
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from devhost.ncrontab import Schedule, parse_schedule
from devhost.routing import RouteTemplate

_SETTING = re.compile(r"%([^%]+)%")
ALL_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "TRACE")


def resolve(value: str, what: str) -> str:
    """Replace `%NAME%` with the app setting NAME; a missing setting is an error, as in the host."""

    def setting(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in os.environ:
            raise LookupError(f"{what}: app setting {name!r} (from {value!r}) is not set")
        return os.environ[name]

    return _SETTING.sub(setting, value)


@dataclass(frozen=True)
class HttpFunction:
    name: str
    arg_name: str
    route: RouteTemplate
    methods: tuple[str, ...]
    handler: Callable[..., Any]


@dataclass(frozen=True)
class QueueFunction:
    name: str
    arg_name: str
    queue: str
    connection: str | None
    handler: Callable[..., Any]
    # cardinality=MANY: the handler takes a list[func.ServiceBusMessage] (a batch per invocation).
    many: bool = False


@dataclass(frozen=True)
class TimerFunction:
    name: str
    arg_name: str
    schedule: Schedule
    run_on_startup: bool
    handler: Callable[..., Any]


Function = HttpFunction | QueueFunction | TimerFunction


def _enum_value(value: Any) -> str:
    return str(getattr(value, "value", value))


_indexed: weakref.WeakKeyDictionary[Any, tuple] = weakref.WeakKeyDictionary()


def indexed_functions(app: Any) -> tuple:
    """`app.get_functions()`, computed once per app.

    The SDK records function names while indexing and rejects a second indexing of the same app as
    duplicates, so everything in one process (host, tests) reads the functions through here.
    """
    if app not in _indexed:
        _indexed[app] = tuple(app.get_functions())
    return _indexed[app]


def discover(app: Any) -> list[Function]:
    """Every function of `app` (anything with get_functions(), e.g. func.FunctionApp)."""
    found: list[Function] = []
    for fn in indexed_functions(app):
        name = fn.get_function_name()
        trigger = fn.get_trigger()
        if trigger is None:
            raise ValueError(f"function {name!r} has no trigger")
        spec = trigger.get_dict_repr()
        kind = _enum_value(spec["type"])
        handler = fn.get_user_function()
        arg = spec["name"]
        if kind == "httpTrigger":
            methods = tuple(_enum_value(m).upper() for m in spec.get("methods") or ALL_METHODS)
            found.append(HttpFunction(name, arg, RouteTemplate(spec.get("route") or name), methods, handler))
        elif kind == "serviceBusTrigger":
            if "queueName" not in spec:
                raise ValueError(f"function {name!r}: only Service Bus queue triggers are supported "
                                 "(topic subscriptions are not)")
            queue = resolve(spec["queueName"], f"function {name!r} queueName")
            many = _enum_value(spec.get("cardinality") or "one").lower() == "many"
            found.append(QueueFunction(name, arg, queue, spec.get("connection"), handler, many))
        elif kind == "timerTrigger":
            text = resolve(spec["schedule"], f"function {name!r} schedule")
            found.append(TimerFunction(name, arg, parse_schedule(text), bool(spec.get("runOnStartup")), handler))
        else:
            raise ValueError(f"function {name!r}: trigger type {kind!r} is not supported by the local host")
    return found
