"""The local stack: a private PostgreSQL cluster and Azurite, started by the project itself.

Used by `scripts/up` (long-lived, under .local/run) and by the test suite (throw-away, under
.local/test). If MARKR_DATABASE_URL is already set, that database is used and no cluster is started;
likewise VaultStorage for the vault.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
PG_USER = "markr"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
        return True
    return False


def azurite_connection_string(table_port: int) -> str:
    return (
        f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
        f"TableEndpoint=http://127.0.0.1:{table_port}/{AZURITE_ACCOUNT};"
    )


def pg_bindir() -> Path:
    """Server binaries: `pg_config --bindir`, else the newest Debian install."""
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, check=True)
        path = Path(out.stdout.strip())
        if (path / "initdb").exists():
            return path
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"),
                        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0)
    if candidates:
        return candidates[-1].parent
    raise RuntimeError("PostgreSQL server binaries not found (pg_config --bindir, /usr/lib/postgresql/*/bin)")


def _as_server_user(cmd: list[str]) -> list[str]:
    """initdb and postgres refuse to run as root: run them as the unprivileged `postgres` user."""
    if os.geteuid() != 0:
        return cmd
    return ["runuser", "-u", "postgres", "--", *cmd]


def _run_server_command(cmd: list[str], what: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run a PostgreSQL server command; a failure raises with the command's own output."""
    result = subprocess.run(_as_server_user(cmd), capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(f"{what} failed (exit {result.returncode}): {' '.join(cmd)}\n"
                           f"{(result.stderr or '').strip()}\n{(result.stdout or '').strip()}".rstrip())
    return result


def server_user_can_reach(directory: Path) -> bool:
    """Can the server's user enter `directory` (every ancestor searchable)? Always, when not root."""
    if os.geteuid() != 0:
        return True
    return subprocess.run(_as_server_user(["test", "-x", str(directory)]), capture_output=True).returncode == 0


def relocated_server_dir(data_dir: Path) -> Path:
    """Where a cluster lives when the `postgres` user cannot reach `data_dir` (a clone inside a 0700
    home, as root): a directory of its own under /var/tmp, one per data directory path."""
    digest = hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:16]
    base = Path("/var/tmp") if Path("/var/tmp").is_dir() else Path(tempfile.gettempdir())
    return base / f"markr-pg-{digest}"


