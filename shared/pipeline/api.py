"""What the HTTP functions answer: JSON bodies and error shapes, independent of Azure types."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ApiResponse:
    status_code: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)

    def json_bytes(self) -> bytes:
        return json.dumps(self.body, separators=(",", ":"), default=str).encode()


def error(status_code: int, code: str, message: str, **extra: Any) -> ApiResponse:
    """The one error shape: {"error": {"code", "message", ...}}."""
    return ApiResponse(status_code, {"error": {"code": code, "message": message, **extra}})
