"""Vendors and their API keys in PostgreSQL: the VendorDirectory port (authentication) and the
operations behind `markr-ops vendors` (add, list, rotate, revoke)."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from psycopg.rows import dict_row

from shared.auth.api_keys import key_hash, new_key
from shared.auth.model import invalid_vendor_name
from shared.auth.port import StoredKey

_ACTIVE = "(revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now()))"


class VendorError(Exception):
    """An operator's request that cannot be done (no such vendor, bad name, app id taken)."""


@dataclass
class KeyInfo:
    key_id: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None
    active: bool

    def as_json(self) -> dict[str, Any]:
        return {"keyId": self.key_id, "active": self.active, "createdAt": _iso(self.created_at),
                "expiresAt": _iso(self.expires_at), "revokedAt": _iso(self.revoked_at),
                "lastUsedAt": _iso(self.last_used_at)}


@dataclass
class VendorInfo:
    name: str
    app_id: str | None
    created_at: datetime
    keys: list[KeyInfo] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "appId": self.app_id, "createdAt": _iso(self.created_at),
                "keys": [k.as_json() for k in self.keys]}


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


class PostgresVendors:
    def __init__(self, pool: Callable[[], Any]) -> None:
        self._pool = pool  # asked for on each call, like PostgresStore

    # ---- VendorDirectory (every authenticated request with a key or a vendor app token)

    def key(self, key_id: str) -> StoredKey | None:
        with self._pool().connection() as conn:
            row = conn.execute(f"SELECT key_id, vendor, key_hash, {_ACTIVE}, last_used_at FROM vendor_keys "
                               "WHERE key_id = %s", (key_id,)).fetchone()
        return StoredKey(*row) if row else None

    def touch(self, key_id: str) -> None:
        with self._pool().connection() as conn:
            conn.execute("UPDATE vendor_keys SET last_used_at = now() WHERE key_id = %s "
                         "AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute')", (key_id,))

    def vendor_for_app(self, app_id: str) -> str | None:
        with self._pool().connection() as conn:
            row = conn.execute("SELECT name FROM vendors WHERE app_id = %s", (app_id,)).fetchone()
        return row[0] if row else None

    # ---- operations (markr-ops vendors)

    def add(self, name: str, app_id: str | None = None) -> bool:
        """Register the vendor (True) or find it already there (False); sets its app id if given."""
        bad = invalid_vendor_name(name)
        if bad:
            raise VendorError(f"vendor name {name!r} {bad}")
        with self._pool().connection() as conn, conn.transaction():
            if app_id:
                other = conn.execute("SELECT name FROM vendors WHERE app_id = %s AND name <> %s",
                                     (app_id, name)).fetchone()
                if other:
                    raise VendorError(f"application {app_id} is already vendor {other[0]!r}")
            created = conn.execute("INSERT INTO vendors (name, app_id) VALUES (%s, %s) ON CONFLICT DO NOTHING "
                                   "RETURNING name", (name, app_id)).fetchone() is not None
            if not created and app_id:
                conn.execute("UPDATE vendors SET app_id = %s WHERE name = %s", (app_id, name))
        return created

    def issue_key(self, vendor: str) -> tuple[str, str]:
        """A new key for the vendor (its other keys stay active): (key id, key)."""
        with self._pool().connection() as conn, conn.transaction():
            self._require(conn, vendor)
            return self._issue(conn, vendor)

    def rotate(self, vendor: str, grace: timedelta = timedelta(0)) -> tuple[str, str, list[str]]:
        """A new key; the vendor's other active keys stop working after `grace` (at once by default).
        Returns (key id, key, ids of the keys now expiring)."""
        with self._pool().connection() as conn, conn.transaction():
            self._require(conn, vendor)
            key_id, key = self._issue(conn, vendor)
            rows = conn.execute(f"UPDATE vendor_keys SET expires_at = LEAST(COALESCE(expires_at, 'infinity'), "
                                f"now() + %s) WHERE vendor = %s AND key_id <> %s AND {_ACTIVE} RETURNING key_id",
                                (grace, vendor, key_id)).fetchall()
        return key_id, key, sorted(r[0] for r in rows)

    def revoke(self, vendor: str, key_ids: list[str] | None) -> list[str]:
        """Revoke the named keys (None: every active key of the vendor); returns those revoked."""
        with self._pool().connection() as conn, conn.transaction():
            self._require(conn, vendor)
            if key_ids is None:
                rows = conn.execute(f"UPDATE vendor_keys SET revoked_at = now() WHERE vendor = %s AND {_ACTIVE} "
                                    "RETURNING key_id", (vendor,)).fetchall()
            else:
                known = {r[0] for r in conn.execute("SELECT key_id FROM vendor_keys WHERE vendor = %s AND "
                                                    "key_id = ANY(%s)", (vendor, key_ids)).fetchall()}
                missing = sorted(set(key_ids) - known)
                if missing:
                    raise VendorError(f"vendor {vendor!r} has no key {', '.join(missing)}")
                rows = conn.execute("UPDATE vendor_keys SET revoked_at = now() WHERE vendor = %s AND "
                                    "key_id = ANY(%s) AND revoked_at IS NULL RETURNING key_id",
                                    (vendor, key_ids)).fetchall()
        return sorted(r[0] for r in rows)

    def list(self) -> list[VendorInfo]:
        with self._pool().connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            vendors = {r["name"]: VendorInfo(r["name"], r["app_id"], r["created_at"])
                       for r in cur.execute("SELECT name, app_id, created_at FROM vendors ORDER BY name").fetchall()}
            for r in cur.execute(f"SELECT key_id, vendor, created_at, expires_at, revoked_at, last_used_at, "
                                 f"{_ACTIVE} AS active FROM vendor_keys ORDER BY vendor, created_at, key_id").fetchall():
                vendors[r.pop("vendor")].keys.append(KeyInfo(**r))
        return list(vendors.values())

    @staticmethod
    def _require(conn: Any, vendor: str) -> None:
        if conn.execute("SELECT 1 FROM vendors WHERE name = %s", (vendor,)).fetchone() is None:
            raise VendorError(f"no vendor {vendor!r} (markr-ops vendors add {vendor})")

    @staticmethod
    def _issue(conn: Any, vendor: str) -> tuple[str, str]:
        key_id, key = new_key()
        conn.execute("INSERT INTO vendor_keys (key_id, vendor, key_hash) VALUES (%s, %s, %s)",
                     (key_id, vendor, key_hash(key)))
        return key_id, key
