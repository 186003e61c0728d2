"""Queue message schemas: the validator with references resolved up front judges every message
exactly as the schema files, looked up through the registry, do."""
from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from jsonschema import Draft202012Validator

import schemas
from shared.bus import queues
from shared.pipeline import messages
from shared.pipeline.messages import InlineBody, SubmissionRef

ULID = "01JABCDEFGHJKMNPQRSTVWXYZ0"
REF = SubmissionRef(ULID, "acme", ULID)
SEALED = InlineBody("gzip", b"\x00\x01", 3, "a" * 64, {"algorithm": "A256GCM", "keyId": "local", "keyWrap": "A256KW",
                                                     "wrappedKey": "d3JhcHBlZA==", "nonce": "bm9uY2U="})
AT = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)


def _valid() -> list[tuple[str, dict]]:
    built = [
        messages.validation(REF, SEALED, AT), messages.validation(REF), messages.marking(REF),
        messages.aggregation(REF, {"9863": 3}),
        messages.notification(REF, "failed", at=AT.isoformat(),
                              failure={"stage": "validation", "reason": "x", "description": "y"}),
    ]
    names = [queues.VALIDATION, queues.VALIDATION, queues.MARKING, queues.AGGREGATION, queues.NOTIFICATION]
    return [(name, json.loads(m.body)) for name, m in zip(names, built, strict=True)]


def _broken() -> list[tuple[str, dict]]:
    out = []
    for queue, data in _valid():
        out += [
            (queue, {**data, "submissionId": "not-a-ulid"}),
            (queue, {k: v for k, v in data.items() if k != "source"}),
            (queue, {**data, "source": "a/b"}),
            (queue, {**data, "runId": 7}),
        ]
    validation = _valid()[0][1]
    out += [
        (queues.VALIDATION, {**validation, "receivedAt": "yesterday"}),
        (queues.VALIDATION, {**validation, "body": {**validation["body"], "sha256": "XYZ"}}),
        (queues.VALIDATION, {**validation, "body": {**validation["body"], "envelope": {"algorithm": "A256GCM"}}}),
        (queues.AGGREGATION, {**_valid()[3][1], "testVersions": {"9863": "three"}}),
    ]
    return out


def _reference(queue: str) -> Draft202012Validator:
    return Draft202012Validator(schemas.resource(f"messages/{queue}.schema.json"), registry=messages._registry(),
                                format_checker=Draft202012Validator.FORMAT_CHECKER)


def _errors(validator: Draft202012Validator, data: dict) -> list[tuple[list, str]]:
    return sorted((list(e.path), e.message) for e in validator.iter_errors(data))


@pytest.mark.parametrize(("queue", "data"), _valid() + _broken())
def test_the_resolved_schema_judges_like_the_schema_files(queue: str, data: dict) -> None:
    assert _errors(messages._validator(queue), data) == _errors(_reference(queue), data)


def test_valid_messages_decode_and_broken_ones_are_refused_naming_the_field() -> None:
    for queue, data in _valid():
        assert messages.decode(queue, json.dumps(data).encode()) == data
    for queue, data in _broken():
        with pytest.raises(messages.InvalidMessageError, match="does not match its schema"):
            messages.decode(queue, json.dumps(data).encode())


def test_no_reference_is_left_to_look_up() -> None:
    for name in (queues.VALIDATION, queues.MARKING, queues.AGGREGATION, queues.NOTIFICATION):
        assert "$ref" not in json.dumps(messages._validator(name).schema)
