"""Envelope encryption and the local key file, without storage."""
import json
import stat

import pytest

from shared.vault import crypto
from shared.vault.kek import DEFAULT_KEY_FILE, LocalKeyFile, from_settings
from shared.vault.model import VaultCorruptionError, VaultError


@pytest.fixture
def kek(tmp_path):
    return LocalKeyFile(tmp_path / "run" / "kek.json")


def test_key_file_is_created_once_private_and_kept(kek):
    path = kek.ensure()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    first = path.read_text()
    assert LocalKeyFile(path).ensure() == path and path.read_text() == first  # a second start keeps the key
    assert kek.current_key_id() == "local/1"


def test_seal_and_open_round_trip_with_a_fresh_data_key_each_time(kek):
    a, env_a = crypto.seal(kek, "src", "01ID", b"compressed bytes")
    b, env_b = crypto.seal(kek, "src", "01ID", b"compressed bytes")
    assert a != b and env_a.nonce != env_b.nonce and env_a.wrapped_key != env_b.wrapped_key
    assert crypto.open_sealed(kek, "src", "01ID", env_a, a) == b"compressed bytes"
    assert crypto.Envelope.from_json(env_a.as_json()) == env_a


@pytest.mark.parametrize("source, sid", [("other", "01ID"), ("src", "01OTHER")])
def test_a_ciphertext_bound_to_another_entry_does_not_open(kek, source, sid):
    sealed, envelope = crypto.seal(kek, "src", "01ID", b"x" * 100)
    with pytest.raises(VaultCorruptionError, match="tampered or moved"):
        crypto.open_sealed(kek, source, sid, envelope, sealed)


def test_a_flipped_bit_or_a_damaged_wrapped_key_is_corruption(kek):
    sealed, envelope = crypto.seal(kek, "src", "01ID", b"x" * 100)
    with pytest.raises(VaultCorruptionError):
        crypto.open_sealed(kek, "src", "01ID", envelope, sealed[:-1] + bytes([sealed[-1] ^ 1]))
    bad = crypto.Envelope(envelope.algorithm, envelope.key_id, envelope.key_wrap,
                          envelope.wrapped_key[:-1] + b"\x00", envelope.nonce)
    with pytest.raises(VaultCorruptionError):
        crypto.open_sealed(kek, "src", "01ID", bad, sealed)


def test_rotation_keeps_old_versions_and_rewrap_changes_only_the_key(kek):
    sealed, envelope = crypto.seal(kek, "src", "01ID", b"body")
    assert kek.rotate() == "local/2"
    assert json.loads(kek.path.read_text())["current"] == "2"
    assert crypto.open_sealed(kek, "src", "01ID", envelope, sealed) == b"body"
    moved = crypto.rewrap(kek, envelope)
    assert moved.key_id == "local/2" and moved.nonce == envelope.nonce
    assert crypto.open_sealed(kek, "src", "01ID", moved, sealed) == b"body"


def test_an_unknown_key_version_is_an_error_not_corruption(kek):
    sealed, envelope = crypto.seal(kek, "src", "01ID", b"body")
    gone = crypto.Envelope(envelope.algorithm, "local/9", envelope.key_wrap, envelope.wrapped_key, envelope.nonce)
    with pytest.raises(VaultError, match="not in") as info:  # a missing key version: fix the key file, retry
        crypto.open_sealed(kek, "src", "01ID", gone, sealed)
    assert not isinstance(info.value, VaultCorruptionError)


def test_settings_pick_key_vault_or_the_key_file(monkeypatch, tmp_path):
    monkeypatch.delenv("WEBSITE_SITE_NAME", raising=False)
    assert type(from_settings("https://kv.vault.azure.net/keys/k", "", object())).__name__ == "AzureKeyVaultKey"
    assert from_settings("", "").path == DEFAULT_KEY_FILE
    assert from_settings("", str(tmp_path / "k.json")).path == tmp_path / "k.json"
    monkeypatch.setenv("WEBSITE_SITE_NAME", "func-markr")
    with pytest.raises(VaultError, match="MARKR_VAULT_KEY_URL"):
        from_settings("", "")
