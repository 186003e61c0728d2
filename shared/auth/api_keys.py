"""Vendor API keys, for scanning machines that can only send a fixed header (X-Markr-Api-Key).

A key is `mk_<key id>_<secret>`: the id (public, 12 hex digits) finds the row, the secret (32 random
bytes) proves possession. Only sha256(key) is stored: the key is high-entropy, so a slow hash adds
nothing. The comparison is constant-time, and an unknown id costs the same hash and compare.
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from shared.auth.model import AuthenticationFailed, Principal, Role
from shared.auth.port import VendorDirectory

log = logging.getLogger(__name__)
HEADER = "X-Markr-Api-Key"
_KEY = re.compile(r"mk_([0-9a-f]{12})_([A-Za-z0-9_-]{43})")
TOUCH_INTERVAL = timedelta(minutes=1)  # last-used is written at most this often per key
_DUMMY_HASH = hashlib.sha256(b"no such key").hexdigest()


def new_key() -> tuple[str, str]:
    """(key id, key): the key is shown once and never stored."""
    key_id = secrets.token_hex(6)
    return key_id, f"mk_{key_id}_{secrets.token_urlsafe(32)}"


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def key_id_of(key: str) -> str | None:
    match = _KEY.fullmatch(key.strip())
    return match.group(1) if match else None


class ApiKeyValidator:
    def __init__(self, directory: VendorDirectory, clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.directory = directory
        self.clock = clock

    def validate(self, key: str) -> Principal:
        key_id = key_id_of(key)
        if key_id is None:
            raise AuthenticationFailed("the API key is malformed")
        stored = self.directory.key(key_id)
        good = hmac.compare_digest(key_hash(key.strip()), stored.key_hash if stored else _DUMMY_HASH)
        if stored is None or not good or not stored.active:
            why = "unknown key id" if stored is None else "wrong secret" if not good else "revoked or expired"
            raise AuthenticationFailed("the API key is not valid (unknown, revoked or expired)",
                                       f"key_id={key_id} ({why})")
        if stored.last_used_at is None or self.clock() - stored.last_used_at >= TOUCH_INTERVAL:
            try:
                self.directory.touch(key_id)
            except Exception:  # noqa: BLE001 - bookkeeping must not refuse a good key
                log.warning("could not record the use of API key %s", key_id, exc_info=True)
        return Principal(f"vendor:{stored.vendor}/key:{key_id}", frozenset({Role.SUBMIT.value}),
                         vendor=stored.vendor, method="api-key", client_id=f"key:{key_id}")
