"""A throw-away MariaDB server for tests and benchmarks.

Runs the mariadb-server package's own ``mariadbd`` on a temporary datadir, socket and loopback
port, with binary logging in ROW format and GTIDs as on the cluster, so SQL and modules are tested
against the real server without Docker.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pymysql

REPO_ROOT = Path(__file__).resolve().parents[2]
SQL_DIR = REPO_ROOT / "files" / "sql"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _find_binary(*names: str) -> str:
    for name in names:
        # /usr/sbin is not on every user's PATH.
        path = shutil.which(name) or shutil.which(name, path="/usr/sbin")
        if path:
            return path
    raise RuntimeError(
        f"none of {names} found: install the mariadb-server package (scripts/bootstrap.sh does)"
    )


@dataclass
class MariaDBInstance:
    """One running mariadbd; ``start()`` then ``stop()`` (or use as a context manager)."""

    basedir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="mariadb-test-")))
    server_id: int = 1
    extra_options: tuple[str, ...] = ()
    port: int = field(default_factory=_free_port)
    process: subprocess.Popen | None = None

    @property
    def datadir(self) -> Path:
        return self.basedir / "data"

    @property
    def socket(self) -> str:
        return str(self.basedir / "mariadb.sock")

    @property
    def error_log(self) -> Path:
        return self.basedir / "error.log"

    def start(self, timeout: float = 60.0) -> MariaDBInstance:
        if not self.datadir.exists():
            self.datadir.mkdir(parents=True)
            install = _find_binary("mariadb-install-db", "mysql_install_db")
            subprocess.run(
                [install, "--no-defaults", f"--datadir={self.datadir}", "--user=root",
                 "--auth-root-authentication-method=socket", "--skip-test-db"],
                check=True, capture_output=True, text=True,
            )
        self.process = subprocess.Popen(
            [
                _find_binary("mariadbd", "mysqld"), "--no-defaults", "--user=root",
                f"--datadir={self.datadir}", f"--socket={self.socket}",
                f"--port={self.port}", "--bind-address=127.0.0.1",
                f"--log-error={self.error_log}", f"--tmpdir={self.basedir}",
                f"--pid-file={self.basedir / 'mariadbd.pid'}",
                f"--server-id={self.server_id}", f"--log-bin={self.basedir / 'binlog'}",
                "--binlog-format=ROW", "--gtid-strict-mode=ON", "--log-slave-updates=ON",
                "--character-set-server=utf8mb4", "--collation-server=utf8mb4_unicode_ci",
                "--innodb-buffer-pool-size=256M", "--innodb-flush-log-at-trx-commit=2",
                "--max-connections=200", "--local-infile=ON",
                *self.extra_options,
            ],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"mariadbd exited early:\n{self.error_log.read_text()[-3000:]}")
            try:
                self.connect().close()
                return self
            except pymysql.err.OperationalError:
                time.sleep(0.2)
        raise RuntimeError(f"mariadbd did not answer within {timeout}s: {self.error_log}")

    def connect(self, user: str = "root", password: str = "", database: str | None = None,
                **kwargs) -> pymysql.connections.Connection:
        """Root connects over the socket (unix_socket auth); other accounts over TCP."""
        options = dict(user=user, password=password, database=database, charset="utf8mb4",
                       autocommit=True, **kwargs)
        if user == "root":
            return pymysql.connect(unix_socket=self.socket, **options)
        return pymysql.connect(host="127.0.0.1", port=self.port, **options)

    def client(self, sql: str | None = None, *, file: Path | None = None,
               database: str | None = None) -> subprocess.CompletedProcess:
        """Run SQL through the ``mariadb`` command-line client (it understands DELIMITER)."""
        command = [_find_binary("mariadb", "mysql"), "--no-defaults", f"--socket={self.socket}",
                   "--user=root", "--batch"]
        if database:
            command.append(database)
        stdin = file.read_text() if file else sql
        return subprocess.run(command, input=stdin, capture_output=True, text=True, check=True)

    def kill(self) -> None:
        """SIGKILL the server, as a crash would."""
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def stop(self, remove: bool = True) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.kill()
        self.process = None
        if remove:
            shutil.rmtree(self.basedir, ignore_errors=True)

    def restart(self) -> None:
        self.stop(remove=False)
        self.start()

    def __enter__(self) -> MariaDBInstance:
        return self.start()

    def __exit__(self, *_exc) -> None:
        self.stop()


def running_as_root() -> bool:
    return os.geteuid() == 0