@dataclass
class Postgres:
    """A private cluster whose data directory is `data_dir` (port file and log next to it).

    As root the server runs as `postgres`; if that user cannot reach `data_dir`, the cluster's
    files go to relocated_server_dir() and `data_dir` becomes a symlink to them (the pointer: delete
    it, or .local/run, and the next start begins from an empty cluster). The user's directories'
    permissions are never changed.
    """

    data_dir: Path
    port: int = 0
    log_file: Path = field(init=False)
    server_data_dir: Path = field(init=False)  # the real path the server commands get

    def __post_init__(self) -> None:
        self.server_data_dir = self.data_dir
        self.log_file = self.data_dir.parent / "postgres.log"
        if self.data_dir.is_symlink():
            self._use(Path(os.readlink(self.data_dir)).parent)

    def _use(self, server_dir: Path) -> None:
        self.server_data_dir = server_dir / "data"
        self.log_file = server_dir / "postgres.log"

    @property
    def url(self) -> str:
        return f"postgresql://{PG_USER}@127.0.0.1:{self.port}/{PG_USER}"

    def _port_file(self) -> Path:
        return self.data_dir.parent / "postgres.port"

    def _chown(self, path: Path) -> None:
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            os.chown(path, pw.pw_uid, pw.pw_gid)

    def _place(self) -> None:
        """Decide where the cluster's files go before creating it (see the class docstring)."""
        if self.data_dir.is_symlink() or (self.data_dir / "PG_VERSION").exists():
            return  # placed by an earlier start
        if server_user_can_reach(self.data_dir.parent):
            return
        server_dir = relocated_server_dir(self.data_dir)
        # No pointer to it: whatever is there belongs to a cluster whose data dir was deleted.
        shutil.rmtree(server_dir, ignore_errors=True)
        server_dir.mkdir(mode=0o700, parents=True)
        self._chown(server_dir)
        if self.data_dir.exists():
            shutil.rmtree(self.data_dir)
        self.data_dir.symlink_to(server_dir / "data", target_is_directory=True)
        self._use(server_dir)

    def start(self) -> str:
        """Create the cluster if needed and start it (or reuse it if it is already running)."""
        bindir = pg_bindir()
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        self._place()
        data = self.server_data_dir
        if self._port_file().exists() and (data / "postmaster.pid").exists():
            self.port = int(self._port_file().read_text())
            if port_open(self.port):
                return self.url
        if not (data / "PG_VERSION").exists():
            if data.exists():
                shutil.rmtree(data)
            data.mkdir(mode=0o700)
            self._chown(data)
            _run_server_command([str(bindir / "initdb"), "-D", str(data), "-U", PG_USER, "--auth=trust",
                                 "--encoding=UTF8", "--locale=C", "--no-sync"], "initdb")
        self.port = self.port or free_port()
        self._port_file().write_text(str(self.port))
        self.log_file.touch()
        self._chown(self.log_file)
        options = (f"-c port={self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories='' "
                   "-c max_connections=200 -c fsync=on -c shared_buffers=256MB")
        result = subprocess.run(
            _as_server_user([str(bindir / "pg_ctl"), "-D", str(data), "-l", str(self.log_file),
                             "-o", options, "-w", "-t", "60", "start"]),
            capture_output=True, text=True,
        )
        if result.returncode != 0:
            raise RuntimeError(f"PostgreSQL did not start: {result.stdout}{result.stderr}\n"
                               f"{self.log_file.read_text()[-2000:]}")
        self._create_database()
        return self.url

    def _create_database(self) -> None:
        import psycopg

        admin = f"postgresql://{PG_USER}@127.0.0.1:{self.port}/postgres"
        with psycopg.connect(admin, autocommit=True) as conn:
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (PG_USER,)).fetchone():
                conn.execute(f'CREATE DATABASE "{PG_USER}"')

    def stop(self) -> None:
        if not (self.server_data_dir / "postmaster.pid").exists():
            return
        _run_server_command([str(pg_bindir() / "pg_ctl"), "-D", str(self.server_data_dir), "-m", "fast", "-w",
                             "stop"], "pg_ctl stop")

    def kill(self) -> None:
        """Stop abruptly (immediate shutdown), as a crash would; the next start recovers from WAL."""
        _run_server_command([str(pg_bindir() / "pg_ctl"), "-D", str(self.server_data_dir), "-m", "immediate",
                             "-w", "stop"], "pg_ctl stop -m immediate")

    def remove(self) -> None:
        """Delete the stopped cluster's files, wherever they live."""
        if self.server_data_dir != self.data_dir:
            shutil.rmtree(self.server_data_dir.parent, ignore_errors=True)
        if self.data_dir.is_symlink():
            self.data_dir.unlink()
        shutil.rmtree(self.data_dir, ignore_errors=True)


def ensure_node_modules() -> None:
    if not (ROOT / "node_modules" / ".bin" / "azurite-table").exists():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=ROOT, check=True)


@dataclass
class Azurite:
    location: Path
    table_port: int = 0
    process: subprocess.Popen | None = None
    _log_start: int = field(default=0, init=False, repr=False)

    @property
    def connection_string(self) -> str:
        return azurite_connection_string(self.table_port)

    def start(self) -> str:
        ensure_node_modules()
        self.location.mkdir(parents=True, exist_ok=True)
        self.table_port = self.table_port or free_port()
        log = open(self.location / "azurite.log", "ab")  # noqa: SIM115 - owned by the child process
        self._log_start = log.tell()  # this run's lines only (the log is appended to)
        self.process = subprocess.Popen(
            [str(ROOT / "node_modules" / ".bin" / "azurite-table"), "--tableHost", "127.0.0.1",
             "--tablePort", str(self.table_port), "--location", str(self.location),
             "--skipApiVersionCheck", "--disableProductStyleUrl", "--silent"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        deadline = time.monotonic() + 30
        while not port_open(self.table_port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"Azurite did not start; see {self.location / 'azurite.log'}")
            time.sleep(0.1)
        return self.connection_string

    def stop(self, timeout: float = 30.0) -> None:
        """SIGINT: Azurite saves its in-memory database only then (every 5 s otherwise, and not on
        SIGTERM), so terminating it would lose the last writes. Once it logs that it has closed (its
        database saved), a process that lingers is ended; escalate if it does not exit."""
        if not self.process or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGINT)
        deadline = time.monotonic() + timeout
        while self.process.poll() is None and time.monotonic() < deadline:
            if self._closed():
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.process.wait(1.0)  # it usually exits by itself right after
                break
            time.sleep(0.05)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if self.process.poll() is not None:
                return
            self.process.send_signal(sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(10.0)

    def _closed(self) -> bool:
        with contextlib.suppress(OSError), open(self.location / "azurite.log", "rb") as log:
            log.seek(self._log_start)
            return b"successfully closed" in log.read()
        return False
