"""The ports of authentication: who is calling (Authenticator) and what we know of vendors."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from shared.auth.model import Principal


class Authenticator(Protocol):
    def authenticate(self, headers: Mapping[str, str]) -> Principal | None:
        """The caller named by the request's credentials; None when it presents none.
        Raises AuthenticationFailed (bad credentials) or AuthUnavailable (cannot check now)."""
        ...


@dataclass(frozen=True)
class StoredKey:
    key_id: str
    vendor: str
    key_hash: str  # sha256 hex of the whole key; the key itself is never stored
    active: bool  # not revoked, not expired
    last_used_at: datetime | None = None


class VendorDirectory(Protocol):
    def key(self, key_id: str) -> StoredKey | None: ...

    def touch(self, key_id: str) -> None:
        """Record that the key was used now (at most about once a minute per key)."""
        ...

    def vendor_for_app(self, app_id: str) -> str | None:
        """The vendor registered for an Entra application (client) id."""
        ...
