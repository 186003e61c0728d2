"""Calling a user function: the trigger value goes in under its binding name; async is awaited."""
from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import Any


def call(handler: Callable[..., Any], arg_name: str, value: Any) -> Any:
    result = handler(**{arg_name: value})
    if inspect.isawaitable(result):
        return asyncio.run(_await(result))
    return result


async def _await(awaitable: Any) -> Any:
    return await awaitable
