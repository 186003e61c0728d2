"""The local stack's own servers: Azurite keeps its last writes across a stop, and the private
PostgreSQL cluster starts from a clone anywhere, even inside a directory only its owner can enter."""
from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from pathlib import Path

import psycopg
import pytest
from azure.data.tables import TableServiceClient

from devhost.stack import Azurite, Postgres, _run_server_command, pg_bindir, relocated_server_dir

pytestmark = pytest.mark.integration


def test_azurite_keeps_a_write_acknowledged_just_before_stop(tmp_path: Path) -> None:
    # Azurite saves to disk every 5 s and on SIGINT only: a stop right after a write must not lose it.
    location = tmp_path / "azurite"
    first = Azurite(location)
    service = TableServiceClient.from_connection_string(first.start())
    try:
        table = service.create_table_if_not_exists("kept")
        table.upsert_entity({"PartitionKey": "p", "RowKey": "r", "value": "written last"})
    finally:
        first.stop()
    second = Azurite(location)
    service = TableServiceClient.from_connection_string(second.start())
    try:
        entity = service.get_table_client("kept").get_entity("p", "r")
    finally:
        second.stop()
    assert entity["value"] == "written last"


@pytest.fixture
def private_dir() -> Path:
    """A directory only its owner may enter (as root: /root-like; the postgres user cannot)."""
    parent = Path.home() if os.access(Path.home(), os.W_OK) else None
    path = Path(tempfile.mkdtemp(prefix="markr-private-", dir=parent))
    path.chmod(0o700)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_private_cluster_starts_from_a_clone_in_a_0700_directory(private_dir: Path) -> None:
    data = private_dir / "clone" / ".local" / "run" / "pg" / "data"
    server = Postgres(data)
    try:
        url = server.start()
        with psycopg.connect(url) as conn:
            conn.execute("CREATE TABLE kept (v text)")
            conn.execute("INSERT INTO kept VALUES ('x')")
        server.stop()
        # A later run (a new process) finds the same cluster through the data directory path.
        again = Postgres(data)
        url = again.start()
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT v FROM kept").fetchall() == [("x",)]
        again.stop()
    finally:
        server.stop()
        server.remove()
    assert not data.exists() and not data.is_symlink()
    assert not relocated_server_dir(data).exists()
    assert stat_mode(private_dir) == 0o700  # the user's directory was left as it was


def stat_mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_a_failing_server_command_raises_with_its_stderr() -> None:
    with pytest.raises(RuntimeError) as caught:
        _run_server_command([str(pg_bindir() / "initdb"), f"--no-such-option-{uuid.uuid4().hex[:6]}"], "initdb")
    message = str(caught.value)
    assert "initdb failed" in message and "no-such-option" in message


def test_a_cluster_in_a_reachable_directory_stays_there() -> None:
    # Reachable directories are used as they are (no relocation, no symlink). The repository itself
    # may not be reachable (a clone under a 0700 home), so the test makes a directory that is.
    parent = Path(tempfile.mkdtemp(prefix="markr-reach-", dir="/tmp"))
    parent.chmod(0o755)
    data = parent / "data"
    server = Postgres(data)
    try:
        server.start()
        assert server.server_data_dir == data and not data.is_symlink()
    finally:
        server.stop()
        server.remove()
        shutil.rmtree(parent, ignore_errors=True)
