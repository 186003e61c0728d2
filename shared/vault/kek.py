"""Key-encryption keys (KEK): they wrap and unwrap the random data key of each vault entry.

Two adapters behind one port:
- LocalKeyFile: AES-256 key wrap (RFC 3394) under keys kept in a JSON file (.local/run/vault-kek.json,
  created on first use, mode 0600). `rotate()` adds a version and makes it current; old versions stay
  so entries wrapped under them remain readable until `markr-ops vault rewrap` moves them.
- AzureKeyVaultKey: an RSA key in Azure Key Vault, wrap/unwrap RSA-OAEP-256 through
  `CryptographyClient` with the app's managed identity. The key id stored with an entry is the
  versioned key URL, so an entry stays readable after the key rotates.
"""
from __future__ import annotations

import base64
import json
import os
import threading
import time
from pathlib import Path
from typing import Any, Protocol

from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap

from shared.vault.model import VaultCorruptionError, VaultError

LOCAL_WRAP = "A256KW"
AZURE_WRAP = "RSA-OAEP-256"


class KeyEncryptionKey(Protocol):
    def wrap(self, data_key: bytes) -> tuple[str, str, bytes]:
        """(key id with version, wrap algorithm, wrapped key) under the current key version."""

    def unwrap(self, key_id: str, algorithm: str, wrapped: bytes) -> bytes:
        """The data key; VaultCorruptionError if the wrapped key does not open under `key_id`."""

    def current_key_id(self) -> str:
        """The key id (with version) that `wrap` uses now."""


class LocalKeyFile:
    PREFIX = "local/"

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._cache: tuple[tuple[int, int, int], dict[str, Any]] | None = None

    def _load(self) -> dict[str, Any]:
        """The keys, re-read only when the file changed (a rotation by another process is seen)."""
        try:
            st = self.path.stat()
        except FileNotFoundError:
            self._create()
            st = self.path.stat()
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        cached = self._cache
        if cached is not None and cached[0] == stamp:
            return cached[1]
        try:
            doc = json.loads(self.path.read_text())
            keys = {"current": str(doc["current"]),
                    "keys": {v: base64.b64decode(k) for v, k in doc["keys"].items()}}
        except (OSError, ValueError, KeyError) as exc:
            raise VaultError(f"vault key file {self.path} is unreadable: {exc}") from exc
        self._cache = (stamp, keys)
        return keys

    def _create(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        doc = {"current": "1", "keys": {"1": base64.b64encode(os.urandom(32)).decode()}}
        try:  # O_EXCL: two processes starting at once keep the first one's key
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return
        with os.fdopen(fd, "w") as out:
            json.dump(doc, out)

    def ensure(self) -> Path:
        """Create the key file if it does not exist (the local stack calls this on start)."""
        self._load()
        return self.path

    def rotate(self) -> str:
        """Add a new key version and make it current; returns its key id."""
        with self._lock:
            doc = self._load()
            version = str(max(int(v) for v in doc["keys"]) + 1)
            keys = {v: base64.b64encode(k).decode() for v, k in doc["keys"].items()}
            keys[version] = base64.b64encode(os.urandom(32)).decode()
            tmp = self.path.with_suffix(".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as out:
                json.dump({"current": version, "keys": keys}, out)
            os.replace(tmp, self.path)
        return self.PREFIX + version

    def current_key_id(self) -> str:
        return self.PREFIX + self._load()["current"]

    def wrap(self, data_key: bytes) -> tuple[str, str, bytes]:
        doc = self._load()
        return self.PREFIX + doc["current"], LOCAL_WRAP, aes_key_wrap(doc["keys"][doc["current"]], data_key)

    def unwrap(self, key_id: str, algorithm: str, wrapped: bytes) -> bytes:
        if algorithm != LOCAL_WRAP or not key_id.startswith(self.PREFIX):
            raise VaultError(f"key {key_id} ({algorithm}) is not a local key; this vault uses {self.path}")
        key = self._load()["keys"].get(key_id[len(self.PREFIX):])
        if key is None:
            raise VaultError(f"key {key_id} is not in {self.path}")
        try:
            return aes_key_unwrap(key, wrapped)
        except InvalidUnwrap as exc:
            raise VaultCorruptionError(f"the wrapped data key does not open under {key_id}") from exc


class AzureKeyVaultKey:
    """`key_url`: https://<vault>.vault.azure.net/keys/<name> (no version: the current one wraps)."""

    CURRENT_TTL_SECONDS = 300.0  # a rotation is picked up for new entries within five minutes

    def __init__(self, key_url: str, credential: Any) -> None:
        self.key_url = key_url.rstrip("/")
        self._credential = credential
        self._clients: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._current: tuple[float, str] | None = None

    def _client(self, key_id: str) -> Any:
        client = self._clients.get(key_id)
        if client is None:
            from azure.keyvault.keys.crypto import CryptographyClient

            with self._lock:
                client = self._clients.setdefault(key_id, CryptographyClient(key_id, self._credential))
        return client

    def current_key_id(self) -> str:
        now = time.monotonic()
        if self._current is None or now - self._current[0] > self.CURRENT_TTL_SECONDS:
            from azure.keyvault.keys import KeyClient

            vault_url, _, name = self.key_url.partition("/keys/")
            key = KeyClient(vault_url, self._credential).get_key(name.split("/")[0])
            self._current = (now, str(key.id))
        return self._current[1]

    def wrap(self, data_key: bytes) -> tuple[str, str, bytes]:
        from azure.keyvault.keys.crypto import KeyWrapAlgorithm

        result = self._client(self.current_key_id()).wrap_key(KeyWrapAlgorithm.rsa_oaep_256, data_key)
        return str(result.key_id), AZURE_WRAP, bytes(result.encrypted_key)

    def unwrap(self, key_id: str, algorithm: str, wrapped: bytes) -> bytes:
        from azure.core.exceptions import HttpResponseError
        from azure.keyvault.keys.crypto import KeyWrapAlgorithm

        if algorithm != AZURE_WRAP or not key_id.startswith(self.key_url + "/"):
            raise VaultError(f"key {key_id} ({algorithm}) is not a version of {self.key_url}")
        try:
            return bytes(self._client(key_id).unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, wrapped).key)
        except HttpResponseError as exc:
            if exc.status_code == 400:  # Key Vault answers BadParameter when the ciphertext does not decrypt
                raise VaultCorruptionError(f"the wrapped data key does not open under {key_id}") from exc
            raise


DEFAULT_KEY_FILE = Path(__file__).resolve().parents[2] / ".local" / "run" / "vault-kek.json"


def from_settings(key_url: str, key_file: str, credential: Any = None) -> KeyEncryptionKey:
    if key_url:
        return AzureKeyVaultKey(key_url, credential)
    if os.environ.get("WEBSITE_SITE_NAME") and not key_file:
        # Running in Azure: a key file there would be generated on the app's own disk.
        raise VaultError("set MARKR_VAULT_KEY_URL (the Key Vault key that wraps vault data keys)")
    path = Path(key_file) if key_file else DEFAULT_KEY_FILE
    if not path.is_absolute():
        path = DEFAULT_KEY_FILE.parents[2] / path
    return LocalKeyFile(path)
