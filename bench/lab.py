"""What the lab benchmarks share: root SQL on a member, its address, the live roles, the CA file
the members' certificates chain to, and the load average printed beside every figure.

The lab is the one `scripts/lab.sh up` builds (containers lab-db1..3); the benchmarks that need a
proxy or a backup host add the container of `inventory/lab-aux` (`make lab-aux`).
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MEMBERS = ["lab-db1", "lab-db2", "lab-db3"]
AUX = "lab-aux"
# The members refuse unencrypted TCP (require_secure_transport): clients verify them with this CA.
CLUSTER_CA = ROOT / ".lab/secrets/tls/ca.crt"


def sql(member: str, query: str) -> list[list[str]]:
    """Rows of a query run as root over the member's unix socket."""
    out = subprocess.run(["docker", "exec", member, "mariadb", "-N", "-B", "-e", query],
                         capture_output=True, text=True, check=True).stdout
    return [line.split("\t") for line in out.splitlines()]


def address(member: str) -> str | None:
    """The container's address on the lab network, None while it is not running."""
    out = subprocess.run(["docker", "inspect", "-f",
                          "{{.State.Running}} {{json .NetworkSettings.Networks}}", member],
                         capture_output=True, text=True, check=False).stdout.strip()
    running, _, networks = out.partition(" ")
    if running != "true" or not networks:
        return None
    return next((n["IPAddress"] for n in json.loads(networks).values() if n.get("IPAddress")),
                None)


def roles() -> tuple[str, list[str]]:
    """The live primary (the one writable running member) and the other running members."""
    running = [m for m in MEMBERS if address(m)]
    writable = [m for m in running if sql(m, "SELECT @@read_only")[0][0] == "0"]
    if len(writable) != 1:
        sys.exit(f"expected one writable member, found {writable}")
    return writable[0], [m for m in running if m != writable[0]]


def require_ca() -> str:
    if not CLUSTER_CA.is_file():
        sys.exit(f"{CLUSTER_CA} is missing: build the lab with scripts/lab.sh up first")
    return str(CLUSTER_CA)


class LoadAverage:
    """The machine is shared: the 1-minute load average at the start and end of each measurement."""

    def __init__(self) -> None:
        self.start = os.getloadavg()[0]
        self.started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        self.end: float | None = None

    def stop(self) -> LoadAverage:
        self.end = os.getloadavg()[0]
        return self

    def __str__(self) -> str:
        end = f"{self.end:.1f}" if self.end is not None else "?"
        return f"load average {self.start:.1f} -> {end} (started {self.started})"


def load_order_lines(primary: str, database: str, lines: int, batch: int = 250_000) -> int:
    """Orders and order lines (a fifth as many orders) written on the primary with INSERT ...
    SELECT FROM seq_*, `batch` lines per transaction; returns the number of orders."""
    orders = max(lines // 5, 1)
    sql(primary, f"DROP DATABASE IF EXISTS {database}; CREATE DATABASE {database}")
    sql(primary, f"CREATE TABLE {database}.Orders (id INT PRIMARY KEY, customer INT NOT NULL, "
                 "placed DATETIME NOT NULL) ENGINE=InnoDB")
    sql(primary, f"CREATE TABLE {database}.OrderLine (id INT AUTO_INCREMENT PRIMARY KEY, "
                 "order_id INT NOT NULL, product INT NOT NULL, qty INT NOT NULL, "
                 "price DECIMAL(10,2) NOT NULL, FOREIGN KEY (order_id) REFERENCES Orders (id)) "
                 "ENGINE=InnoDB")
    sql(primary, f"INSERT INTO {database}.Orders SELECT seq, seq % 5000, "
                 f"NOW() - INTERVAL seq MINUTE FROM {database}.seq_1_to_{orders}")
    for first in range(1, lines + 1, batch):
        last = min(first + batch - 1, lines)
        sql(primary, f"INSERT INTO {database}.OrderLine (order_id, product, qty, price) "
                     f"SELECT 1 + seq % {orders}, seq % 997, 1 + seq % 5, (seq % 10000) / 100 "
                     f"FROM {database}.seq_{first}_to_{last}")
    return orders


def wait_applied(source: str, replicas: list[str], timeout: int = 900) -> None:
    """Until every running member of `replicas` but the source itself has applied the source's
    binary log as it is now."""
    position = sql(source, "SELECT @@GLOBAL.gtid_binlog_pos")[0][0]
    for replica in replicas:
        if replica == source or not address(replica):
            continue
        if sql(replica, f"SELECT MASTER_GTID_WAIT('{position}', {timeout})")[0][0] != "0":
            sys.exit(f"{replica} did not reach {position} within {timeout} s")


def sysbench_tls_dir() -> str:
    """A working directory for sysbench --mysql-ssl=on: sysbench 1.0 reads cacert.pem,
    client-cert.pem and client-key.pem from its working directory. The cluster CA, and a client
    certificate the cluster CA signs for one day (removed with the directory at exit)."""
    workdir = tempfile.mkdtemp(prefix="bench-tls-")
    atexit.register(shutil.rmtree, workdir, True)
    ca_key = CLUSTER_CA.with_name("ca.key")
    steps = [
        ["cp", require_ca(), "cacert.pem"],
        ["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out",
         "client-key.pem"],
        ["openssl", "req", "-new", "-key", "client-key.pem", "-subj", "/CN=bench", "-out",
         "client.csr"],
        ["openssl", "x509", "-req", "-in", "client.csr", "-CA", "cacert.pem", "-CAkey",
         str(ca_key), "-CAcreateserial", "-days", "1", "-out", "client-cert.pem"],
    ]
    for step in steps:
        subprocess.run(step, cwd=workdir, check=True, capture_output=True)
    return workdir
