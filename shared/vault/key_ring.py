"""The vault's data keys: few calls to the key-encryption key, whatever the number of entries.

In Azure the key-encryption key is a Key Vault key, and every unwrap is a round trip that Key Vault
also rate-limits per vault (2,000 operations per 10 s for an RSA-2048 HSM key). With a data key per
entry, each submission read back (the validator opening a sealed body, a replay, a reprocess)
costs one: the vault's throughput would stop at Key Vault's. So:

- **Sealing:** the entries a process writes share one data key for `max_age_seconds` or
  `max_uses` entries, whichever comes first, and a new one as soon as the key-encryption key's
  current version changes. Each entry still has its own random 96-bit nonce and names itself in the
  associated data (crypto.py), so a ciphertext moved to another entry still fails to open. 2^20
  entries per key keeps the chance of a repeated nonce below 2^-57 (NIST SP 800-38D allows 2^32).
- **Opening:** unwrapped data keys are remembered (the `remembered` most recently used), so entries
  sealed under one data key cost one unwrap, and a process opens what it sealed itself without any.
  Concurrent openings of one unknown key wait for a single unwrap. A failed unwrap is not remembered.

A data key stays in the process's memory for at most as long as it is in use or remembered; it is
only ever stored wrapped.
"""
from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from shared.vault.kek import KeyEncryptionKey

MAX_AGE_SECONDS = 300.0  # as long as an instance may keep wrapping under a rotated key version
MAX_USES = 1 << 20
REMEMBERED = 4096  # opened data keys kept: 32 bytes each, plus their names

_Name = tuple[str, str, bytes]  # (key id with version, wrap algorithm, wrapped key)


@dataclass(frozen=True)
class SealingKey:
    data_key: bytes
    key_id: str
    key_wrap: str
    wrapped_key: bytes
    made_at: float


class KeyRing:
    def __init__(self, kek: KeyEncryptionKey, *, max_age_seconds: float = MAX_AGE_SECONDS,
                 max_uses: int = MAX_USES, remembered: int = REMEMBERED,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if max_uses < 1 or remembered < 1:
            raise ValueError("max_uses and remembered must be at least 1")
        self.kek = kek
        self._max_age = max_age_seconds
        self._max_uses = max_uses
        self._remembered = remembered
        self._clock = clock
        self._lock = threading.Lock()
        self._sealing: SealingKey | None = None
        self._uses = 0
        self._opened: OrderedDict[_Name, bytes] = OrderedDict()
        self._unwrapping: dict[_Name, Future[bytes]] = {}
        self.wraps = 0  # calls to the key-encryption key, for tests and benchmarks
        self.unwraps = 0

    def current_key_id(self) -> str:
        return self.kek.current_key_id()

    def sealing_key(self) -> SealingKey:
        """The data key to seal the next entry with (one use counted)."""
        current = self.kek.current_key_id()
        with self._lock:
            key = self._sealing
            if (key is None or self._uses >= self._max_uses or key.key_id != current
                    or self._clock() - key.made_at >= self._max_age):
                data_key = AESGCM.generate_key(bit_length=256)
                key_id, key_wrap, wrapped = self.kek.wrap(data_key)
                self.wraps += 1
                key = self._sealing = SealingKey(data_key, key_id, key_wrap, wrapped, self._clock())
                self._uses = 0
                self._remember((key_id, key_wrap, wrapped), data_key)
            self._uses += 1
            return key

    def data_key(self, key_id: str, key_wrap: str, wrapped_key: bytes) -> bytes:
        """The unwrapped data key: remembered, or unwrapped once however many threads ask at once.
        Raises what the key-encryption key raises (VaultCorruptionError for a damaged wrapped key)."""
        name = (key_id, key_wrap, bytes(wrapped_key))
        with self._lock:
            known = self._opened.get(name)
            if known is not None:
                self._opened.move_to_end(name)
                return known
            pending = self._unwrapping.get(name)
            leader = pending is None
            if leader:
                pending = self._unwrapping[name] = Future()
        assert pending is not None
        if not leader:
            return pending.result()
        try:
            data_key = self.kek.unwrap(key_id, key_wrap, name[2])
        except BaseException as exc:
            with self._lock:
                del self._unwrapping[name]
            pending.set_exception(exc)
            raise
        with self._lock:
            self.unwraps += 1
            self._remember(name, data_key)
            del self._unwrapping[name]
        pending.set_result(data_key)
        return data_key

    def _remember(self, name: _Name, data_key: bytes) -> None:
        self._opened[name] = data_key
        self._opened.move_to_end(name)
        while len(self._opened) > self._remembered:
            self._opened.popitem(last=False)
