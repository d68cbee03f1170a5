"""Benchmark: seeding a replica with the logical dump vs the streamed mariadb-backup, backup time
and size, and the point-in-time replay rate, on the running lab at 1,000,000 order lines.

Not a test: run with `make bench-backup` (or `.venv/bin/python bench/bench_backup.py`) on a lab
built by `scripts/lab.sh up` plus its backup host (`make lab-aux`: inventory/lab-aux puts lab-aux
into the `backup` group and generates the archive password; BENCH_BACKUP_INVENTORY names another
inventory, BENCH_BACKUP_SECRETS an extra vars file).

1. 1,000,000 order lines (and 200,000 orders) are written on the primary into `bench_backup`.
2. Logical seeding, the product's own path: `playbooks/rejoin.yml -e rebuild=REPLICA -e
   mariadb_replication_seed_method=dump` (mariadb-dump --single-transaction --gtid on the primary,
   fetched to the control node, copied to the replica, loaded).
3. Streamed seeding, the same role path with the backup stream: `playbooks/rebuild_replica.yml -e
   target=REPLICA` (mariadb-backup | zstd | socat host to host, prepare, datadir swap).
   Both are reported twice: the whole playbook (facts, live topology, TLS, events, CHANGE MASTER,
   waits: the same fixed costs on both sides) and the seeding steps alone (from the JSON callback's
   task times: the dump taken .. the GTID position set; the stream received .. the GTID position
   set).
4. playbooks/backup.yml: time, stream size, datadir size.
5. 20,000 single-row transactions, then playbooks/restore.yml replays them from the archive onto
   the replica: replay rate in transactions/s from the replay tasks' own durations.
The replica is rebuilt again at the end, so the lab is left replicating.
"""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.lab import AUX, MEMBERS, LoadAverage, load_order_lines, roles, wait_applied  # noqa: E402

BACKUP = AUX
# The live primary (a failover benchmark may have moved it) and the replica that gets seeded.
PRIMARY, (*_, REPLICA) = roles()
INVENTORY = ["-i", "inventory/lab", "-i",
             os.environ.get("BENCH_BACKUP_INVENTORY", "inventory/lab-aux")]
SECRETS = ["-e", f"@{os.environ['BENCH_BACKUP_SECRETS']}"] if os.environ.get(
    "BENCH_BACKUP_SECRETS") else []
# BENCH_BACKUP_LINES scales the data down on a busy machine (orders are a fifth of the lines).
LINES = int(os.environ.get("BENCH_BACKUP_LINES", "1000000"))
TRANSACTIONS = int(os.environ.get("BENCH_BACKUP_TRANSACTIONS", "20000"))
# BENCH_BACKUP_SEED_ONLY=1: stop after the two seedings (e.g. to see how they scale with LINES).
SEED_ONLY = os.environ.get("BENCH_BACKUP_SEED_ONLY") == "1"


def sql(host: str, query: str, database: str | None = None) -> str:
    command = ["docker", "exec", host, "mariadb", "-N", "-B", *([database] if database else []),
               "-e", query]
    return subprocess.run(command, check=True, capture_output=True, text=True).stdout.strip()


