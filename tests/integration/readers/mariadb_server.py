"""A private MariaDB server started from the installed binaries, for reader tests.

:func:`run_mariadb` initialises a data directory with ``mariadb-install-db``, runs
``mariadbd`` on a free port of 127.0.0.1 (real password authentication, no grant-table
shortcuts) and creates a database with a password-protected user that may only ``SELECT``
from it; closing the generator stops the server and removes its data. Missing binaries fail
the tests (the test machine has Debian's ``mariadb-server`` package), as a missing
``redis-server`` does elsewhere.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pymysql
import pytest

_START_TIMEOUT_S = 60.0
# Small InnoDB files: the data directory stays around 25 MB instead of 160 MB.
_SERVER_OPTIONS = ("--innodb-log-file-size=8M", "--innodb-buffer-pool-size=32M")


@dataclass(frozen=True)
class MariaDB:
    """A running private MariaDB server: ``user``/``password`` may only read ``database``."""

    port: int
    socket: Path
    database: str
    user: str
    password: str

    def url(self, password: str | None = None, scheme: str = "mysql", database: str = "") -> str:
        """A connection string for the reading user (``password`` overrides the real one)."""
        secret = self.password if password is None else password
        return f"{scheme}://{self.user}:{secret}@127.0.0.1:{self.port}/{database or self.database}"

    def admin(self) -> pymysql.connections.Connection[pymysql.cursors.Cursor]:
        """A root connection over the Unix socket, in autocommit mode."""
        return pymysql.connect(unix_socket=str(self.socket), user="root", autocommit=True)

    def reset(self) -> None:
        """Drop and recreate ``database`` (the user's grant on it survives)."""
        with self.admin() as admin, admin.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS `{self.database}`")
            cursor.execute(f"CREATE DATABASE `{self.database}`")


def _binary(name: str, *fallbacks: str) -> str:
    found = shutil.which(name) or next((f for f in fallbacks if Path(f).is_file()), None)
    if found is None:
        pytest.fail(f"{name} not found: install Debian's mariadb-server package")
    return found


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _log_tail(log: Path, lines: int = 20) -> str:
    text = log.read_text(errors="replace") if log.exists() else "(no log written)"
    return "\n".join(text.splitlines()[-lines:])


def _answers(sock: Path) -> bool:
    try:
        pymysql.connect(unix_socket=str(sock), user="root", connect_timeout=1).close()
    except pymysql.err.MySQLError:
        return False
    return True


def _wait_until_ready(proc: subprocess.Popen[bytes], sock: Path, log: Path) -> None:
    deadline = time.monotonic() + _START_TIMEOUT_S
    while not _answers(sock):
        if proc.poll() is not None:
            pytest.fail(f"mariadbd exited with status {proc.returncode}:\n{_log_tail(log)}")
        if time.monotonic() > deadline:
            pytest.fail(f"mariadbd did not accept connections within {_START_TIMEOUT_S} s:\n"
                        f"{_log_tail(log)}")  # fmt: skip
        time.sleep(0.1)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()  # SIGTERM: mariadbd shuts down cleanly
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=30)


def _provision(sock: Path) -> MariaDB:
    """Create the database and its reading user; return the server's connection details."""
    admin = pymysql.connect(unix_socket=str(sock), user="root", autocommit=True)
    with admin, admin.cursor() as cursor:
        cursor.execute("SELECT @@port")
        row = cursor.fetchone()
        assert row is not None
        server = MariaDB(int(row[0]), sock, "kb", "reader", f"pw-{uuid.uuid4().hex}")
        cursor.execute(f"CREATE DATABASE `{server.database}`")
        cursor.execute(
            f"CREATE USER '{server.user}'@'127.0.0.1' IDENTIFIED BY %s", (server.password,)
        )
        cursor.execute(f"GRANT SELECT ON `{server.database}`.* TO '{server.user}'@'127.0.0.1'")
    return server


def run_mariadb() -> Iterator[MariaDB]:
    """Start a private server, yield it, then stop it and remove its data directory."""
    install_db = _binary("mariadb-install-db", "/usr/bin/mariadb-install-db")
    mariadbd = _binary("mariadbd", "/usr/sbin/mariadbd")
    # Short path under /tmp: Unix socket paths are limited to about 100 characters.
    workdir = Path(tempfile.mkdtemp(prefix="aof-mariadb-"))
    data, sock, log = workdir / "data", workdir / "sock", workdir / "error.log"
    as_root = ("--user=root",) if os.geteuid() == 0 else ()  # mariadbd refuses root otherwise
    try:
        installed = subprocess.run(
            [install_db, "--no-defaults", f"--datadir={data}", "--skip-test-db",
             "--auth-root-authentication-method=normal", *as_root, *_SERVER_OPTIONS],
            capture_output=True,
            check=False,
        )  # fmt: skip
        if installed.returncode != 0:
            output = (installed.stdout + installed.stderr).decode(errors="replace")
            pytest.fail(f"mariadb-install-db failed ({installed.returncode}):\n{output[-2000:]}")
        proc = subprocess.Popen(
            [mariadbd, "--no-defaults", f"--datadir={data}", f"--socket={sock}",
             f"--port={_free_port()}", "--bind-address=127.0.0.1", "--skip-name-resolve",
             f"--pid-file={workdir / 'mariadbd.pid'}", f"--log-error={log}", *as_root,
             *_SERVER_OPTIONS],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            _wait_until_ready(proc, sock, log)
            yield _provision(sock)
        finally:
            _stop(proc)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
