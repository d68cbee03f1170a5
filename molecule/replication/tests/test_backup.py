"""Backup, binlog archive, point-in-time restore and replica rebuild drills on a running cluster.

Runs in the replication-debian13 scenario's verify step (hosts from MOLECULE_INVENTORY_FILE; in
another scenario with LAB_DRILLS=1, see drills.py) or against the lab:
``BACKUP_DRILL_INVENTORY=inventory/lab,.lab/backup-host.yml pytest
molecule/replication/tests/test_backup.py`` (the second file puts a host in the ``backup`` group).
Without a ``backup`` group the last late replica (or the last replica) serves as the backup host.

The drills use their own database (backup_drill) so the POS data stays as the other tests expect,
and they end with every replica replicating again (the restored replica is rebuilt).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import threading
import time
from pathlib import Path

import pytest
import testinfra
from drills import backup_drills
from grown_cluster import grown_cluster_inventory
from testinfra.utils.ansible_runner import AnsibleRunner

pytestmark = backup_drills

PROJECT = Path(__file__).resolve().parents[3]
if os.environ.get("MOLECULE_INVENTORY_FILE"):
    INVENTORIES = [str(Path(os.environ["MOLECULE_INVENTORY_FILE"]).parent)]
else:
    INVENTORIES = [str(PROJECT / p) for p in
                   os.environ.get("BACKUP_DRILL_INVENTORY", "inventory/lab").split(",")]
RUNNER = AnsibleRunner(INVENTORIES[0])
PRIMARY = RUNNER.get_hosts("primary")[0]
REPLICAS = sorted(RUNNER.get_hosts("replicas"))
LATE = sorted(RUNNER.get_hosts("late_replicas"))


def _backup_hosts():
    for inventory in INVENTORIES:
        found = AnsibleRunner(inventory).get_hosts("backup")
        if found:
            return found
    return []


BACKUP_GROUP = _backup_hosts()
BACKUP = BACKUP_GROUP[0] if BACKUP_GROUP else (LATE or REPLICAS)[-1]
# The replica restored to a point in time (taken out of the cluster) and rebuilt at the end.
TARGET = REPLICAS[-1] if REPLICAS[-1] != BACKUP else REPLICAS[0]
STORE = "/var/backups/mariadb"
DB = "backup_drill"


def host(name):
    return testinfra.get_host(f"docker://{name}")


def sql(name, query, database=None):
    command = ["mariadb", "-N", "-B"] + ([database] if database else [])
    out = host(name).check_output(" ".join(["%s"] * (len(command) + 2)), *command, "-e", query)
    return [line.split("\t") for line in out.splitlines()]


def value(name, query):
    return sql(name, query)[0][0]


def checksums(name):
    rows = sql(name, f"SELECT table_name FROM information_schema.tables "
                     f"WHERE table_schema = '{DB}' ORDER BY 1")
    if not rows:
        return {}
    return dict(sql(name, "CHECKSUM TABLE " + ", ".join(f"{DB}.`{r[0]}`" for r in rows)))


def wait_for_replicas(also=(), timeout=120):
    """Every replicating member (the restored TARGET is standalone until rebuilt) caught up."""
    position = value(PRIMARY, "SELECT @@GLOBAL.gtid_binlog_pos")
    for replica in [r for r in REPLICAS + LATE if r != TARGET] + list(also):
        waited = value(replica, f"SELECT MASTER_GTID_WAIT('{position}', {timeout})")
        assert waited == "0", f"{replica} did not reach GTID {position} within {timeout}s"
    return position


@pytest.fixture(scope="module")
def drill(tmp_path_factory):
    """Extra inventory and the archive secret. The inventory holds the grown cluster (the late
    replicas are members: rebuild_replica.yml runs the replication role, which removes the
    replication account of a host the inventory does not list) and the backup group when the
    scenario's inventory has none."""
    workdir = tmp_path_factory.mktemp("backup-drill")
    extra = workdir / "backup.yml"
    extra.write_text(grown_cluster_inventory(LATE, {"backup": [] if BACKUP_GROUP else [BACKUP]}))
    secret = workdir / "secrets.yml"
    secret.write_text(json.dumps({"mariadb_backup_archive_password": secrets.token_hex(16)}))
    secret.chmod(0o600)
    sql(PRIMARY, f"DROP DATABASE IF EXISTS {DB}")
    sql(PRIMARY, f"CREATE DATABASE {DB}")
    sql(PRIMARY, "CREATE TABLE Orders (id INT PRIMARY KEY, customer INT NOT NULL) ENGINE=InnoDB",
        DB)
    sql(PRIMARY, "CREATE TABLE OrderLine (id INT AUTO_INCREMENT PRIMARY KEY, order_id INT NOT "
                 "NULL, qty INT NOT NULL, FOREIGN KEY (order_id) REFERENCES Orders (id)) "
                 "ENGINE=InnoDB", DB)
    write_orders(1, 300)
    wait_for_replicas()
    yield {"extra": extra, "secret": secret}
    # Leave the cluster as found: drill database gone, every replica replicating.
    sql(PRIMARY, f"DROP DATABASE IF EXISTS {DB}")
    host(TARGET).run("rm -rf /var/lib/mysql.before-restore-*")


