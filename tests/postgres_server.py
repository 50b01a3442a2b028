"""A real PostgreSQL server for the tests, from Debian's ``postgresql`` package: a cluster made
by initdb in a temporary folder, ``postgres`` in the foreground on 127.0.0.1 and a port of its
own (its socket in that folder too), a user with a generated password. PostgreSQL refuses to
run as root: as root, the server runs as the ``postgres`` user the package creates.

The session fixture ``postgres`` starts it once; a test module asks for it with
``pytest_plugins = ["tests.postgres_server"]``.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.daemons import require, start, wait_for

INSTALL = "apt-get install postgresql (as root), and pip install -e '.[postgres]' (psycopg)"
USER = "mnistlab"


@dataclass(frozen=True)
class Postgres:
    port: int
    password: str
    passfile: Path  # libpq's password file: the URLs the commands get name no password
    bins: dict[str, str]

    @property
    def env(self) -> dict[str, str]:
        """For a command's environment: where libpq finds the password (~/.pgpass otherwise)."""
        return {"PGPASSFILE": str(self.passfile)}

    def url(self, database: str, password: str | None = None) -> str:
        """The database's URL, for a command with ``env``, or with ``password`` in it."""
        user = USER if password is None else f"{USER}:{password}"
        return f"postgresql+psycopg://{user}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """A new, empty database; its URL (without the password)."""
        subprocess.run(
            [self.bins["createdb"], "-h", "127.0.0.1", "-p", str(self.port), "-U", USER, name],
            env={**os.environ, **self.env},
            check=True,
            capture_output=True,
        )
        return self.url(name)


def require_driver() -> None:
    """The driver mnist-lab's study storage needs: skip without it, fail in CI."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the PostgreSQL tests need psycopg: {INSTALL}", pytrace=False)
        pytest.skip(f"the PostgreSQL tests need psycopg: {INSTALL}")


def server_user() -> str | None:
    """Who runs the server: this user, or ``postgres`` when this is root."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        pytest.skip("PostgreSQL will not run as root, and there is no postgres user to run it")
    return "postgres"


@contextmanager
def postgres_server() -> Iterator[Postgres]:
    """Start the server; yield it once it accepts connections."""
    require_driver()
    programs = ["initdb", "postgres", "createdb", "pg_isready"]
    bins = require(programs, "the PostgreSQL tests", INSTALL)
    user = server_user()
    root = Path(tempfile.mkdtemp(prefix="pg-"))
    with ExitStack() as stack:
        stack.callback(shutil.rmtree, root, ignore_errors=True)
        if user is not None:
            shutil.chown(root, user)
        password = secrets.token_hex(16)
        (root / "password").write_text(password)
        data = root / "data"
        subprocess.run(
            [bins["initdb"], "-D", str(data), "-U", USER, f"--pwfile={root / 'password'}",
             "--auth=scram-sha-256", "--encoding=UTF8", "--no-sync"],
            check=True, capture_output=True, user=user,
        )  # fmt: skip
        port = free_port()
        # Loopback only, no unix socket outside this folder; fast shutdown on SIGINT.
        command = [
            bins["postgres"], "-D", str(data), "-p", str(port), "-h", "127.0.0.1",
            "-k", str(root), "-c", "fsync=off",
        ]  # fmt: skip
        log = root / "postgres.log"
        server = start(command, log, stack, user=user, stop_signal=signal.SIGINT)

        def ready() -> bool:
            probe = [bins["pg_isready"], "-q", "-h", "127.0.0.1", "-p", str(port)]
            return subprocess.run(probe).returncode == 0

        wait_for(ready, "PostgreSQL", log, (server,))
        passfile = root / "pgpass"  # this process's: libpq wants it private
        passfile.write_text(f"127.0.0.1:{port}:*:{USER}:{password}\n")
        passfile.chmod(0o600)
        yield Postgres(port, password, passfile, bins)


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """The server, started once for the session."""
    with postgres_server() as server:
        yield server
