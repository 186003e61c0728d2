"""Vendors and API keys in PostgreSQL (shared/db/vendors.py): what `markr-ops vendors` does and what
authentication reads."""
from datetime import timedelta

import psycopg
import pytest
from psycopg_pool import ConnectionPool

from shared.auth.api_keys import ApiKeyValidator, key_hash, key_id_of
from shared.auth.model import AuthenticationFailed
from shared.db.vendors import PostgresVendors, VendorError


@pytest.fixture
def vendors(database_url):
    pool = ConnectionPool(database_url, min_size=1, max_size=2, open=True)
    yield PostgresVendors(lambda: pool)
    pool.close()


def test_a_vendor_holds_several_keys_stored_only_as_hashes(vendors, database_url):
    assert vendors.add("acme") is True and vendors.add("acme") is False
    first_id, first = vendors.issue_key("acme")
    second_id, second = vendors.issue_key("acme")
    assert key_id_of(first) == first_id and first != second
    for key_id, key in ((first_id, first), (second_id, second)):
        stored = vendors.key(key_id)
        assert (stored.vendor, stored.active, stored.key_hash) == ("acme", True, key_hash(key))
    with psycopg.connect(database_url) as conn:
        dump = str(conn.execute("SELECT * FROM vendor_keys").fetchall())
    assert first.split("_", 2)[2] not in dump and second.split("_", 2)[2] not in dump


def test_names_and_application_ids_are_checked(vendors):
    with pytest.raises(VendorError, match="vendor name"):
        vendors.add("Acme Corp")
    vendors.add("acme", app_id="app-1")
    with pytest.raises(VendorError, match="already vendor 'acme'"):
        vendors.add("beta", app_id="app-1")
    assert vendors.vendor_for_app("app-1") == "acme" and vendors.vendor_for_app("app-2") is None
    with pytest.raises(VendorError, match="no vendor"):
        vendors.issue_key("nobody")


def test_rotation_expires_the_other_keys_after_the_grace_and_revocation_is_immediate(vendors):
    vendors.add("acme")
    old_id, old = vendors.issue_key("acme")
    new_id, new, expiring = vendors.rotate("acme", timedelta(hours=1))
    assert expiring == [old_id] and vendors.key(old_id).active and vendors.key(new_id).active
    newest_id, newest, expiring = vendors.rotate("acme")
    assert expiring == sorted([old_id, new_id])  # the old one's grace is cut short too
    assert not vendors.key(old_id).active and not vendors.key(new_id).active and vendors.key(newest_id).active
    with pytest.raises(VendorError, match="has no key"):
        vendors.revoke("acme", ["000000000000"])
    assert vendors.revoke("acme", None) == [newest_id]  # every active key
    assert not any(vendors.key(k).active for k in (old_id, new_id, newest_id))
    with pytest.raises(AuthenticationFailed):
        ApiKeyValidator(vendors).validate(newest)


def test_last_use_is_written_at_most_once_a_minute(vendors, database_url):
    vendors.add("acme")
    key_id, key = vendors.issue_key("acme")
    check = ApiKeyValidator(vendors)
    assert check.validate(key).vendor == "acme"
    first = vendors.key(key_id).last_used_at
    assert first is not None
    vendors.touch(key_id)  # within the minute: no write
    assert vendors.key(key_id).last_used_at == first
    with psycopg.connect(database_url) as conn:
        conn.execute("UPDATE vendor_keys SET last_used_at = now() - interval '2 minutes' WHERE key_id = %s",
                     (key_id,))
    check.validate(key)
    assert vendors.key(key_id).last_used_at > first
    listed = vendors.list()
    assert [v.name for v in listed] == ["acme"] and listed[0].keys[0].last_used_at is not None
