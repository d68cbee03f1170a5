"""Benchmark: primary throughput and replica lag with serial vs parallel apply, sync_binlog 0 vs 1.

Not a test, and not run by CI: run on a lab built by `scripts/lab.sh up` and `site.yml` (which
installs the heartbeat of roles/mariadb_health) with

    .venv/bin/python bench/bench_replication.py [seconds]      (default 60)

For each configuration below, in one run, the settings are applied with SET GLOBAL on every member
(replication stopped and started around slave_parallel_* as the server requires), sysbench
oltp_write_only (4 threads) writes on the live primary from the control node, and every replica's
heartbeat lag (the age of the newest row of pos_health.heartbeat, see docs/health.md) is sampled
twice a second. Prints primary TPS, median and max replica lag, and each figure as a ratio to the
first configuration ("today": serial apply, sync_binlog 0). The role defaults are restored at the
end. Record the figures in docs/health.md.

Issue #10's target: max replica lag <= 5 s with the defaults, at no more than 15 % lower primary
TPS than today's settings.
"""

from __future__ import annotations

import json
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
MEMBERS = ["lab-db1", "lab-db2", "lab-db3"]
USER, PASSWORD = "bench_sysbench", uuid.uuid4().hex
DEFAULTS = yaml.safe_load((ROOT / "roles/mariadb_server/defaults/main.yml").read_text())
HEALTH = yaml.safe_load((ROOT / "roles/mariadb_health/vars/main.yml").read_text())
LAG_QUERY = HEALTH["mariadb_health_lag_query"].replace(
    "{{ mariadb_health_database }}", "pos_health")

# name -> settings; the first is the baseline every ratio refers to.
CONFIGURATIONS = {
    "today (serial, sync_binlog 0, flush 2)": dict(
        slave_parallel_threads=0, slave_parallel_mode="conservative", sync_binlog=0,
        innodb_flush_log_at_trx_commit=2, binlog_commit_wait_count=0),
    "serial, durable": dict(
        slave_parallel_threads=0, slave_parallel_mode="conservative", sync_binlog=1,
        innodb_flush_log_at_trx_commit=1, binlog_commit_wait_count=0),
    "conservative 4, durable, group commit 4/20ms": dict(
        slave_parallel_threads=4, slave_parallel_mode="conservative", sync_binlog=1,
        innodb_flush_log_at_trx_commit=1, binlog_commit_wait_count=4,
        binlog_commit_wait_usec=20000),
    "role defaults": {name: DEFAULTS["mariadb_server_" + name] for name in (
        "slave_parallel_threads", "slave_parallel_mode", "sync_binlog",
        "innodb_flush_log_at_trx_commit", "binlog_commit_wait_count", "binlog_commit_wait_usec")},
}


def sql(member: str, query: str) -> list[list[str]]:
    out = subprocess.run(["docker", "exec", member, "mariadb", "-N", "-B", "-e", query],
                         capture_output=True, text=True, check=True).stdout
    return [line.split("\t") for line in out.splitlines()]


def address(member: str) -> str:
    out = subprocess.run(["docker", "inspect", "-f", "{{json .NetworkSettings.Networks}}", member],
                         capture_output=True, text=True, check=True).stdout
    return next(n["IPAddress"] for n in json.loads(out).values() if n.get("IPAddress"))


def roles() -> tuple[str, list[str]]:
    writable = [m for m in MEMBERS if sql(m, "SELECT @@read_only")[0][0] == "0"]
    if len(writable) != 1:
        sys.exit(f"expected one writable member, found {writable}")
    return writable[0], [m for m in MEMBERS if m != writable[0]]


def apply(settings: dict, replicas: list[str]) -> None:
    for member in MEMBERS:
        replica = member in replicas
        statements = ["STOP SLAVE"] if replica else []
        statements += ["SET GLOBAL %s = %s" % (name, value if isinstance(value, int)
                                                else "'%s'" % value)
                       for name, value in settings.items()]
        statements += ["START SLAVE"] if replica else []
        sql(member, "; ".join(statements))


class LagSampler(threading.Thread):
    def __init__(self, replicas: list[str]):
        super().__init__(daemon=True)
        self.replicas, self.samples, self.stopping = replicas, [], threading.Event()

    def run(self):
        while not self.stopping.is_set():
            for member in self.replicas:
                value = sql(member, LAG_QUERY)[0][0]
                if value != "NULL":
                    self.samples.append(float(value))
            time.sleep(0.5)


def sysbench(host: str, command: str, seconds: int) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["sysbench", "oltp_write_only", f"--mysql-host={host}", f"--mysql-user={USER}",
         f"--mysql-password={PASSWORD}", "--mysql-db=bench", "--tables=4",
         "--table-size=20000", "--threads=4", f"--time={seconds}", "--report-interval=0",
         command], capture_output=True, text=True, check=True)


def main() -> None:
    seconds = int(sys.argv[1]) if len(sys.argv) > 1 else 60
    if not shutil.which("sysbench"):
        sys.exit("install Debian's sysbench on the control node first")
    primary, replicas = roles()
    host = address(primary)
    sql(primary, f"CREATE DATABASE IF NOT EXISTS bench; CREATE OR REPLACE USER {USER}@'%' "
                 f"IDENTIFIED BY '{PASSWORD}'; GRANT ALL ON bench.* TO {USER}@'%'")
    sysbench(host, "cleanup", 1)
    sysbench(host, "prepare", 1)
    results = {}
    try:
        for name, settings in CONFIGURATIONS.items():
            apply(settings, replicas)
            sampler = LagSampler(replicas)
            sampler.start()
            run = sysbench(host, "run", seconds)
            tps = float(re.search(r"transactions:\s+\d+\s+\(([\d.]+) per sec", run.stdout)[1])
            # Lag until the replicas caught up counts: keep sampling until it falls below 1 s.
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline and (not sampler.samples
                                                    or sampler.samples[-1] > 1):
                time.sleep(0.5)
            sampler.stopping.set()
            sampler.join()
            results[name] = dict(tps=tps, median_lag=statistics.median(sampler.samples),
                                 max_lag=max(sampler.samples))
            print(f"{name}: {results[name]}", flush=True)
    finally:
        apply(CONFIGURATIONS["role defaults"], replicas)
        sysbench(host, "cleanup", 1)
        sql(primary, f"DROP USER IF EXISTS {USER}@'%'; DROP DATABASE IF EXISTS bench")
    base = next(iter(results.values()))
    print(f"\n{'configuration':48} {'TPS':>8} {'ratio':>6} {'lag med':>8} {'lag max':>8}")
    for name, r in results.items():
        print(f"{name:48} {r['tps']:8.1f} {r['tps'] / base['tps']:6.2f} "
              f"{r['median_lag']:7.1f}s {r['max_lag']:7.1f}s")


if __name__ == "__main__":
    main()
