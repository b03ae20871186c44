"""A PostgreSQL server of the tests' own: Debian's PostgreSQL (15) started in a temporary folder,
listening only on a unix socket in that folder (its port names the socket), with durability
off (tests need speed, not crash safety).

`initdb` and `postgres` refuse to run as root: as root they run as the unprivileged user
`kiln-pg`, created when missing. Where PostgreSQL is not installed, `require_postgres()` skips
the test saying so (`make postgres` installs it, as root), except with `KILN_REQUIRE_POSTGRES=1`
(CI), where it fails.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

USER = "kiln-pg"
"""The system user that runs PostgreSQL when the tests run as root."""
_SERVER_OPTIONS = ("-c listen_addresses='' -c fsync=off -c synchronous_commit=off "
                   "-c full_page_writes=off -c max_connections=400 -c shared_buffers=32MB")


def _binary(name: str) -> str | None:
    """`name` from Debian's newest /usr/lib/postgresql/N/bin, else from PATH."""
    for folder in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (folder / name).is_file():
            return str(folder / name)
    return shutil.which(name)


def missing_postgres() -> str | None:
    """Why PostgreSQL tests cannot run here, or None when they can."""
    missing = [name for name in ("initdb", "pg_ctl", "postgres") if _binary(name) is None]
    if missing:
        return (f"PostgreSQL is not installed (no {', '.join(missing)}; `make postgres` installs "
                "it, as root): the tests on PostgreSQL are skipped")
    return None


def require_postgres() -> None:
    """Skip the test (fail it under KILN_REQUIRE_POSTGRES=1) where PostgreSQL is missing."""
    reason = missing_postgres()
    if reason is not None:
        if os.environ.get("KILN_REQUIRE_POSTGRES"):
            pytest.fail(reason)
        pytest.skip(reason)


def _as_server_user(command: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return command
    if subprocess.run(["id", "-u", USER], capture_output=True).returncode != 0:
        subprocess.run(["useradd", "--system", "--no-create-home", USER], check=True)
    return ["runuser", "-u", USER, "--", *command]


class PostgresServer:
    """One PostgreSQL cluster in `root`; `stop()` and `start()` again to play an outage."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.data = root / "data"
        with socket.socket() as sock:  # a port no other test server uses at the moment
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        if os.geteuid() == 0:
            subprocess.run(_as_server_user(["true"]), check=True)  # creates the user if missing
            shutil.chown(root, USER)
        self._run("initdb", "-D", str(self.data), "-U", "kiln", "--auth=trust", "-E", "UTF8",
                  "--no-locale", "--no-sync", "--no-instructions")

    def _run(self, binary: str, *args: str) -> None:
        path = _binary(binary)
        assert path is not None, missing_postgres()
        result = subprocess.run(_as_server_user([path, *args]), capture_output=True, text=True,
                                timeout=120)
        assert result.returncode == 0, f"{binary} failed: {result.stdout}{result.stderr}"

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "server.log"), "-w",
                  "-t", "60", "-o", f"-k {self.root} -p {self.port} {_SERVER_OPTIONS}", "start")

    def stop(self) -> None:
        """Stop at once (`fast`: open connections are cut, as in a crash of the server)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def url(self, database: str = "postgres") -> str:
        """The `KILN_DATABASE_URL` of `database` on this server."""
        return f"postgresql://kiln@/{database}?host={self.root}&port={self.port}"

    def create_database(self, prefix: str = "kiln") -> str:
        """A new, empty database; its URL."""
        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(host=str(self.root), port=self.port, user="kiln", dbname="postgres",
                             autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


@contextlib.contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    """A running server in a new folder under /tmp (the server's user can reach it there, and
    the socket's path stays short); stopped and deleted on exit."""
    root = Path(tempfile.mkdtemp(prefix="kiln-pg-"))
    try:
        server = PostgresServer(root)
        server.start()
        try:
            yield server
        finally:
            with contextlib.suppress(AssertionError):
                server.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)
