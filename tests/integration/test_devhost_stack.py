"""The local stack's own servers: Azurite keeps its last writes across a stop."""
from __future__ import annotations

from pathlib import Path

import pytest
from azure.data.tables import TableServiceClient

from devhost.stack import Azurite

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
