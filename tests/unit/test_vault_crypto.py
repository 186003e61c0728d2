"""Envelope encryption and the local key file, without storage."""
import json
import stat

import pytest

from shared.vault import crypto
from shared.vault.kek import DEFAULT_KEY_FILE, LocalKeyFile, from_settings
from shared.vault.key_ring import KeyRing
from shared.vault.model import VaultCorruptionError, VaultError


@pytest.fixture
def kek(tmp_path):
    return LocalKeyFile(tmp_path / "run" / "kek.json")


@pytest.fixture
def keys(kek):
    return KeyRing(kek)


def test_key_file_is_created_once_private_and_kept(kek):
    path = kek.ensure()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    first = path.read_text()
    assert LocalKeyFile(path).ensure() == path and path.read_text() == first  # a second start keeps the key
    assert kek.current_key_id() == "local/1"


def test_seal_and_open_round_trip_with_a_fresh_nonce_each_time(keys):
    a, env_a = crypto.seal(keys, "src", "01ID", b"compressed bytes")
    b, env_b = crypto.seal(keys, "src", "01ID", b"compressed bytes")
    assert a != b and env_a.nonce != env_b.nonce
    assert crypto.open_sealed(keys, "src", "01ID", env_a, a) == b"compressed bytes"
    assert crypto.Envelope.from_json(env_a.as_json()) == env_a


def test_another_process_reads_what_one_sealed(kek):
    sealed, envelope = crypto.seal(KeyRing(kek), "src", "01ID", b"compressed bytes")
    reader = KeyRing(LocalKeyFile(kek.path))
    assert crypto.open_sealed(reader, "src", "01ID", envelope, sealed) == b"compressed bytes"
    assert reader.unwraps == 1


@pytest.mark.parametrize("source, sid", [("other", "01ID"), ("src", "01OTHER")])
def test_a_ciphertext_bound_to_another_entry_does_not_open(keys, source, sid):
    sealed, envelope = crypto.seal(keys, "src", "01ID", b"x" * 100)
    _, other = crypto.seal(keys, source, sid, b"y" * 100)
    assert other.wrapped_key == envelope.wrapped_key  # the same data key: the entry's name still binds it
    with pytest.raises(VaultCorruptionError, match="tampered or moved"):
        crypto.open_sealed(keys, source, sid, envelope, sealed)


def test_a_flipped_bit_or_a_damaged_wrapped_key_is_corruption(keys):
    sealed, envelope = crypto.seal(keys, "src", "01ID", b"x" * 100)
    with pytest.raises(VaultCorruptionError):
        crypto.open_sealed(keys, "src", "01ID", envelope, sealed[:-1] + bytes([sealed[-1] ^ 1]))
    bad = crypto.Envelope(envelope.algorithm, envelope.key_id, envelope.key_wrap,
                          envelope.wrapped_key[:-1] + b"\x00", envelope.nonce)
    with pytest.raises(VaultCorruptionError):
        crypto.open_sealed(keys, "src", "01ID", bad, sealed)
    with pytest.raises(VaultCorruptionError):  # and again: a failed unwrap is not remembered
        crypto.open_sealed(keys, "src", "01ID", bad, sealed)


def test_rotation_keeps_old_versions_and_rewrap_changes_only_the_key(kek, keys):
    sealed, envelope = crypto.seal(keys, "src", "01ID", b"body")
    assert kek.rotate() == "local/2"
    assert json.loads(kek.path.read_text())["current"] == "2"
    assert crypto.open_sealed(keys, "src", "01ID", envelope, sealed) == b"body"
    moved = crypto.rewrap(keys, envelope)
    assert moved.key_id == "local/2" and moved.nonce == envelope.nonce
    assert crypto.open_sealed(KeyRing(kek), "src", "01ID", moved, sealed) == b"body"
    _, after = crypto.seal(keys, "src", "01NEXT", b"body")
    assert after.key_id == "local/2"  # the next entry is sealed under a data key wrapped by the new version


def test_an_unknown_key_version_is_an_error_not_corruption(keys):
    sealed, envelope = crypto.seal(keys, "src", "01ID", b"body")
    gone = crypto.Envelope(envelope.algorithm, "local/9", envelope.key_wrap, envelope.wrapped_key, envelope.nonce)
    with pytest.raises(VaultError, match="not in") as info:  # a missing key version: fix the key file, retry
        crypto.open_sealed(keys, "src", "01ID", gone, sealed)
    assert not isinstance(info.value, VaultCorruptionError)


