"""Benchmark: seeding a replica with the logical dump vs the streamed mariadb-backup, backup time
and size, and the point-in-time replay rate, on the running lab at 1,000,000 order lines.

Not a test: run with `make bench-backup` (or `.venv/bin/python bench/bench_backup.py`) on a lab
built by `scripts/lab.sh up` plus its backup host (`make lab-aux`: inventory/lab-aux puts lab-aux
into the `backup` group and generates the archive password; BENCH_BACKUP_INVENTORY names another
inventory, BENCH_BACKUP_SECRETS an extra vars file).

1. 1,000,000 order lines (and 200,000 orders) are written on the primary into `bench_backup`.
2. Logical seeding, the steps of roles/mariadb_replication/tasks/seed.yml run directly (so this
   side measures the dump whatever the role's seeding default): mariadb-dump --single-transaction
   --gtid --master-data=2 on the primary, the file copied through the control node (docker cp, no
   slower than the role's fetch/copy), loaded into the replica.
3. Streamed seeding: playbooks/rebuild_replica.yml (mariadb-backup host to host).
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
import tempfile
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


def task_seconds(report: dict, *names: str) -> float:
    """Summed durations of the named tasks (the JSON callback records each task's start/end)."""
    total = 0.0
    for play in report["plays"]:
        for task in play["tasks"]:
            if task["task"]["name"] in names:
                duration = task["task"]["duration"]
                total += (datetime.datetime.fromisoformat(duration["end"].replace("Z", "+00:00"))
                          - datetime.datetime.fromisoformat(
                              duration["start"].replace("Z", "+00:00"))).total_seconds()
    return total


def wait_for_replicas() -> None:
    wait_applied(PRIMARY, [m for m in MEMBERS if m != PRIMARY])


def load_data() -> int:
    orders = load_order_lines(PRIMARY, "bench_backup", LINES)
    wait_for_replicas()
    return orders


def logical_seed() -> float:
    """The dump path of seed.yml: dump on the primary, through the control node, load."""
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as workdir:
        subprocess.run(["docker", "exec", PRIMARY, "sh", "-c",
                        "mariadb-dump --all-databases --single-transaction --master-data=2 --gtid "
                        "--routines --events --triggers > /root/bench-seed.sql"], check=True)
        subprocess.run(["docker", "cp", f"{PRIMARY}:/root/bench-seed.sql", workdir], check=True)
        subprocess.run(["docker", "cp", f"{workdir}/bench-seed.sql", f"{REPLICA}:/root/"],
                       check=True)
        sql(REPLICA, "STOP SLAVE")
        subprocess.run(["docker", "exec", REPLICA, "sh", "-c",
                        "mariadb < /root/bench-seed.sql"], check=True)
    elapsed = time.monotonic() - started
    for host in (PRIMARY, REPLICA):
        subprocess.run(["docker", "exec", host, "rm", "-f", "/root/bench-seed.sql"], check=True)
    return elapsed


def main() -> None:
    load = LoadAverage()
    orders = load_data()
    size_mib = float(sql(PRIMARY, "SELECT SUM(data_length + index_length) / 1048576 FROM "
                                  "information_schema.tables WHERE table_schema = 'bench_backup'"))
    print(f"data: {LINES:,} order lines, {orders:,} orders, {size_mib:.0f} MiB in InnoDB",
          flush=True)
    dump_seconds = logical_seed()
    print(f"seed a replica, logical dump via the control node: {dump_seconds:7.1f} s", flush=True)
    stream_seconds, _ = playbook("rebuild_replica.yml", "-e", f"target={REPLICA}")
    print(f"seed a replica, streamed mariadb-backup (playbook): {stream_seconds:7.1f} s",
          flush=True)
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
    print(f"ratio dump / stream: {dump_seconds / stream_seconds:5.2f} (target >= 3)")
    print(f"backup.yml: {backup_seconds:7.1f} s, stream {manifest['size'] / 2**20:.1f} MiB "
          f"(zstd), {manifest['start']} .. {manifest['end']}")
    print(f"PITR replay: {TRANSACTIONS:,} transactions in {replay_seconds:.1f} s = "
          f"{TRANSACTIONS / replay_seconds:,.0f} transactions/s")
    print(load)


if __name__ == "__main__":
    main()