def write_orders(first, count):
    sql(PRIMARY, f"INSERT INTO Orders SELECT seq, seq % 7 FROM seq_{first}_to_{first + count - 1}",
        DB)
    sql(PRIMARY, "INSERT INTO OrderLine (order_id, qty) SELECT seq, 1 FROM "
                 f"seq_{first}_to_{first + count - 1}", DB)


def playbook(drill, name, *extra_args, timeout=1200):
    env = {**os.environ, "ANSIBLE_CONFIG": str(PROJECT / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1",
           "ANSIBLE_ROLES_PATH": str(PROJECT / "roles"),
           "ANSIBLE_LIBRARY": str(PROJECT / "library"),
           "ANSIBLE_MODULE_UTILS": str(PROJECT / "module_utils")}
    command = ["ansible-playbook"]
    for inventory in [*INVENTORIES, str(drill["extra"])]:
        command += ["-i", inventory]
    command += [f"playbooks/{name}", "-e", f"@{drill['secret']}", *extra_args]
    proc = subprocess.run(command, cwd=PROJECT, env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)
    proc.flat = " ".join(proc.stdout.split())
    return proc


def recap_changed(output):
    return sum(int(n) for n in re.findall(r"changed=(\d+)", output))


def manifests():
    out = host(BACKUP).check_output(
        "python3 -c %s", "import glob, json; print(json.dumps([json.load(open(p)) for p in "
        f"glob.glob('{STORE}/backups/*/manifest.json')]))")
    return sorted(json.loads(out), key=lambda m: m["id"])


def newest_good():
    good = [m for m in manifests() if m["status"] == "good"]
    assert good, "the store holds no good backup"
    return good[-1]


def wait_for_archive(gtid, timeout=120):
    """Until the newest archived transaction is ``gtid`` (the archive service runs on BACKUP)."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        last = host(BACKUP).run(
            f"sh -c 'for f in $(ls -d {STORE}/binlogs/*/*.[0-9]* | sort); do mariadb-binlog "
            "--no-defaults $f 2>/dev/null; done | grep -o \"GTID [0-9-]*\" | tail -1'"
        ).stdout.strip()
        if last == f"GTID {gtid}":
            return
        time.sleep(1)
    raise AssertionError(f"the binlog archive on {BACKUP} reached {last or 'nothing'}, "
                         f"not {gtid}, within {timeout} s")


def test_archive_service_follows_the_primary_and_is_idempotent(drill):
    first = playbook(drill, "backup_archive.yml")
    assert first.returncode == 0, first.stdout[-3000:]
    assert host(BACKUP).service("mariadb-binlog-archive").is_running
    again = playbook(drill, "backup_archive.yml")
    assert again.returncode == 0 and recap_changed(again.stdout) == 0, again.stdout[-3000:]
    write_orders(1000, 10)
    wait_for_archive(value(PRIMARY, "SELECT @@GLOBAL.gtid_binlog_pos"))


def test_backup_under_a_continuous_writer_is_consistent_and_prepares(drill):
    """Each writer transaction adds one order and two lines, then prints the binlog position
    (@@last_gtid lags one transaction behind in this use on 10.11: the binlog position does not)."""
    script = "".join(f"BEGIN; INSERT INTO Orders VALUES ({n}, 1); INSERT INTO OrderLine "
                     f"(order_id, qty) VALUES ({n}, 1), ({n}, 2); COMMIT; "
                     f"SELECT {n}, @@GLOBAL.gtid_binlog_pos; DO SLEEP(0.02);\n"
                     for n in range(100000, 106000))
    writer = subprocess.Popen(["docker", "exec", "-i", PRIMARY, "mariadb", "-N", "-B", DB],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    def feed():
        try:
            writer.stdin.write(script)
            writer.stdin.close()
        except BrokenPipeError:  # the writer is stopped once the backup is done
            pass

    before = value(PRIMARY, "SELECT @@GLOBAL.gtid_binlog_pos")
    feeder = threading.Thread(target=feed)
    feeder.start()
    try:
        # The backup starts once the writer is committing.
        deadline = time.monotonic() + 120
        while value(PRIMARY, "SELECT @@GLOBAL.gtid_binlog_pos") == before:
            assert time.monotonic() < deadline, "the writer committed nothing within 120 s"
            time.sleep(0.2)
        backed_up = playbook(drill, "backup.yml")
    finally:
        writer.kill()
        committed = writer.communicate()[0]
        feeder.join()
    assert backed_up.returncode == 0, backed_up.stdout[-3000:]
    assert "NEW BACKUP" in backed_up.stdout
    manifest = newest_good()
    seq_at_backup = int(manifest["gtid"].split("-")[-1])
    # The writer is killed mid-output: the text after the last newline is a cut line (a cut GTID
    # would read as a smaller one) and is left out; its commit came long after the backup.
    complete_lines = committed.split("\n")[:-1]
    orders_at_backup = [int(n) for n, gtid in (line.split("\t") for line in complete_lines)
                        if int(gtid.split("-")[-1]) <= seq_at_backup]
    assert manifest["status"] == "good" and manifest["source"] != PRIMARY
    assert manifest["sha256"] and manifest["size"] > 0

    restored = playbook(drill, "restore.yml", "-e", f"target={TARGET}",
                        "-e", f"until={manifest['gtid']}")
    assert restored.returncode == 0, restored.stdout[-3000:]
    assert f"RESTORED {TARGET}" in restored.flat and manifest["id"] in restored.flat
    assert value(TARGET, "SELECT @@GLOBAL.gtid_binlog_pos") == manifest["gtid"]
    # Consistent: every line has its order, every order of the writer has both lines, and the
    # writer's orders are exactly those committed up to the manifest's GTID.
    assert value(TARGET, f"SELECT COUNT(*) FROM {DB}.OrderLine l LEFT JOIN {DB}.Orders o "
                         "ON o.id = l.order_id WHERE o.id IS NULL") == "0"
    incomplete = (f"SELECT COUNT(*) FROM (SELECT order_id FROM {DB}.OrderLine "
                  "WHERE order_id >= 100000 GROUP BY order_id HAVING COUNT(*) <> 2) x")
    assert value(TARGET, incomplete) == "0"
    assert int(value(TARGET, f"SELECT COUNT(*) FROM {DB}.Orders WHERE id >= 100000")) == len(
        orders_at_backup)


def test_point_in_time_restore_brings_back_a_dropped_table(drill):
    assert playbook(drill, "backup.yml").returncode == 0
    write_orders(2000, 100)
    sql(PRIMARY, "FLUSH BINARY LOGS")  # the roll-forward crosses archived files
    write_orders(3000, 50)
    checkpoint, expected = value(PRIMARY, "SELECT @@GLOBAL.gtid_binlog_pos"), checksums(PRIMARY)
    write_orders(4000, 20)
    sql(PRIMARY, "DROP TABLE OrderLine", DB)  # the mistake
    wait_for_archive(value(PRIMARY, "SELECT @@GLOBAL.gtid_binlog_pos"))

    restored = playbook(drill, "restore.yml", "-e", f"target={TARGET}", "-e", f"until={checkpoint}")
    assert restored.returncode == 0, restored.stdout[-3000:]
    assert checksums(TARGET) == expected
    assert value(TARGET, "SELECT @@GLOBAL.gtid_binlog_pos") == checkpoint
    assert f"-> restored {checkpoint}" in restored.flat
    assert int(value(TARGET, f"SELECT COUNT(*) FROM {DB}.OrderLine")) > 0
    # Put the table back on the cluster (from the restored copy) for the drills that follow.
    sql(PRIMARY, "CREATE TABLE OrderLine (id INT AUTO_INCREMENT PRIMARY KEY, order_id INT NOT "
                 "NULL, qty INT NOT NULL, FOREIGN KEY (order_id) REFERENCES Orders (id)) "
                 "ENGINE=InnoDB", DB)


def test_restore_refuses_the_running_primary_without_confirmation(drill):
    before = value(PRIMARY, "SELECT @@GLOBAL.gtid_binlog_pos")
    refused = playbook(drill, "restore.yml", "-e", f"target={PRIMARY}")
    assert refused.returncode != 0
    assert f"{PRIMARY} is the running primary" in refused.flat, refused.stdout[-3000:]
    assert f"mariadb_backup_confirm_overwrite={PRIMARY}" in refused.flat
    assert value(PRIMARY, "SELECT @@GLOBAL.read_only") == "0"
    assert value(PRIMARY, "SELECT @@GLOBAL.gtid_binlog_pos") == before


@pytest.mark.parametrize("until, message", [
    ("0-1-1", "is before the oldest usable backup"),
    ("0-1-999999999", "is after the newest archived transaction"),
    ("2001-01-01 00:00:00", "is before the end of the oldest usable backup"),
    ("yesterday", "is neither a GTID position"),
])
def test_a_point_in_time_out_of_range_is_refused_before_the_target_is_touched(
        drill, until, message):
    marker = value(TARGET, "SELECT @@GLOBAL.gtid_binlog_pos")
    # JSON: a time holds a space, which key=value extra vars would split.
    refused = playbook(drill, "restore.yml", "-e", json.dumps({"target": TARGET, "until": until}))
    assert refused.returncode != 0
    assert message in refused.flat, refused.stdout[-3000:]
    assert value(TARGET, "SELECT @@GLOBAL.gtid_binlog_pos") == marker


def test_a_corrupted_backup_is_reported_and_not_restored(drill):
    manifest = newest_good()
    stream = f"{STORE}/backups/{manifest['id']}/backup.mbstream.zst"
    flip = ("python3 -c \"import sys; f=open(sys.argv[1],'r+b'); f.seek(int(sys.argv[2])); "
            "b=f.read(1); f.seek(int(sys.argv[2])); f.write(bytes([b[0]^255]))\" %s %s")
    host(BACKUP).check_output(flip, stream, str(manifest["size"] // 2))
    marker = value(TARGET, "SELECT @@GLOBAL.gtid_binlog_pos")
    try:
        refused = playbook(drill, "restore.yml", "-e", f"target={TARGET}")
        assert refused.returncode != 0
        assert f"backup {manifest['id']} is corrupted: sha256 of {stream}" in refused.flat
        assert value(TARGET, "SELECT @@GLOBAL.gtid_binlog_pos") == marker
    finally:
        host(BACKUP).check_output(flip, stream, str(manifest["size"] // 2))


def test_an_unwritable_or_full_store_fails_naming_the_store(drill):
    unwritable = playbook(drill, "backup.yml", "-e", "mariadb_backup_store_dir=/proc/backups")
    assert unwritable.returncode != 0
    assert "the backup store /proc/backups/backups is not writable" in unwritable.flat
    host(BACKUP).check_output("mkdir -p /mnt/tiny-store && mount -t tmpfs -o size=1m tmpfs "
                              "/mnt/tiny-store")
    try:
        full = playbook(drill, "backup.yml", "-e", "mariadb_backup_store_dir=/mnt/tiny-store")
        assert full.returncode != 0
        assert "the backup store /mnt/tiny-store/backups has" in full.flat, full.stdout[-3000:]
        assert "MiB free; this backup needs about" in full.flat
    finally:
        host(BACKUP).run("umount /mnt/tiny-store")


def test_a_backup_without_a_healthy_replica_is_refused_and_takes_nothing(drill):
    # The replicating members (TARGET is standalone after the point-in-time restore).
    stopped = [r for r in REPLICAS + LATE if sql(r, "SHOW SLAVE STATUS")]
    before = manifests()
    for replica in stopped:
        sql(replica, "STOP SLAVE SQL_THREAD")
    try:
        refused = playbook(drill, "backup.yml")
        assert refused.returncode != 0
        assert "No healthy replica to back up" in refused.flat, refused.stdout[-3000:]
        assert "mariadb_backup_allow_primary=true" in refused.flat
        assert manifests() == before
    finally:
        for replica in stopped:
            sql(replica, "START SLAVE SQL_THREAD")
    wait_for_replicas()


def test_retention_removes_only_expired_backups(drill):
    write_orders(5000, 5)
    wait_for_replicas()
    assert playbook(drill, "backup.yml").returncode == 0
    before = [m["id"] for m in manifests() if m["status"] == "good"]
    assert len(before) >= 2
    kept = playbook(drill, "backup.yml", "-e", "mariadb_backup_keep_count=2")
    assert kept.returncode == 0, kept.stdout[-3000:]
    assert recap_changed(kept.stdout) > 0
    after = [m["id"] for m in manifests()]
    assert after == before[-2:]
    # Nothing new to back up and nothing expired: the scheduled run changes nothing.
    again = playbook(drill, "backup.yml", "-e", "mariadb_backup_keep_count=2")
    assert again.returncode == 0 and recap_changed(again.stdout) == 0, again.stdout[-3000:]


@pytest.mark.parametrize("extra, message", [
    ([], "Name the replica to rebuild with -e target=HOST. Nothing was changed."),
    (["-e", f"target={PRIMARY}"], "only a member other than the live primary"),
])
def test_rebuild_refuses_without_a_target_or_onto_the_primary(drill, extra, message):
    before = value(PRIMARY, "SELECT @@GLOBAL.gtid_binlog_pos")
    refused = playbook(drill, "rebuild_replica.yml", *extra)
    assert refused.returncode != 0
    assert message in refused.flat, refused.stdout[-3000:]
    assert "SEEDING" not in refused.flat
    assert value(PRIMARY, "SELECT @@GLOBAL.read_only") == "0"
    assert value(PRIMARY, "SELECT @@GLOBAL.gtid_binlog_pos") == before


def test_a_seed_whose_source_fails_names_the_cause_and_leaves_the_target_untouched(drill):
    """mariadb-backup fails on the source (a wrapper earlier in PATH on every possible source):
    the seed stops before the swap, names the source's error, and the target keeps its data."""
    sources = [m for m in [PRIMARY, *REPLICAS, *LATE] if m != TARGET]
    wrapper = ("printf '%s\\n' '#!/bin/sh' 'case \" $* \" in *\" --backup \"*) "
               "echo \"injected failure (drill)\" >&2; exit 1;; esac' "
               "'exec /usr/bin/mariadb-backup \"$@\"' >/usr/local/bin/mariadb-backup "
               "&& chmod 0755 /usr/local/bin/mariadb-backup")
    before = checksums(TARGET)
    try:
        for member in sources:
            host(member).check_output(wrapper)
        failed = playbook(drill, "rebuild_replica.yml", "-e", f"target={TARGET}")
    finally:
        for member in sources:
            host(member).run("rm -f /usr/local/bin/mariadb-backup")
    assert failed.returncode != 0
    assert (f"Seeding {TARGET} by a mariadb-backup stream from" in failed.flat
            and "failed at 'Fail when the backup did not arrive whole or did not prepare'"
            in failed.flat), failed.stdout[-3000:]
    assert re.search(r"Sender: mariadb-backup --backup on [\w.-]+ failed: injected failure "
                     r"\(drill\)", failed.flat), failed.stdout[-3000:]
    assert "State: its data was not touched" in failed.flat
    assert not host(TARGET).file("/etc/mysql/mariadb.conf.d/99-mariadb-backup-restore.cnf").exists
    assert checksums(TARGET) == before


def test_rebuilt_replica_replicates_with_the_primarys_checksums(drill):
    # Wiped, the way a rebuild that failed while swapping the datadir leaves it: server stopped,
    # datadir empty, restore marker present. The failure message's advice must work from here.
    host(TARGET).check_output(
        "systemctl stop mariadb && rm -rf /var/lib/mysql/* && printf '[mariadbd]\\nskip_slave_start"
        " = ON\\n' >/etc/mysql/mariadb.conf.d/99-mariadb-backup-restore.cnf")
    rebuilt = playbook(drill, "rebuild_replica.yml", "-e", f"target={TARGET}")
    assert rebuilt.returncode == 0, rebuilt.stdout[-3000:]
    assert f"SEEDED {TARGET} from" in rebuilt.flat and "by mariadb-backup stream" in rebuilt.flat
    write_orders(6000, 10)  # written after the rebuild: must arrive by replication
    wait_for_replicas(also=[TARGET])
    status = host(TARGET).check_output("mariadb -e 'SHOW SLAVE STATUS\\G'")
    assert "Slave_IO_Running: Yes" in status and "Slave_SQL_Running: Yes" in status
    assert "Using_Gtid: Slave_Pos" in status
    assert value(TARGET, "SELECT @@GLOBAL.read_only") == "1"
    assert checksums(TARGET) == checksums(PRIMARY)
    assert not host(TARGET).file("/etc/mysql/mariadb.conf.d/99-mariadb-backup-restore.cnf").exists
