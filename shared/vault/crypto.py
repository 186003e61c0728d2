"""Envelope encryption of a vault entry's stored (compressed) bytes.

Each entry's bytes are sealed with AES-256-GCM under a random AES-256 data key and a random 96-bit
nonce of its own. The entries a process writes within a few minutes share their data key (key_ring.py:
Key Vault is called once for them, not once per entry). The data key is kept only wrapped by the
key-encryption key (kek.py). The associated data names the entry (format version, source, submission
id), so a ciphertext copied onto another entity fails authentication. Compression runs before
encryption (ciphertext does not compress).
"""
from __future__ import annotations

import base64
import os
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from shared.vault.key_ring import KeyRing
from shared.vault.model import FORMAT_ENCRYPTED, VaultCorruptionError

ALGORITHM = "AES-256-GCM"
TAG_BYTES = 16


@dataclass(frozen=True)
class Envelope:
    algorithm: str  # how the body is sealed (AES-256-GCM)
    key_id: str  # the key-encryption key, with its version
    key_wrap: str  # how the data key is wrapped (A256KW locally, RSA-OAEP-256 in Key Vault)
    wrapped_key: bytes
    nonce: bytes

    def as_json(self) -> dict[str, str]:
        return {"algorithm": self.algorithm, "keyId": self.key_id, "keyWrap": self.key_wrap,
                "wrappedKey": base64.b64encode(self.wrapped_key).decode(),
                "nonce": base64.b64encode(self.nonce).decode()}

    @classmethod
    def from_json(cls, data: dict[str, str]) -> Envelope:
        return cls(data["algorithm"], data["keyId"], data["keyWrap"], base64.b64decode(data["wrappedKey"]),
                   base64.b64decode(data["nonce"]))


def associated_data(source: str, submission_id: str) -> bytes:
    return f"markr-vault/{FORMAT_ENCRYPTED}/{source}/{submission_id}".encode()


def seal(keys: KeyRing, source: str, submission_id: str, stored: bytes) -> tuple[bytes, Envelope]:
    key = keys.sealing_key()
    nonce = os.urandom(12)
    sealed = AESGCM(key.data_key).encrypt(nonce, stored, associated_data(source, submission_id))
    return sealed, Envelope(ALGORITHM, key.key_id, key.key_wrap, key.wrapped_key, nonce)


def open_sealed(keys: KeyRing, source: str, submission_id: str, envelope: Envelope, sealed: bytes) -> bytes:
    """The stored (compressed) bytes; VaultCorruptionError if anything was tampered with or moved."""
    where = f"submission {source}/{submission_id}"
    if envelope.algorithm != ALGORITHM:
        raise VaultCorruptionError(f"{where}: unknown algorithm {envelope.algorithm!r}")
    data_key = keys.data_key(envelope.key_id, envelope.key_wrap, envelope.wrapped_key)
    try:
        return AESGCM(data_key).decrypt(envelope.nonce, sealed, associated_data(source, submission_id))
    except (InvalidTag, ValueError) as exc:
        raise VaultCorruptionError(f"{where}: ciphertext fails authentication (tampered or moved)") from exc


def rewrap(keys: KeyRing, envelope: Envelope) -> Envelope:
    """The same data key wrapped under the current key version (the sealed bytes do not change)."""
    data_key = keys.data_key(envelope.key_id, envelope.key_wrap, envelope.wrapped_key)
    key_id, key_wrap, wrapped = keys.kek.wrap(data_key)
    return Envelope(envelope.algorithm, key_id, key_wrap, wrapped, envelope.nonce)
