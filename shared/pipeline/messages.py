"""The pipeline's messages: how they are built, named and checked.

Every message's correlation_id is its submission id, so one search finds a submission's whole path.
Message ids are derived from (submission, run, stage), so a re-send after a crash is dropped by
duplicate detection, while a replay (a new run) is not.
"""
from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import cache, lru_cache
from typing import Any

from jsonschema import Draft202012Validator
from referencing import Registry, Resource

import schemas
from shared.bus import queues
from shared.bus.port import OutgoingMessage


class InvalidMessageError(ValueError):
    """A message body that can never be processed (a permanent failure: retrying will not help)."""


@dataclass(frozen=True)
class SubmissionRef:
    submission_id: str
    source: str
    run_id: str

    def as_json(self) -> dict[str, str]:
        return {"submissionId": self.submission_id, "source": self.source, "runId": self.run_id}


@dataclass(frozen=True)
class InlineBody:
    """A vaulted body's stored bytes and the facts to check them by (see shared/vault/body.py)."""

    compression: str
    data: bytes
    byte_size: int
    sha256: str
    # A sealed body's envelope (shared/vault/crypto.py): `data` is ciphertext and only a holder of
    # the key-encryption key can open it, so names never travel in clear on the queue.
    envelope: dict[str, str] | None = None

    def as_json(self) -> dict[str, Any]:
        body = {"compression": self.compression, "data": base64.b64encode(self.data).decode(),
                "byteSize": self.byte_size, "sha256": self.sha256}
        if self.envelope is not None:
            body["envelope"] = self.envelope
        return body

    @classmethod
    def of(cls, record: Any) -> InlineBody | None:
        """A vault record's body, if it is stored on the head itself (small bodies), else None."""
        if getattr(record, "inline", None) is None:
            return None
        envelope = getattr(record, "envelope", None)
        return cls(record.compression, record.inline, record.byte_size, record.sha256,
                   envelope.as_json() if envelope is not None else None)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> InlineBody:
        return cls(data["compression"], base64.b64decode(data["data"]), data["byteSize"], data["sha256"],
                   data.get("envelope"))


@lru_cache(maxsize=1)
def _registry() -> Registry:
    resources = []
    for name in schemas.names("messages"):
        schema = schemas.resource(name)
        resources.append((schema["$id"], Resource.from_contents(schema)))
    return Registry().with_resources(resources)


def _inline_refs(node: Any, resolver: Any, seen: frozenset[str] = frozenset()) -> Any:
    """The schema with each `$ref` replaced by what it points to (resolved once, here): looking
    references up on every validation was half the cost of decoding a message."""
    if isinstance(node, list):
        return [_inline_refs(item, resolver, seen) for item in node]
    if not isinstance(node, dict):
        return node
    ref = node.get("$ref")
    if not isinstance(ref, str) or ref in seen:
        return {key: _inline_refs(value, resolver, seen) for key, value in node.items()}
    resolved = resolver.lookup(ref)
    target = _inline_refs(resolved.contents, resolved.resolver, seen | {ref})
    siblings = {key: _inline_refs(value, resolver, seen) for key, value in node.items() if key != "$ref"}
    return {"allOf": [target], **siblings} if siblings else target


@cache
def _validator(queue: str) -> Draft202012Validator:
    schema = schemas.resource(f"messages/{queue}.schema.json")
    inlined = _inline_refs(schema, _registry().resolver(base_uri=schema["$id"]))
    return Draft202012Validator(inlined, registry=_registry(), format_checker=Draft202012Validator.FORMAT_CHECKER)


def decode(queue: str, body: bytes) -> dict[str, Any]:
    """Parse and validate a message body against schemas/messages/<queue>.schema.json."""
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidMessageError(f"{queue} message is not JSON: {exc}") from exc
    validator = _validator(queues.base_queue(queue))
    if validator.is_valid(data):  # the usual case; collecting errors only pays off for a bad message
        return data
    problems = sorted(validator.iter_errors(data), key=lambda e: list(e.path))
    if problems:
        detail = "; ".join(f"{'/'.join(map(str, p.path)) or '(body)'}: {p.message}" for p in problems[:5])
        raise InvalidMessageError(f"{queue} message does not match its schema: {detail}")
    return data


def ref_of(data: dict[str, Any]) -> SubmissionRef:
    return SubmissionRef(data["submissionId"], data["source"], data["runId"])


def _key(text: str) -> str:
    """A part of a message id: Service Bus caps ids at 128 characters, so long parts are hashed."""
    return text if len(text) <= 40 else hashlib.sha256(text.encode()).hexdigest()[:32]


def _message(queue: str, ref: SubmissionRef, stage: str, payload: dict[str, Any]) -> OutgoingMessage:
    body = {**ref.as_json(), **payload}
    return OutgoingMessage(
        body=json.dumps(body, separators=(",", ":")).encode(),
        message_id=f"{ref.submission_id}/{ref.run_id}/{stage}",
        content_type="application/json",
        correlation_id=ref.submission_id,
        application_properties={"submissionId": ref.submission_id, "runId": ref.run_id, "stage": stage},
    )


def validation(ref: SubmissionRef, inline: InlineBody | None = None,
               received_at: datetime | None = None, *, deferred: bool = False) -> OutgoingMessage:
    """`inline`: a small body's stored bytes, so the validator need not read them back from the vault
    (the vault still holds them first; large bodies are always read from the vault).
    `received_at`: when the receiver vaulted it, recorded on the status with the verdict.
    `deferred`: the safety net scheduled while the receiver validates in place (validate_now.py); it
    has an id of its own, so the immediate message of a fallback is not taken for its duplicate."""
    payload: dict[str, Any] = {"body": inline.as_json()} if inline is not None else {}
    if received_at is not None:
        payload["receivedAt"] = received_at.isoformat()
    message = _message(queues.VALIDATION, ref, "validation", payload)
    return replace(message, message_id=f"{message.message_id}/deferred") if deferred else message


def marking(ref: SubmissionRef) -> OutgoingMessage:
    return _message(queues.MARKING, ref, "marking", {})


def aggregation(ref: SubmissionRef, test_versions: dict[str, int]) -> OutgoingMessage:
    """Bring every test the submission touched up to the results version its marking produced."""
    return _message(queues.AGGREGATION, ref, "aggregation", {"testVersions": test_versions})


def notification(ref: SubmissionRef, event: str, *, discriminator: str = "", **fields: Any) -> OutgoingMessage:
    """A status event for the notifier; `fields` are camelCase keys of the notification schema.

    `discriminator` tells apart events of one kind in one run that must not be de-duplicated
    (e.g. two failures of the same run, before and after a resubmit).
    """
    payload = {"event": event, "at": fields.pop("at", None) or datetime.now(UTC).isoformat(), **fields}
    stage = f"notify/{event}"
    if event == "aggregated":
        stage += f"/{_key(fields['testId'])}"
    if discriminator:
        stage += f"/{_key(discriminator)}"
    return _message(queues.NOTIFICATION, ref, stage, payload)
