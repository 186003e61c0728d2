"""Vault put/read times and compressed sizes on Table Storage, and the gzip level comparison.

    .venv/bin/python -m bench.vault_roundtrip                  # 1,000 and 50,000 results, levels 1/3/6/9
    .venv/bin/python -m bench.vault_roundtrip --random-mib 100 # plus an incompressible 100 MiB body

Starts its own Azurite under .local/bench/ unless VaultStorage (a connection string) is set.
Times are the median of --repeat runs; each put uses a fresh submission id.
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import os
import shutil
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from azure.data.tables import TableClient  # noqa: E402
from ulid import ULID  # noqa: E402

from bench.harness import median_seconds  # noqa: E402
from devhost.stack import Azurite  # noqa: E402
from shared.config import settings  # noqa: E402
from shared.vault.body import GZIP_LEVEL  # noqa: E402
from shared.vault.table_vault import TableVault  # noqa: E402
from tests.integration.test_vault_large import results_document  # noqa: E402


def _roundtrip(vault: TableVault, label: str, body: bytes, repeat: int) -> None:
    records = []

    def put() -> None:
        records.append(vault.put(source="bench", submission_id=str(ULID()), content_type="text/xml+markr",
                                 body=body, received_at=datetime.now(UTC)))

    put_s = median_seconds(put, repeat)
    record = records[-1]
    read_s = median_seconds(lambda: vault.read_body(record), repeat)

    def stream() -> None:
        with vault.open_body(record) as body_stream:
            while body_stream.read(1 << 20):
                pass

    stream_s = median_seconds(stream, repeat)
    assert vault.read_body(record) == body
    print(f"{label:<28} {len(body) / 1e6:9.2f} {record.compressed_size / 1e6:9.2f} "
          f"{len(body) / max(record.compressed_size, 1):6.1f} {record.compression:>8} {record.chunk_count:6d} "
          f"{put_s:7.2f} {read_s:7.2f} {stream_s:7.2f}")


def _header(title: str) -> None:
    print(f"\n{title}")
    print(f"{'body':<28} {'raw MB':>9} {'stored MB':>9} {'ratio':>6} {'codec':>8} {'chunks':>6} "
          f"{'put s':>7} {'read s':>7} {'strm s':>7}")


def run(connection: str, args: argparse.Namespace) -> None:
    table = f"bench{uuid.uuid4().hex[:12]}"
    documents = {n: results_document(n) for n in (1_000, 50_000)}

    _header(f"default gzip level {GZIP_LEVEL}")
    vault = TableVault.from_connection_string(connection, table)
    for n, document in documents.items():
        _roundtrip(vault, f"{n:,} results", document, args.repeat)
    if args.random_mib:
        _roundtrip(vault, f"{args.random_mib} MiB random", os.urandom(args.random_mib << 20), 1)

    large = documents[50_000]
    print(f"\ngzip levels on the 50,000-result document ({len(large) / 1e6:.1f} MB, sha256 "
          f"{hashlib.sha256(large).hexdigest()[:12]}): compress alone, then the full vault round trip")
    for level in args.levels:
        started = time.perf_counter()
        packed = gzip.compress(large, compresslevel=level, mtime=0)
        compress_s = time.perf_counter() - started
        started = time.perf_counter()
        gzip.decompress(packed)
        decompress_s = time.perf_counter() - started
        print(f"  level {level}: compress {compress_s:5.2f} s, decompress {decompress_s:5.2f} s, "
              f"{len(packed) / 1e6:5.2f} MB")
    _header("vault round trip per level")
    for level in args.levels:
        leveled = TableVault(TableClient.from_connection_string(connection, table), gzip_level=level)
        _roundtrip(leveled, f"50,000 results, level {level}", large, args.repeat)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 3, 6, 9])
    parser.add_argument("--random-mib", type=int, default=0, help="also round-trip this many MiB of random bytes")
    args = parser.parse_args()
    connection = settings().vault_connection  # the VaultStorage app setting
    if connection:
        run(connection, args)
        return
    location = ROOT / ".local" / "bench" / f"vault-azurite-{os.getpid()}"
    azurite = Azurite(location)
    try:
        run(azurite.start(), args)
    finally:
        azurite.stop()
        shutil.rmtree(location, ignore_errors=True)


if __name__ == "__main__":
    main()
