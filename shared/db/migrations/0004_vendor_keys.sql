-- Vendors and their API keys (shared/auth, shared/db/vendors.py, `markr-ops vendors`).
-- A vendor's name is the `source` of its submissions (vault partition, status, lineage). A vendor
-- authenticates with an Entra ID application (app_id = the token's azp/appid claim) or with API keys.
-- Keys are stored only as sha256(key); key_id is the public part of the key that finds the row.
CREATE TABLE vendors (
    name       text PRIMARY KEY CHECK (name ~ '^[a-z0-9][a-z0-9._-]{0,63}$'),
    app_id     text UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE vendor_keys (
    key_id       text PRIMARY KEY,
    vendor       text NOT NULL REFERENCES vendors (name),
    key_hash     text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz,  -- set by a rotation: the old key keeps working until then
    revoked_at   timestamptz,
    last_used_at timestamptz   -- written at most about once a minute per key
);
CREATE INDEX vendor_keys_vendor ON vendor_keys (vendor);
