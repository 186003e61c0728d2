"""App settings, read once from the environment (Azure app settings / local.settings.json).

Every name read here is listed in local.settings.template.json and set in infra/.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    return int(raw) if raw else default


def _float(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    return float(raw) if raw else default


@dataclass(frozen=True)
class Settings:
    # PostgreSQL: a libpq URL. With MARKR_DATABASE_ENTRA_AUTH=true the password is an Entra token.
    database_url: str
    database_entra_auth: bool
    # Message bus: "local" (the PostgreSQL-backed engine) or "azure" (Service Bus SDK).
    bus: str
    service_bus_connection: str  # connection string, when not using identity
    service_bus_namespace: str  # fully qualified namespace, for identity-based connections
    # Vault (Azure Table Storage).
    vault_connection: str  # connection string, when not using identity
    vault_table_endpoint: str  # https://<account>.table.core.windows.net, for identity
    vault_table: str
    # Receiver.
    max_body_bytes: int
    import_wait_seconds: float
    # Validate a waiting import in the receiver's process (shared/pipeline/validate_now.py) instead
    # of through the validation queue; false: every import goes through the queue.
    validate_in_receiver: bool = True
    # Apply pending schema migrations when the process first uses the database (Azure).
    migrate_on_start: bool = False
    # Connections per process in the PostgreSQL pool (docs/deploy.md has the connection budget).
    db_pool_max: int = 10
    # Vault key-encryption key: a Key Vault key URL (Azure), else a local key file (created if missing;
    # empty = .local/run/vault-kek.json of the project).
    vault_key_url: str = ""
    vault_key_file: str = ""
    # The longest a retry-queue trigger waits before giving a failed message back (1, 2, 4 … this).
    retry_backoff_max_seconds: float = 30.0
    # Who may call (shared/auth): Entra ID tenant; the token issuer and its JWKS (derived from the
    # tenant when empty); the accepted audiences (comma-separated: App ID URI and/or client id).
    auth_tenant_id: str = ""
    auth_issuer: str = ""
    auth_jwks_url: str = ""
    auth_audiences: tuple[str, ...] = ()


@lru_cache(maxsize=1)
def settings() -> Settings:
    return Settings(
        database_url=os.environ.get("MARKR_DATABASE_URL", ""),
        database_entra_auth=os.environ.get("MARKR_DATABASE_ENTRA_AUTH", "").lower() == "true",
        migrate_on_start=os.environ.get("MARKR_MIGRATE_ON_START", "").lower() == "true",
        bus=os.environ.get("MARKR_BUS", "local").strip().lower(),
        service_bus_connection=os.environ.get("ServiceBusConnection", ""),
        service_bus_namespace=os.environ.get("ServiceBusConnection__fullyQualifiedNamespace", ""),
        vault_connection=os.environ.get("VaultStorage", "") or "",
        vault_table_endpoint=os.environ.get("VaultStorage__tableServiceUri", ""),
        vault_table=os.environ.get("MARKR_VAULT_TABLE", "vault"),
        max_body_bytes=_int("MARKR_MAX_BODY_BYTES", 100 * 1024 * 1024),
        import_wait_seconds=_float("MARKR_IMPORT_WAIT_SECONDS", 30.0),
        validate_in_receiver=os.environ.get("MARKR_VALIDATE_IN_RECEIVER", "true").strip().lower() != "false",
        db_pool_max=_int("MARKR_DB_POOL_MAX", 10),
        retry_backoff_max_seconds=_float("MARKR_RETRY_BACKOFF_MAX_SECONDS", 30.0),
        vault_key_url=os.environ.get("MARKR_VAULT_KEY_URL", "").strip(),
        vault_key_file=os.environ.get("MARKR_VAULT_KEY_FILE", "").strip(),
        auth_tenant_id=os.environ.get("MARKR_AUTH_TENANT_ID", "").strip(),
        auth_issuer=os.environ.get("MARKR_AUTH_ISSUER", "").strip(),
        auth_jwks_url=os.environ.get("MARKR_AUTH_JWKS_URL", "").strip(),
        auth_audiences=tuple(a.strip() for a in os.environ.get("MARKR_AUTH_AUDIENCE", "").split(",") if a.strip()),
    )
