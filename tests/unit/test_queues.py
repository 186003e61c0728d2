"""Queue names come from one place: schemas/queues.json, through shared.bus.queues."""
from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from shared.bus import queues
from shared.bus.queues import PIPELINE_QUEUES, QUEUES_FILE, base_queue, load_queue_definitions


def test_pipeline_queues_are_the_file_s_queues_in_its_order() -> None:
    names = [q["name"] for q in json.loads(QUEUES_FILE.read_text())["queues"]]
    assert list(PIPELINE_QUEUES) == names
    assert PIPELINE_QUEUES == (queues.VALIDATION, queues.VALIDATION_RETRY, queues.MARKING, queues.MARKING_RETRY,
                               queues.AGGREGATION, queues.AGGREGATION_RETRY, queues.NOTIFICATION)


def test_every_queue_has_a_one_minute_lock_renewed_up_to_the_function_timeout() -> None:
    root = QUEUES_FILE.parents[1]
    host = json.loads((root / "host.json").read_text())
    renewal = host["extensions"]["serviceBus"]["maxAutoLockRenewalDuration"]
    assert renewal >= host["functionTimeout"]  # both hh:mm:ss
    for definition in queues.queue_definitions().values():
        assert definition.lock_duration.total_seconds() == 60


def test_retry_queues_carry_their_queue_s_messages() -> None:
    assert base_queue(queues.MARKING_RETRY) == queues.MARKING
    assert base_queue(queues.MARKING) == queues.MARKING
    defs = queues.queue_definitions()
    for retry in (queues.VALIDATION_RETRY, queues.MARKING_RETRY, queues.AGGREGATION_RETRY):
        assert defs[retry].with_overrides(name=base_queue(retry)) == defs[base_queue(retry)]


def test_a_queues_file_without_a_named_queue_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = json.loads(QUEUES_FILE.read_text())
    spec["queues"] = [q for q in spec["queues"] if q["name"] != queues.MARKING_RETRY]
    path = tmp_path / "queues.json"
    path.write_text(json.dumps(spec))
    assert queues.MARKING_RETRY not in load_queue_definitions(path)
    monkeypatch.setattr(queues, "QUEUES_FILE", path)
    queues.queue_definitions.cache_clear()
    try:
        with pytest.raises(ValueError, match=queues.MARKING_RETRY):
            queues.queue_definitions()
    finally:
        monkeypatch.undo()
        queues.queue_definitions.cache_clear()


def test_markr_ops_finds_the_local_stack_database_without_private_calls(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import devhost.localstack
    from markr_ops import environment

    monkeypatch.setattr(devhost.localstack, "RUN_DIR", tmp_path)
    assert environment._local_stack_database() is None  # not running: no port file
    (tmp_path / "pg").mkdir()
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        port = listening.getsockname()[1]
        (tmp_path / "pg" / "postgres.port").write_text(str(port))
        url = environment._local_stack_database()
    assert url is not None and f"@127.0.0.1:{port}/" in url
    assert environment._local_stack_database() is None  # nothing listens any more