def test_settings_pick_key_vault_or_the_key_file(monkeypatch, tmp_path):
    monkeypatch.delenv("WEBSITE_SITE_NAME", raising=False)
    assert type(from_settings("https://kv.vault.azure.net/keys/k", "", object())).__name__ == "AzureKeyVaultKey"
    assert from_settings("", "").path == DEFAULT_KEY_FILE
    assert from_settings("", str(tmp_path / "k.json")).path == tmp_path / "k.json"
    monkeypatch.setenv("WEBSITE_SITE_NAME", "func-markr")
    with pytest.raises(VaultError, match="MARKR_VAULT_KEY_URL"):
        from_settings("", "")


class FakeCryptographyClient:
    """Stands in for azure.keyvault.keys.crypto.CryptographyClient: a key per version, XOR "wrap"."""

    made: list[str] = []

    def __init__(self, key_id, credential):
        self.key_id = key_id
        FakeCryptographyClient.made.append(key_id)

    def wrap_key(self, algorithm, key):
        from azure.keyvault.keys.crypto import KeyWrapAlgorithm

        assert algorithm == KeyWrapAlgorithm.rsa_oaep_256
        return type("R", (), {"key_id": self.key_id, "encrypted_key": bytes(b ^ 0x5A for b in key)})

    def unwrap_key(self, algorithm, encrypted_key):
        from azure.core.exceptions import HttpResponseError

        if encrypted_key == b"bad":
            error = HttpResponseError(message="BadParameter")
            error.status_code = 400
            raise error
        return type("R", (), {"key": bytes(b ^ 0x5A for b in encrypted_key)})


class FakeKeyClient:
    current = "1"

    def __init__(self, vault_url, credential):
        self.vault_url = vault_url

    def get_key(self, name):
        return type("K", (), {"id": f"{self.vault_url}/keys/{name}/v{FakeKeyClient.current}"})


def test_key_vault_adapter_wraps_under_the_current_version_and_caches_one_client_per_version(monkeypatch):
    import azure.keyvault.keys
    import azure.keyvault.keys.crypto

    from shared.vault.kek import AzureKeyVaultKey

    monkeypatch.setattr(azure.keyvault.keys.crypto, "CryptographyClient", FakeCryptographyClient)
    monkeypatch.setattr(azure.keyvault.keys, "KeyClient", FakeKeyClient)
    FakeCryptographyClient.made, FakeKeyClient.current = [], "1"
    kek = AzureKeyVaultKey("https://kv.vault.azure.net/keys/vault-kek/", credential=object())
    keys = KeyRing(kek)
    sealed, envelope = crypto.seal(keys, "src", "01ID", b"body")
    assert (envelope.key_id, envelope.key_wrap) == ("https://kv.vault.azure.net/keys/vault-kek/v1", "RSA-OAEP-256")
    assert crypto.open_sealed(KeyRing(kek), "src", "01ID", envelope, sealed) == b"body"
    crypto.seal(keys, "src", "01ID", b"more")
    assert FakeCryptographyClient.made == ["https://kv.vault.azure.net/keys/vault-kek/v1"]  # cached
    assert keys.wraps == 1  # the key id the wrap answers with is the current one: the data key is kept
    FakeKeyClient.current = "2"
    kek._current = None  # as if the 5-minute cache ran out after a rotation
    moved = crypto.rewrap(keys, envelope)
    assert moved.key_id.endswith("/v2") and crypto.open_sealed(KeyRing(kek), "src", "01ID", moved, sealed) == b"body"
    with pytest.raises(VaultCorruptionError):
        kek.unwrap(envelope.key_id, "RSA-OAEP-256", b"bad")
    with pytest.raises(VaultError, match="not a version of"):
        kek.unwrap("https://other.vault.azure.net/keys/x/v1", "RSA-OAEP-256", b"k")


def test_the_local_stack_creates_the_key_file_on_start(monkeypatch, tmp_path):
    from devhost.localstack import LocalStack

    monkeypatch.delenv("MARKR_VAULT_KEY_URL", raising=False)
    monkeypatch.setenv("MARKR_VAULT_KEY_FILE", str(tmp_path / "run" / "vault-kek.json"))
    LocalStack._vault_key()
    assert json.loads((tmp_path / "run" / "vault-kek.json").read_text())["current"] == "1"
