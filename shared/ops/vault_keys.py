"""Operator use cases for the vault's encryption: seal the plain entries, rewrap after a key rotation.

`encrypt_all` records every finished entry in a checkpoint file (JSON lines, flushed per batch), so an
interrupted run continues where it stopped; an entry sealed but not yet recorded is found sealed and
skipped (its leftover plain chunks are deleted then). `rewrap_all` needs no checkpoint: an entry
already under the current key version is skipped without a Key Vault call.
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from shared.ops.replay import ReplayError

BATCH = 50
_HEADER = "markr-ops vault encrypt"


@dataclass(frozen=True)
class KeyReport:
    total: int  # entries looked at
    changed: int  # sealed (encrypt) or rewrapped (rewrap) by this run
    skipped: int  # already sealed / already under the current key
    already: int = 0  # done by an earlier, interrupted run (encrypt)
    key_id: str = ""  # the key version entries are wrapped under now


def _load(path: Path, restart: bool) -> set[str]:
    if restart or not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"checkpoint": _HEADER, "startedAt": datetime.now(UTC).isoformat()}) + "\n")
        return set()
    lines = path.read_text().splitlines()
    try:
        entries = [json.loads(line) for line in lines if line.strip()]
    except json.JSONDecodeError:
        entries = [json.loads(line) for line in lines[:-1]]  # a torn last line: that batch is redone
    if not entries or entries[0].get("checkpoint") != _HEADER:
        raise ReplayError(f"{path} is not a vault encrypt checkpoint; remove it or pass --restart")
    return {f"{e['source']}/{e['submissionId']}" for e in entries[1:] if "submissionId" in e}


def _append(path: Path, done: list[tuple[str, str]]) -> None:
    with path.open("a") as out:
        out.write("".join(json.dumps({"source": s, "submissionId": i}) + "\n" for s, i in done))
        out.flush()
        os.fsync(out.fileno())


def encrypt_all(vault, *, checkpoint: Path, restart: bool = False, batch: int = BATCH,
                progress: Callable[[int, int | None], None] | None = None) -> KeyReport:
    """Seal every plain vault entry under the current key (FormatVersion 1 -> 2)."""
    done = _load(checkpoint, restart)
    changed = skipped = already = total = 0
    pending: list[tuple[str, str]] = []
    # Streamed, not listed up front: heads carry inline bodies, and the vault may hold millions.
    for record in vault.list():
        total += 1
        if f"{record.source}/{record.submission_id}" in done:
            already += 1
            continue
        if vault.seal_entry(record):
            changed += 1
        else:
            skipped += 1
        pending.append((record.source, record.submission_id))
        if len(pending) >= batch:
            _append(checkpoint, pending)
            pending = []
        if progress:
            progress(total, None)
    if pending:
        _append(checkpoint, pending)
    if progress:
        progress(total, total)
    return KeyReport(total, changed, skipped, already, vault.kek.current_key_id())


def rewrap_all(vault, *, progress: Callable[[int, int | None], None] | None = None) -> KeyReport:
    """Wrap every sealed entry's data key under the current key version (bodies are not re-encrypted)."""
    changed = total = 0
    for record in vault.list():
        total += 1
        if vault.rewrap_entry(record):
            changed += 1
        if progress:
            progress(total, None)
    if progress:
        progress(total, total)
    return KeyReport(total, changed, total - changed, key_id=vault.kek.current_key_id())
