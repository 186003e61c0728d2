"""Calls to the key-encryption key per 1,000 vault entries, and what they cost where each is a Key Vault
round trip.

    .venv/bin/python -m bench.vault_key_calls [--entries 1000] [--writers 2] [--round-trip-ms 20]

Seals --entries small bodies (10-result documents, compressed as the vault stores them) from
--writers processes (a key ring each, entries interleaved, as the local host's workers or Azure
instances write them), then opens every one from another process (the validator reading sealed
bodies from its messages; a replay or reprocess reads the same way), in two ways:

  per entry   a fresh data key for every entry, none remembered (the vault before key_ring.py)
  key ring    the data keys as the vault keeps them now (shared/vault/key_ring.py)

The local key file stands in for Key Vault, with --round-trip-ms of sleep added to each call (an
assumption: the machine has no Azure; Key Vault answers in milliseconds to tens of milliseconds
within a region). Prints the calls, the reads' wall time, and the submissions/s Key Vault's own limit
allows (2,000 operations per 10 s per vault for an RSA-2048 HSM key, the Premium vault's `vault-kek`:
docs/deploy.md), counting the unwraps per submission read. In Azure, CryptographyClient wraps with
the key's public part locally once it has fetched it, so the wrap column is an upper bound there;
every unwrap is a Key Vault call. Asserts nothing.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from shared.vault import crypto  # noqa: E402
from shared.vault.body import compress  # noqa: E402
from shared.vault.kek import LocalKeyFile  # noqa: E402
from shared.vault.key_ring import KeyRing  # noqa: E402
from tests.documents import make_large_document  # noqa: E402

KEY_VAULT_OPERATIONS_PER_SECOND = 2000 / 10  # RSA-2048 HSM key, per vault and region


class RoundTripKek:
    """The local key file, each call slowed by a round trip and counted."""

    def __init__(self, kek: LocalKeyFile, round_trip: float) -> None:
        self.kek, self.round_trip, self.calls = kek, round_trip, 0

    def current_key_id(self) -> str:
        return self.kek.current_key_id()

    def wrap(self, data_key: bytes) -> tuple[str, str, bytes]:
        self.calls += 1
        time.sleep(self.round_trip)
        return self.kek.wrap(data_key)

    def unwrap(self, key_id: str, algorithm: str, wrapped: bytes) -> bytes:
        self.calls += 1
        time.sleep(self.round_trip)
        return self.kek.unwrap(key_id, algorithm, wrapped)


def run(mode: str, stored: list[bytes], writers: int, kek: LocalKeyFile, round_trip: float) -> None:
    def ring(k: RoundTripKek) -> KeyRing:
        return KeyRing(k, max_uses=1, remembered=1) if mode == "per entry" else KeyRing(k)

    write_kek = RoundTripKek(kek, round_trip)
    rings = [ring(write_kek) for _ in range(writers)]
    started = time.perf_counter()
    entries = []
    for i, data in enumerate(stored):
        sid = f"01BENCH{i:06d}"
        entries.append((sid, *crypto.seal(rings[i % writers], "bench", sid, data)))
    write_s = time.perf_counter() - started
    read_kek = RoundTripKek(kek, round_trip)
    reader = ring(read_kek)
    started = time.perf_counter()
    for sid, sealed, envelope in entries:
        crypto.open_sealed(reader, "bench", sid, envelope, sealed)
    read_s = time.perf_counter() - started
    n = len(stored)
    per_submission = read_kek.calls / n
    ceiling = KEY_VAULT_OPERATIONS_PER_SECOND / per_submission if per_submission else float("inf")
    print(f"{mode:>10}: wraps {write_kek.calls:5d} ({write_s:6.2f} s)   unwraps {read_kek.calls:5d} "
          f"({read_s:6.2f} s, {n / read_s:8.0f} reads/s)   Key Vault allows {ceiling:10.0f} submissions/s",
          flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=1000)
    parser.add_argument("--writers", type=int, default=2)
    parser.add_argument("--round-trip-ms", type=float, default=20.0)
    args = parser.parse_args()
    stored = [compress(b"".join(make_large_document(10, seed=i)))[1] for i in range(args.entries)]
    print(f"{args.entries} entries of 10 results from {args.writers} writer process(es), read by another; "
          f"{args.round_trip_ms:.0f} ms per key-encryption-key call (simulated)", flush=True)
    with tempfile.TemporaryDirectory() as work:
        kek = LocalKeyFile(Path(work) / "kek.json")
        for mode in ("per entry", "key ring"):
            run(mode, stored, args.writers, kek, args.round_trip_ms / 1000)


if __name__ == "__main__":
    main()
