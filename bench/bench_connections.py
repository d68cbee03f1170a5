"""Benchmark: the cost of TLS and of the HAProxy hop, and how reads spread over the reader port.

Not a test: run with `make bench-connections` (or `.venv/bin/python bench/bench_connections.py`)
on a lab built by `scripts/lab.sh up` plus its proxy host (`make lab-aux`: HAProxy on lab-aux,
docs/connections.md). In one run, from the control node, against the live primary:

* sysbench oltp_read_only (4 threads) direct-plain, direct-TLS and through the writer port with TLS
  (the proxy passes the TLS session through), interleaved over several rounds: TPS as ratios to
  direct-plain, and new connections per second (connect, SELECT 1, close) for the same three
  paths, where the TLS handshake shows;
* the same sysbench through the reader port: the SELECTs each member served for the benchmark's
  account (information_schema.USER_STATISTICS, userstat switched on for the run), and which member
  answered each of 200 fresh connections. Reads must spread over the replicas, none on the primary.

"direct-plain" needs an exception: the members refuse unencrypted TCP (require_secure_transport).
The benchmark switches it off on the primary with SET GLOBAL for the plain measurements only (the
configuration file keeps it ON, so a restart restores it too) and sets it back at once, also when
a step fails; userstat is set back to its value, the account and the database are dropped.
Figures: docs/connections.md.
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from collections import Counter
from contextlib import contextmanager, nullcontext
from pathlib import Path

import pymysql

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.lab import (  # noqa: E402
    AUX,
    MEMBERS,
    LoadAverage,
    address,
    require_ca,
    roles,
    sql,
    sysbench_tls_dir,
    wait_applied,
)

USER, PASSWORD = "bench_reader", uuid.uuid4().hex
DATABASE = "bench_conn"
WRITER_PORT, READER_PORT = 6446, 6447  # roles/mariadb_proxy defaults


TLS_DIR = sysbench_tls_dir()  # sysbench reads its certificates from its working directory


def sysbench(host: str, port: int, tls: bool, command: str, seconds: int = 1,
             threads: int = 4) -> float:
    """Transactions per second of oltp_read_only (prepare/cleanup: 0)."""
    run = subprocess.run(
        ["sysbench", "oltp_read_only", f"--mysql-host={host}", f"--mysql-port={port}",
         f"--mysql-user={USER}", f"--mysql-password={PASSWORD}", f"--mysql-db={DATABASE}",
         "--tables=4", "--table-size=20000", f"--threads={threads}", f"--time={seconds}",
         "--report-interval=0", f"--mysql-ssl={'on' if tls else 'off'}", command],
        capture_output=True, text=True, check=False, cwd=TLS_DIR)
    if run.returncode != 0:
        sys.exit(f"sysbench {command} on {host}:{port} failed:\n{run.stdout[-2000:]}"
                 f"{run.stderr[-2000:]}")
    found = re.search(r"transactions:\s+\d+\s+\(([\d.]+) per sec", run.stdout)
    return float(found[1]) if found else 0.0


def connect(host: str, port: int, tls: bool) -> pymysql.connections.Connection:
    # Through the proxy the client reaches the member's certificate under the proxy's address:
    # the chain is checked against the cluster CA; the name is lab-aux's (docs/connections.md).
    # Plain must say so: PyMySQL otherwise negotiates TLS whenever the server offers it.
    ssl = {"ca": require_ca(), "check_hostname": False} if tls else None
    return pymysql.connect(host=host, port=port, user=USER, password=PASSWORD, database=DATABASE,
                           ssl=ssl, ssl_disabled=not tls, connect_timeout=5)


def connections_per_second(host: str, port: int, tls: bool, count: int) -> float:
    started = time.monotonic()
    for _ in range(count):
        with connect(host, port, tls) as conn, conn.cursor() as cur:
            cur.execute("SELECT 1")
    return count / (time.monotonic() - started)


@contextmanager
def plain_tcp_allowed(member: str):
    """require_secure_transport off on one member for the duration, set back whatever happens."""
    before = sql(member, "SELECT @@GLOBAL.require_secure_transport")[0][0]
    sql(member, "SET GLOBAL require_secure_transport = OFF")
    try:
        yield
    finally:
        sql(member, f"SET GLOBAL require_secure_transport = {before}")


def user_selects(member: str) -> int:
    rows = sql(member, "SELECT SELECT_COMMANDS FROM information_schema.USER_STATISTICS "
                       f"WHERE USER = '{USER}'")
    return int(rows[0][0]) if rows else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=20, help="per sysbench run")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of the 3 paths")
    parser.add_argument("--connections", type=int, default=200, help="per connection-rate run")
    args = parser.parse_args()
    if not shutil.which("sysbench"):
        sys.exit("install Debian's sysbench on the control node first")
    proxy = address(AUX)
    if proxy is None:
        sys.exit(f"{AUX} is not running: add the proxy host with `make lab-aux` first")
    require_ca()
    primary, replicas = roles()
    host = address(primary)
    sql(primary, f"CREATE DATABASE IF NOT EXISTS {DATABASE}; CREATE OR REPLACE USER {USER}@'%' "
                 f"IDENTIFIED BY '{PASSWORD}'; GRANT ALL ON {DATABASE}.* TO {USER}@'%'")
    userstat = {m: sql(m, "SELECT @@GLOBAL.userstat")[0][0] for m in MEMBERS}
    paths = {"direct-plain": (host, 3306, False), "direct-TLS": (host, 3306, True),
             "proxy-TLS (writer port)": (proxy, WRITER_PORT, True)}
    tps: dict[str, list[float]] = {name: [] for name in paths}
    rate: dict[str, list[float]] = {name: [] for name in paths}
    try:
        sysbench(host, 3306, True, "prepare")
        wait_applied(primary, replicas)
        load = LoadAverage()
        for index in range(args.rounds):
            for name, (where, port, tls) in paths.items():
                with nullcontext() if tls else plain_tcp_allowed(primary):
                    tps[name].append(sysbench(where, port, tls, "run", args.seconds))
                    rate[name].append(connections_per_second(where, port, tls,
                                                             args.connections))
            print(f"round {index + 1}: " + ", ".join(
                f"{name} {tps[name][-1]:.0f} TPS / {rate[name][-1]:.0f} conn/s"
                for name in paths), flush=True)
        load.stop()

        spread_load = LoadAverage()
        for member in MEMBERS:
            # NO_WRITE_TO_BINLOG: a FLUSH on a replica would otherwise be an errant transaction.
            sql(member, "SET GLOBAL userstat = ON; FLUSH NO_WRITE_TO_BINLOG USER_STATISTICS")
        reader_tps = sysbench(proxy, READER_PORT, True, "run", args.seconds)
        selects = {m: user_selects(m) for m in MEMBERS}
        answered = Counter()
        for _ in range(args.connections):
            with connect(proxy, READER_PORT, True) as conn, conn.cursor() as cur:
                cur.execute("SELECT @@hostname")
                answered[cur.fetchone()[0]] += 1
        spread_load.stop()
    finally:
        for member, value in userstat.items():
            sql(member, f"SET GLOBAL userstat = {value}")
        sql(primary, f"DROP USER IF EXISTS {USER}@'%'; DROP DATABASE IF EXISTS {DATABASE}")

    base_tps = statistics.median(tps["direct-plain"])
    base_rate = statistics.median(rate["direct-plain"])
    print(f"\nsysbench oltp_read_only, 4 threads, {args.seconds} s x {args.rounds} rounds "
          f"(median), primary {primary}; {load}")
    print(f"{'path':26} {'TPS':>8} {'ratio':>6} {'conn/s':>8} {'ratio':>6}")
    for name in paths:
        median_tps, median_rate = statistics.median(tps[name]), statistics.median(rate[name])
        print(f"{name:26} {median_tps:8.1f} {median_tps / base_tps:6.2f} "
              f"{median_rate:8.1f} {median_rate / base_rate:6.2f}")
    print(f"\nreader port ({READER_PORT}), TLS: {reader_tps:.1f} TPS; {spread_load}")
    print(f"{'member':10} {'role':8} {'SELECTs (sysbench)':>19} {'fresh connections':>18}")
    for member in MEMBERS:
        role = "primary" if member == primary else "replica"
        print(f"{member:10} {role:8} {selects[member]:19,} {answered.get(member, 0):18}")
    if selects[primary] or answered.get(primary):
        print(f"NOTE: the primary {primary} served reads while the replicas were healthy")


if __name__ == "__main__":
    main()
