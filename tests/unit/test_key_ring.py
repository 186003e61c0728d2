"""The vault's data keys: the key-encryption key is called once per sealing window and once per
distinct data key read, not once per entry (in Azure each call is a rate-limited Key Vault round trip)."""
import threading

import pytest

from shared.vault import crypto
from shared.vault.key_ring import KeyRing
from shared.vault.model import VaultCorruptionError


class CountingKek:
    """A key-encryption key that counts its calls: XOR "wrap" under a versioned key id."""

    def __init__(self, unwrap_gate: threading.Event | None = None) -> None:
        self.version = 1
        self.wraps = 0
        self.unwraps = 0
        self.unwrap_gate = unwrap_gate
        self.fail_unwraps = 0

    def current_key_id(self) -> str:
        return f"test/{self.version}"

    def wrap(self, data_key: bytes) -> tuple[str, str, bytes]:
        self.wraps += 1
        return self.current_key_id(), "XOR", bytes(b ^ self.version for b in data_key)

    def unwrap(self, key_id: str, algorithm: str, wrapped: bytes) -> bytes:
        self.unwraps += 1
        if self.unwrap_gate is not None:
            self.unwrap_gate.wait(5)
        if self.fail_unwraps:
            self.fail_unwraps -= 1
            raise TimeoutError("Key Vault did not answer")
        if len(wrapped) != 32:
            raise VaultCorruptionError("the wrapped data key does not open")
        return bytes(b ^ int(key_id.split("/")[1]) for b in wrapped)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def seal_many(keys: KeyRing, n: int, start: int = 0) -> list[tuple[str, bytes, crypto.Envelope]]:
    out = []
    for i in range(start, start + n):
        sid = f"01ID{i:04d}"
        sealed, envelope = crypto.seal(keys, "src", sid, f"body {i}".encode())
        out.append((sid, sealed, envelope))
    return out


def open_entry(keys: KeyRing, entry: tuple[str, bytes, crypto.Envelope]) -> bytes:
    sid, sealed, envelope = entry
    return crypto.open_sealed(keys, "src", sid, envelope, sealed)


def test_entries_sealed_in_one_window_share_one_wrap_and_open_with_one_unwrap() -> None:
    kek = CountingKek()
    entries = seal_many(KeyRing(kek), 200)
    assert kek.wraps == 1 and len({e.wrapped_key for _, _, e in entries}) == 1
    assert len({e.nonce for _, _, e in entries}) == 200
    reader = KeyRing(kek)  # another process: the validator, a replay
    for i, (sid, sealed, envelope) in enumerate(entries):
        assert crypto.open_sealed(reader, "src", sid, envelope, sealed) == f"body {i}".encode()
    assert kek.unwraps == 1 and reader.unwraps == 1


def test_a_process_opens_what_it_sealed_without_unwrapping() -> None:
    kek = CountingKek()
    keys = KeyRing(kek)
    sid, sealed, envelope = seal_many(keys, 1)[0]
    assert crypto.open_sealed(keys, "src", sid, envelope, sealed) == b"body 0"
    assert kek.unwraps == 0


def test_the_sealing_key_is_replaced_by_age_by_uses_and_by_a_new_kek_version() -> None:
    kek, clock = CountingKek(), Clock()
    keys = KeyRing(kek, max_age_seconds=300, max_uses=10, clock=clock)
    seal_many(keys, 10)
    assert kek.wraps == 1
    seal_many(keys, 1, 10)  # the eleventh use
    assert kek.wraps == 2
    clock.now = 299.0
    seal_many(keys, 1, 11)
    assert kek.wraps == 2
    clock.now = 301.0  # the key is more than 300 s old
    seal_many(keys, 1, 12)
    assert kek.wraps == 3
    kek.version = 2  # a rotation: the next entry's key is wrapped by the new version at once
    (_, _, envelope), = seal_many(keys, 1, 13)
    assert kek.wraps == 4 and envelope.key_id == "test/2"


def test_opened_keys_are_remembered_up_to_the_limit_most_recent_first() -> None:
    kek = CountingKek()
    writers = [KeyRing(kek) for _ in range(3)]  # three processes, three data keys
    entries = [seal_many(w, 1, i)[0] for i, w in enumerate(writers)]
    reader = KeyRing(kek, remembered=2)
    for entry in entries:
        open_entry(reader, entry)
    assert reader.unwraps == 3
    open_entry(reader, entries[2])  # still remembered
    open_entry(reader, entries[1])
    assert reader.unwraps == 3
    open_entry(reader, entries[0])  # forgotten: the oldest of three with room for two
    assert reader.unwraps == 4


def test_a_failed_unwrap_is_not_remembered_and_the_next_read_tries_again() -> None:
    kek = CountingKek()
    sid, sealed, envelope = seal_many(KeyRing(kek), 1)[0]
    reader = KeyRing(kek)
    kek.fail_unwraps = 1
    with pytest.raises(TimeoutError):
        crypto.open_sealed(reader, "src", sid, envelope, sealed)
    assert crypto.open_sealed(reader, "src", sid, envelope, sealed) == b"body 0"
    assert kek.unwraps == 2 and reader.unwraps == 1


def test_concurrent_reads_of_one_unknown_key_wait_for_a_single_unwrap() -> None:
    gate = threading.Event()
    kek = CountingKek(unwrap_gate=gate)
    entries = seal_many(KeyRing(kek), 8)
    reader = KeyRing(kek)
    opened: list[bytes] = []

    def read(entry: tuple[str, bytes, crypto.Envelope]) -> None:
        opened.append(open_entry(reader, entry))

    threads = [threading.Thread(target=read, args=(e,)) for e in entries]
    for t in threads:
        t.start()
    gate.set()
    for t in threads:
        t.join(5)
    assert sorted(opened) == sorted(f"body {i}".encode() for i in range(8))
    assert kek.unwraps == 1


def test_limits_below_one_are_refused() -> None:
    with pytest.raises(ValueError):
        KeyRing(CountingKek(), max_uses=0)
    with pytest.raises(ValueError):
        KeyRing(CountingKek(), remembered=0)
