"""Benchmark: write-unavailability window of a switchover and of a failover on the local lab.

Not a test: run on a lab built by `scripts/lab.sh up` with
`.venv/bin/python bench/bench_failover.py [rounds]` (default 5). A writer on the control node
commits numbered rows through whichever member accepts writes (tests/support/writer.py) while

* switchover.yml moves the primary back and forth between two members, and
* the primary's container is killed (`docker kill`), failover.yml promotes a replica, the old
  primary is started again and rejoin.yml brings it back (rebuilt when it holds errant GTIDs).

Prints, per kind, the median over the rounds of the longest gap between two acknowledged commits
(the write-unavailability window), of the playbook's run time, and the acknowledged commits that
are missing on any member afterwards (must be 0 for a switchover). Figures: docs/operations.md.
"""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.lab import (  # noqa: E402
    MEMBERS,
    LoadAverage,
    address,
    require_ca,
    roles,
    sql,
    wait_applied,
)
from tests.support.writer import CREATE_TABLE, Writer  # noqa: E402

PLAYBOOK = str(ROOT / ".venv/bin/ansible-playbook")
USER, PASSWORD = "bench_writer", uuid.uuid4().hex


def primary() -> str:
    return roles()[0]


def play(*args: str) -> tuple[float, subprocess.CompletedProcess]:
    started = time.monotonic()
    done = subprocess.run([PLAYBOOK, *args], cwd=ROOT, capture_output=True, text=True, check=False)
    return time.monotonic() - started, done


def lost(writer: Writer, members: list[str]) -> int:
    missing = set()
    for member in members:
        rows = {int(r[0]) for r in sql(member, f"SELECT seq FROM bench.drill "
                                               f"WHERE run = '{writer.run_id}'")}
        missing.update(writer.missing(rows))
    return len(missing)


def writer() -> Writer:
    started = Writer(uuid.uuid4().hex[:12], MEMBERS, address, USER, PASSWORD, "bench",
                     ssl_ca=require_ca())
    started.start()
    started.wait_for(20, 60)
    return started


def switchover(target: str) -> tuple[float, float, int]:
    running = writer()
    seconds, done = play("playbooks/switchover.yml", "-e", f"new_primary={target}")
    running.wait_for(len(running.acked) + 20, 120)
    running.stop()
    if done.returncode != 0:
        sys.exit(f"switchover failed:\n{done.stdout[-3000:]}")
    wait_applied(target, MEMBERS)
    return running.window(), seconds, lost(running, MEMBERS)


def failover() -> tuple[float, float, int]:
    old = primary()
    running = writer()
    subprocess.run(["docker", "kill", old], check=True, capture_output=True)
    seconds, done = play("playbooks/failover.yml")
    running.wait_for(len(running.acked) + 20, 120)
    running.stop()
    if done.returncode != 0:
        sys.exit(f"failover failed:\n{done.stdout[-3000:]}")
    new = primary()
    survivors = [m for m in MEMBERS if m != old]
    wait_applied(new, MEMBERS)
    missing = lost(running, survivors)
    subprocess.run(["docker", "start", old], check=True, capture_output=True)
    deadline = time.monotonic() + 300
    while subprocess.run(["docker", "exec", old, "mariadb", "-e", "SELECT 1"],
                         capture_output=True, check=False).returncode != 0:
        if time.monotonic() > deadline:
            sys.exit(f"MariaDB on {old} did not come back")
        time.sleep(1)
    _, rejoined = play("playbooks/rejoin.yml")
    if rejoined.returncode != 0:
        match = re.search(r"errant GTIDs: ([^)]*)\)", rejoined.stdout)
        print(f"  {old} held errant transactions ({match and match.group(1)}): rebuilding")
        _, rebuilt = play("playbooks/rejoin.yml", "-e", f"rebuild={old}")
        if rebuilt.returncode != 0:
            sys.exit(f"rebuild of {old} failed:\n{rebuilt.stdout[-3000:]}")
    return running.window(), seconds, missing


def report(kind: str, index: int, result: tuple[float, float, int]) -> None:
    window, seconds, missing = result
    print(f"{kind} {index + 1}: window {window:.2f} s, playbook {seconds:.1f} s, "
          f"acknowledged commits lost {missing}; load average {os.getloadavg()[0]:.1f}",
          flush=True)


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    first = primary()
    sql(first, "CREATE DATABASE IF NOT EXISTS bench")
    sql(first, CREATE_TABLE.format(table="bench.drill"))
    sql(first, f"CREATE OR REPLACE USER {USER}@'%' IDENTIFIED BY '{PASSWORD}'")
    sql(first, f"GRANT SELECT, INSERT ON bench.* TO {USER}@'%'")
    wait_applied(first, MEMBERS)
    results = {"switchover": [], "failover": []}
    load = {"switchover": LoadAverage()}
    for index in range(rounds):
        current = primary()
        target = next(m for m in MEMBERS if m != current)
        results["switchover"].append(switchover(target))
        report("switchover", index, results["switchover"][-1])
    load["switchover"].stop()
    load["failover"] = LoadAverage()
    for index in range(rounds):
        results["failover"].append(failover())
        report("failover", index, results["failover"][-1])
    load["failover"].stop()
    print(f"\n{'operation':<11} {'window (median)':>16} {'playbook (median)':>18} "
          f"{'acknowledged commits lost':>26}")
    for kind, rows in results.items():
        print(f"{kind:<11} {statistics.median(r[0] for r in rows):>14.2f} s "
              f"{statistics.median(r[1] for r in rows):>16.1f} s {sum(r[2] for r in rows):>26}")
        print(f"{'':<11} windows {', '.join(f'{r[0]:.2f}' for r in rows)} s; {load[kind]}")
    sql(primary(), f"DROP USER IF EXISTS {USER}@'%'")


if __name__ == "__main__":
    main()
