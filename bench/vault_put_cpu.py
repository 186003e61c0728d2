"""CPU per small vault put in this process: inserts through the Tables SDK against the REST writer.

    .venv/bin/python -m bench.vault_put_cpu [--puts 2000] [--threads 8] [--rounds 3]

The small-submissions documents (10 results, ~17 KB, sealed under a local key as the receiver does)
are put into one Azurite table by a TableVault whose inserts go through the SDK
(TableClient.create_entity / submit_transaction) and by one whose inserts go through
rest_writer.TablesRestWriter; both share one SDK client on one connection pool, so only the insert
path differs. Two shapes:

- sequential: one put at a time (each head is one insert);
- concurrent: --threads writers at once (group commit folds their heads into $batch transactions).

Prints CPU-microseconds per put of this process (time.process_time, all threads) and of Azurite
(/proc), per round and as the median over --rounds; SDK and REST alternate within each round so
a busy shared machine affects both alike. Also prints the put's own work without any storage call
(sha256, gzip, seal), which neither path can remove. Starts its own Azurite under .local/bench/
unless VaultStorage (a connection string) is set. Prints numbers; asserts nothing.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from azure.data.tables import TableClient  # noqa: E402
from ulid import ULID  # noqa: E402

from bench.harness import ProcessGroup, _children_map  # noqa: E402
from bench.small_submissions import generate  # noqa: E402
from devhost.stack import Azurite  # noqa: E402
from shared.config import settings  # noqa: E402
from shared.vault import body as bodies  # noqa: E402
from shared.vault import crypto  # noqa: E402
from shared.vault.kek import LocalKeyFile  # noqa: E402
from shared.vault.key_ring import KeyRing  # noqa: E402
from shared.vault.rest_writer import TablesRestWriter  # noqa: E402
from shared.vault.table_vault import TableVault  # noqa: E402
from shared.vault.transport import ConnectionPool, HttpClientTransport  # noqa: E402


def vaults(connection: str, kek: LocalKeyFile) -> dict[str, TableVault]:
    pool = ConnectionPool(connection_timeout=10)
    table = TableClient.from_connection_string(connection, f"bench{uuid.uuid4().hex[:12]}",
                                               transport=HttpClientTransport(pool=pool),
                                               connection_timeout=10, retry_total=3)
    writer = TablesRestWriter.for_table(table.url, table.table_name, table.credential, pool)
    return {"SDK": TableVault(table, kek=kek), "REST": TableVault(table, kek=kek, writer=writer)}


def put_all(vault: TableVault, documents: list[bytes], threads: int) -> None:
    def put(body: bytes) -> None:
        vault.put(source="bench", submission_id=str(ULID()), content_type="text/xml+markr", body=body,
                  received_at=datetime.now(UTC))

    if threads <= 1:
        for body in documents:
            put(body)
        return
    pending = list(documents)
    lock = threading.Lock()

    def worker() -> None:
        while True:
            with lock:
                if not pending:
                    return
                body = pending.pop()
            put(body)

    workers = [threading.Thread(target=worker) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()


def measure(action: Callable[[], None], storage: ProcessGroup | None) -> tuple[float, float]:
    """(CPU s of this process, CPU s of the storage emulator) spent by `action`."""
    emulator = storage.cumulative(_children_map()) if storage else 0.0
    started = time.process_time()
    action()
    own = time.process_time() - started
    return own, (storage.cumulative(_children_map()) - emulator) if storage else 0.0


def run(connection: str, args: argparse.Namespace, storage: ProcessGroup | None, work: Path) -> None:
    kek = LocalKeyFile(work / "kek.json")
    documents = generate(args.puts)[0]
    print(f"{args.puts} documents of 10 results, {sum(map(len, documents)) / len(documents) / 1000:.1f} kB on "
          f"average, sealed; CPU-us per put (this process | Azurite)", flush=True)
    pairs = vaults(connection, kek)
    for vault in pairs.values():  # warm up: table, connections, group commit, the key
        put_all(vault, documents[:20], 1)

    keys = KeyRing(kek)  # as a vault holds one

    def prepare() -> None:
        for body in documents:
            _, stored = bodies.compress(body)
            crypto.seal(keys, "bench", str(ULID()), stored)
            hashlib.sha256(body).hexdigest()

    own, _ = measure(prepare, None)
    print(f"  the put's own work without storage (sha256, gzip, seal, ids): {1e6 * own / args.puts:7.0f} us")
    results: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for n in range(args.rounds):
        line = []
        for shape, threads in (("sequential", 1), (f"{args.threads} threads", args.threads)):
            for name, vault in pairs.items():
                own, emulator = measure(lambda v=vault, t=threads: put_all(v, documents, t), storage)
                results.setdefault((shape, name), []).append((own, emulator))
                line.append(f"{shape} {name} {1e6 * own / args.puts:5.0f} | {1e6 * emulator / args.puts:4.0f}")
        print(f"  round {n + 1}: " + ";  ".join(line), flush=True)
    print(f"median of {args.rounds} rounds, CPU-us per put:")
    for (shape, name), values in results.items():
        own = statistics.median(v[0] for v in values)
        emulator = statistics.median(v[1] for v in values)
        spread = f"{1e6 * min(v[0] for v in values) / args.puts:.0f}-{1e6 * max(v[0] for v in values) / args.puts:.0f}"
        print(f"  {shape:<12} {name:<5} this process {1e6 * own / args.puts:6.0f} (range {spread})   "
              f"Azurite {1e6 * emulator / args.puts:5.0f}")
    for shape in ("sequential", f"{args.threads} threads"):
        sdk = statistics.median(v[0] for v in results[(shape, "SDK")])
        rest = statistics.median(v[0] for v in results[(shape, "REST")])
        print(f"  {shape}: REST uses {100 * rest / sdk:.0f}% of the SDK path's CPU in this process")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--puts", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    work = ROOT / ".local" / "bench" / f"vault-put-cpu-{os.getpid()}"
    work.mkdir(parents=True, exist_ok=True)
    try:
        connection = settings().vault_connection  # the VaultStorage app setting
        if connection:
            run(connection, args, None, work)
            return
        azurite = Azurite(work / "azurite")
        try:
            connection = azurite.start()
            run(connection, args, ProcessGroup("azurite", azurite.process.pid), work)
        finally:
            azurite.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
