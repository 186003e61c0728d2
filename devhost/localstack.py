"""The stack `python -m devhost` runs on: the project's own PostgreSQL cluster and Azurite.

PostgreSQL lives in .local/run/pg/data (kept across runs). Azurite serves Table Storage on the
standard dev port 10002 with data in .local/run/azurite; an Azurite already listening there is
reused. Settings that point elsewhere (MARKR_DATABASE_URL, VaultStorage) are used as they are.
"""
from __future__ import annotations

import contextlib
import logging
import os
import urllib.error
import urllib.request

from devhost.stack import ROOT, Azurite, Postgres, azurite_connection_string, port_open

log = logging.getLogger("devhost.stack")
VAULT_SETTING = "VaultStorage"  # the app setting's real (mixed-case) name
RUN_DIR = ROOT / ".local" / "run"
AZURITE_TABLE_PORT = 10002


def _is_local_azurite(connection: str) -> bool:
    text = connection.replace(" ", "")
    return (not text or text.startswith("UseDevelopmentStorage=true")
            or f"127.0.0.1:{AZURITE_TABLE_PORT}/" in text or f"localhost:{AZURITE_TABLE_PORT}/" in text)


def azurite_listening(port: int) -> bool:
    """Is an Azurite Table service answering on `port`? (Its responses carry `Server: Azurite-Table`.)"""
    try:
        response = urllib.request.urlopen(f"http://127.0.0.1:{port}/devstoreaccount1/Tables", timeout=2)
        server = response.headers.get("Server", "")
    except urllib.error.HTTPError as exc:
        server = exc.headers.get("Server", "")
    except OSError:
        return False
    return "azurite" in server.lower()


class LocalStack:
    def __init__(self, use_stack: bool = True) -> None:
        self.use_stack = use_stack
        self.postgres: Postgres | None = None
        self.azurite: Azurite | None = None

    def start(self) -> None:
        if not self.use_stack:
            if not os.environ.get("MARKR_DATABASE_URL"):
                raise SystemExit("--no-stack needs MARKR_DATABASE_URL (and VaultStorage) to be set")
            return
        if not os.environ.get("MARKR_DATABASE_URL"):
            postgres = Postgres(RUN_DIR / "pg" / "data")
            already = postgres._port_file().exists() and port_open(int(postgres._port_file().read_text()))
            os.environ["MARKR_DATABASE_URL"] = postgres.start()
            self.postgres = None if already else postgres
            log.info("PostgreSQL %s at %s", "reused" if already else "started", os.environ["MARKR_DATABASE_URL"])
        self._vault_key()
        if _is_local_azurite(os.environ.get(VAULT_SETTING, "")):
            os.environ[VAULT_SETTING] = azurite_connection_string(AZURITE_TABLE_PORT)
            if port_open(AZURITE_TABLE_PORT):
                if not azurite_listening(AZURITE_TABLE_PORT):
                    raise SystemExit(f"port {AZURITE_TABLE_PORT} is taken by something that is not Azurite")
                log.info("Azurite already running on port %d: reusing it", AZURITE_TABLE_PORT)
            else:
                self.azurite = Azurite(RUN_DIR / "azurite", table_port=AZURITE_TABLE_PORT)
                self.azurite.start()
                log.info("Azurite started on port %d (data in %s)", AZURITE_TABLE_PORT, self.azurite.location)

    @staticmethod
    def _vault_key() -> None:
        """The local key-encryption key file, generated on first start (unless a Key Vault key is set)."""
        from shared.vault.kek import LocalKeyFile, from_settings

        kek = from_settings(os.environ.get("MARKR_VAULT_KEY_URL", ""), os.environ.get("MARKR_VAULT_KEY_FILE", ""))
        if isinstance(kek, LocalKeyFile):
            log.info("vault key file %s", kek.ensure())

    def stop(self) -> None:
        """Stop only what this run started."""
        with contextlib.suppress(Exception):
            if self.azurite:
                self.azurite.stop()
        with contextlib.suppress(Exception):
            if self.postgres:
                self.postgres.stop()
