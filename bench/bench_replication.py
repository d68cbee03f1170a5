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

Then, with the role defaults, a bulk load of 1,000,000 order lines in transactions of 250,000 (as
bench_backup writes its data; `--bulk-lines`): the primary's time, and the replicas' catch-up time
after it as a ratio to it. sysbench connects with TLS (the members require it).
"""

from __future__ import annotations

import argparse
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
sys.path.insert(0, str(ROOT))

from bench.lab import (  # noqa: E402
    MEMBERS,
    LoadAverage,
    address,
    load_order_lines,
    roles,
    sql,
    sysbench_tls_dir,
    wait_applied,
)

USER, PASSWORD = "bench_sysbench", uuid.uuid4().hex
DEFAULTS = yaml.safe_load((ROOT / "roles/mariadb_server/defaults/main.yml").read_text())
HEALTH = yaml.safe_load((ROOT / "roles/mariadb_health/vars/main.yml").read_text())
LAG_QUERY = HEALTH["mariadb_health_lag_query"].replace(
    "{{ mariadb_health_database }}", "pos_health")

# name -> settings; the first is the baseline every ratio refers to.
CONFIGURATIONS = {
    # The settings before issue #10: nothing in the role's file, MariaDB 10.11's own defaults.
    "old settings (serial, sync_binlog 0)": dict(
        slave_parallel_threads=0, slave_parallel_mode="conservative", sync_binlog=0,
        innodb_flush_log_at_trx_commit=1, binlog_commit_wait_count=0,
        binlog_commit_wait_usec=100000),
    "serial, durable": dict(
        slave_parallel_threads=0, slave_parallel_mode="conservative", sync_binlog=1,
        innodb_flush_log_at_trx_commit=1, binlog_commit_wait_count=0,
        binlog_commit_wait_usec=100000),
    "conservative 4, durable, group commit 4/20ms": dict(
        slave_parallel_threads=4, slave_parallel_mode="conservative", sync_binlog=1,
        innodb_flush_log_at_trx_commit=1, binlog_commit_wait_count=4,
        binlog_commit_wait_usec=20000),
    "role defaults": {name: DEFAULTS["mariadb_server_" + name] for name in (
        "slave_parallel_threads", "slave_parallel_mode", "sync_binlog",
        "innodb_flush_log_at_trx_commit", "binlog_commit_wait_count", "binlog_commit_wait_usec")},
}


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


TLS_DIR = sysbench_tls_dir()  # sysbench reads its certificates from its working directory


def sysbench(host: str, command: str, seconds: int) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["sysbench", "oltp_write_only", f"--mysql-host={host}", f"--mysql-user={USER}",
         f"--mysql-password={PASSWORD}", "--mysql-db=bench", "--tables=4",
         "--table-size=20000", "--threads=4", f"--time={seconds}", "--report-interval=0",
         "--mysql-ssl=on", command], capture_output=True, text=True, check=True,
        cwd=TLS_DIR)


def measure(name: str, settings: dict, host: str, replicas: list[str], seconds: int) -> dict:
    apply(settings, replicas)
    load = LoadAverage()
    sampler = LagSampler(replicas)
    sampler.start()
    run = sysbench(host, "run", seconds)
    tps = float(re.search(r"transactions:\s+\d+\s+\(([\d.]+) per sec", run.stdout)[1])
    # Lag until the replicas caught up counts: keep sampling until it falls below 1 s.
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and (not sampler.samples or sampler.samples[-1] > 1):
        time.sleep(0.5)
    sampler.stopping.set()
    sampler.join()
    result = dict(tps=tps, median_lag=statistics.median(sampler.samples),
                  max_lag=max(sampler.samples), load=load.stop())
    print(f"{name}: {tps:.1f} TPS, lag median {result['median_lag']:.1f} s, "
          f"max {result['max_lag']:.1f} s; {load}", flush=True)
    return result


def bulk_load_catch_up(primary: str, replicas: list[str], lines: int) -> None:
    """A bulk load as the ETL writes it (large transactions of order lines): the primary's apply
    time, then how long the replicas take to reach the primary's position after it finished."""
    load = LoadAverage()
    started = time.monotonic()
    load_order_lines(primary, "bench_bulk", lines)
    primary_seconds = time.monotonic() - started
    wait_applied(primary, replicas)
    catch_up = time.monotonic() - started - primary_seconds
    sql(primary, "DROP DATABASE bench_bulk")
    print(f"\nbulk load of {lines:,} order lines (role defaults): primary {primary_seconds:.1f} s, "
          f"replicas caught up {catch_up:.1f} s later: catch-up / primary apply = "
          f"{catch_up / primary_seconds:.2f}; {load.stop()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("seconds", type=int, nargs="?", default=60,
                        help="per sysbench run (0: only the bulk-load phase)")
    parser.add_argument("--only", action="append", default=[],
                        help="run only configurations whose name contains this (repeatable; "
                             "the first configuration always runs: the ratios refer to it)")
    parser.add_argument("--bulk-lines", type=int, default=1_000_000,
                        help="order lines of the bulk-load catch-up phase (0: skip it)")
    args = parser.parse_args()
    if not shutil.which("sysbench"):
        sys.exit("install Debian's sysbench on the control node first")
    primary, replicas = roles()
    host = address(primary)
    sql(primary, f"CREATE DATABASE IF NOT EXISTS bench; CREATE OR REPLACE USER {USER}@'%' "
                 f"IDENTIFIED BY '{PASSWORD}'; GRANT ALL ON bench.* TO {USER}@'%'")
    if args.seconds == 0:
        sql(primary, f"DROP USER IF EXISTS {USER}@'%'; DROP DATABASE IF EXISTS bench")
        bulk_load_catch_up(primary, replicas, args.bulk_lines)
        return
    sysbench(host, "cleanup", 1)
    sysbench(host, "prepare", 1)
    baseline = next(iter(CONFIGURATIONS))
    chosen = [name for name in CONFIGURATIONS
              if name == baseline or not args.only or any(o in name for o in args.only)]
    results = {}
    try:
        for name in chosen:
            results[name] = measure(name, CONFIGURATIONS[name], host, replicas, args.seconds)
    finally:
        apply(CONFIGURATIONS["role defaults"], replicas)
        sysbench(host, "cleanup", 1)
        sql(primary, f"DROP USER IF EXISTS {USER}@'%'; DROP DATABASE IF EXISTS bench")
    base = results[baseline]
    print(f"\n{'configuration':48} {'TPS':>8} {'ratio':>6} {'lag med':>8} {'lag max':>8}  load")
    for name, r in results.items():
        print(f"{name:48} {r['tps']:8.1f} {r['tps'] / base['tps']:6.2f} "
              f"{r['median_lag']:7.1f}s {r['max_lag']:7.1f}s  {r['load'].start:.1f} -> "
              f"{r['load'].end:.1f}")
    if args.bulk_lines:
        bulk_load_catch_up(primary, replicas, args.bulk_lines)


if __name__ == "__main__":
    main()