def playbook(name: str, *args: str) -> tuple[float, dict]:
    """Run a playbook with the JSON callback; elapsed seconds and the parsed report."""
    env = {**os.environ, "ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json", "ANSIBLE_NOCOLOR": "1"}
    started = time.monotonic()
    done = subprocess.run([str(ROOT / ".venv/bin/ansible-playbook"), *INVENTORY,
                           f"playbooks/{name}", *SECRETS, *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    elapsed = time.monotonic() - started
    if done.returncode != 0:
        sys.exit(f"{name} failed:\n{done.stdout[-4000:]}\n{done.stderr[-2000:]}")
    return elapsed, json.loads(done.stdout[done.stdout.index("{"):])


def report_tasks(report: dict) -> list[dict]:
    """Every task of the JSON callback's report, in order (each with its start/end)."""
    return [task["task"] for play in report["plays"] for task in play["tasks"]]


def named(task: dict, name: str) -> bool:
    """Role tasks are reported as "role : name"."""
    return task["name"] == name or task["name"].endswith(" : " + name)


def at(stamp: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def task_seconds(report: dict, *names: str) -> float:
    """Summed durations of the named tasks."""
    return sum((at(task["duration"]["end"]) - at(task["duration"]["start"])).total_seconds()
               for task in report_tasks(report) if any(named(task, name) for name in names))


def wait_for_replicas() -> None:
    wait_applied(PRIMARY, [m for m in MEMBERS if m != PRIMARY])


def load_data() -> int:
    orders = load_order_lines(PRIMARY, "bench_backup", LINES)
    wait_for_replicas()
    return orders


def task_span(report: dict, first: str, last: str) -> float:
    """Seconds from the start of the first task named `first` to the end of the last `last`."""
    tasks = report_tasks(report)
    began = next(at(task["duration"]["start"]) for task in tasks if named(task, first))
    ended = [at(task["duration"]["end"]) for task in tasks if named(task, last)]
    return (ended[-1] - began).total_seconds()


def seed(method: str) -> tuple[float, float]:
    """Seed REPLICA through the role with `method`: whole playbook and seeding steps, seconds."""
    if method == "dump":
        elapsed, report = playbook("rejoin.yml", "-e", f"rebuild={REPLICA}",
                                   "-e", "mariadb_replication_seed_method=dump")
        steps = task_span(report, "Dump the primary with its GTID position",
                          "Start from the dump's GTID position")
    else:
        elapsed, report = playbook("rebuild_replica.yml", "-e", f"target={REPLICA}")
        steps = task_span(report,
                          "Listen for the stream on the target, unpack and prepare it in the "
                          "staging directory",
                          "Reset replication and the binary log to the backup's GTID position")
    wait_for_replicas()
    return elapsed, steps


def main() -> None:
    load = LoadAverage()
    orders = load_data()
    # information_schema's sizes come from InnoDB's statistics, not yet counted for new tables.
    sql(PRIMARY, "ANALYZE TABLE bench_backup.Orders, bench_backup.OrderLine")
    size_mib = float(sql(PRIMARY, "SELECT SUM(data_length + index_length) / 1048576 FROM "
                                  "information_schema.tables WHERE table_schema = 'bench_backup'"))
    print(f"data: {LINES:,} order lines, {orders:,} orders, {size_mib:.0f} MiB in InnoDB",
          flush=True)
    dump_seconds, dump_steps = seed("dump")
    print(f"seed a replica, logical dump (rejoin.yml, seed_method=dump): {dump_seconds:7.1f} s, "
          f"of which seeding steps {dump_steps:7.1f} s", flush=True)
    stream_seconds, stream_steps = seed("backup")
    print(f"seed a replica, mariadb-backup stream (rebuild_replica.yml): {stream_seconds:7.1f} s, "
          f"of which seeding steps {stream_steps:7.1f} s", flush=True)
    if SEED_ONLY:
        sql(PRIMARY, "DROP DATABASE bench_backup")
        print(f"ratio dump / stream: whole playbook {dump_seconds / stream_seconds:5.2f}, "
              f"seeding steps {dump_steps / stream_steps:5.2f}\n{load.stop()}")
        return
    backup_seconds, _ = playbook("backup.yml")
    manifest = json.loads(subprocess.run(
        ["docker", "exec", BACKUP, "sh", "-c",
         "cat $(ls -d /var/backups/mariadb/backups/*/ | sort | tail -1)manifest.json"],
        check=True, capture_output=True, text=True).stdout)
    playbook("backup_archive.yml")
    sql(PRIMARY, "CREATE TABLE Tick (id INT PRIMARY KEY, at DATETIME) ENGINE=InnoDB",
        "bench_backup")
    statements = "".join(f"INSERT INTO Tick VALUES ({i}, NOW());\n" for i in range(TRANSACTIONS))
    subprocess.run(["docker", "exec", "-i", PRIMARY, "mariadb", "bench_backup"],
                   input=statements, text=True, check=True)  # autocommit: one GTID per row
    wait_for_replicas()
    _, restore_report = playbook("restore.yml", "-e", f"target={REPLICA}")
    replay_seconds = task_seconds(restore_report, "Send the archived events from the backup host",
                                  "Wait for the target to apply the events")
    playbook("rebuild_replica.yml", "-e", f"target={REPLICA}")
    sql(PRIMARY, "DROP DATABASE bench_backup")

    load.stop()
    print(f"ratio dump / stream: whole playbook {dump_seconds / stream_seconds:5.2f}, "
          f"seeding steps {dump_steps / stream_steps:5.2f} (target >= 3)")
    print(f"backup.yml: {backup_seconds:7.1f} s, stream {manifest['size'] / 2**20:.1f} MiB "
          f"(zstd), {manifest['start']} .. {manifest['end']}")
    print(f"PITR replay: {TRANSACTIONS:,} transactions in {replay_seconds:.1f} s = "
          f"{TRANSACTIONS / replay_seconds:,.0f} transactions/s")
    print(load)


if __name__ == "__main__":
    main()
