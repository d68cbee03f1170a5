"""playbooks/check.yml and status.yml end to end, and the heartbeat, on real local servers.

The members are local mariadbd instances with the mariadb_server role's rendered settings,
replicating over loopback; the inventory names them db1..db3 with ansible_connection=local, their
own sockets and ports. The POS schema (files/sql) is applied on the primary and replicates. The
playbook learns the live topology (mariadb_replication), installs the heartbeat and runs
pt-table-checksum, exactly as on the lab.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from module_utils.mariadb_pos.topology import parse_gtid_list
from tests.support.health_cluster import (
    ANSIBLE_PLAYBOOK,
    REPL_PASSWORD,
    REPO_ROOT,
    HealthCluster,
    ansible_env,
    point,
    render_server_config,
    run,
    wait_for,
)
from tests.support.schema import create_schema, seed

pytestmark = pytest.mark.skipif(
    not ANSIBLE_PLAYBOOK.exists() or not shutil.which("pt-table-checksum"),
    reason="needs ansible-playbook in the venv and Debian's percona-toolkit")

CHECKSUM_PASSWORD = "Checksum-Pass-0123"
DATABASE = "pos"


def write_inventory(path: Path, cluster: HealthCluster) -> Path:
    lines = []
    for index, server in enumerate(cluster.servers):
        if index in (0, 1):
            lines.append("[primary]" if index == 0 else "[replicas]")
        # mariadb_replication_address is unique per member (all listen on 127.0.0.1): the
        # topology then relates replicas to their source by server_id, as it does on the lab.
        lines.append(
            f"db{index + 1} ansible_connection=local ansible_python_interpreter={sys.executable}"
            f" mariadb_replication_socket={server.socket}"
            f" mariadb_replication_address=127.0.0.1:{server.port}"
            f" mariadb_health_socket={server.socket} mariadb_health_address=127.0.0.1"
            f" mariadb_health_port={server.port}")
    lines += ["[mariadb:children]", "primary", "replicas"]
    path.write_text("\n".join(lines) + "\n")
    return path


def play(playbook: str, inventory: Path, workdir: Path, **extra) -> tuple[int, int, str]:
    variables = workdir / "vars.json"
    variables.write_text(json.dumps({
        "ansible_become": False, "mariadb_health_checksum_password": CHECKSUM_PASSWORD,
        "mariadb_health_report_dir": str(workdir / "reports"),
        "mariadb_health_checksum_databases": [DATABASE], **extra}))
    completed = subprocess.run(
        [str(ANSIBLE_PLAYBOOK), "-i", str(inventory), str(REPO_ROOT / "playbooks" / playbook),
         "-e", f"@{variables}"],
        cwd=REPO_ROOT, env=ansible_env(), capture_output=True, text=True, timeout=900,
        check=False)
    output = completed.stdout + completed.stderr
    changed = sum(int(n) for n in re.findall(r"db\d\s*:\s*ok=\d+\s+changed=(\d+)", output))
    return completed.returncode, changed, output


class Writer(threading.Thread):
    """Order-taking load on the primary's POS tables while the check runs."""

    def __init__(self, server):
        super().__init__(daemon=True)
        self.server, self.stop_event, self.writes, self.error = server, threading.Event(), 0, None

    def run(self):
        try:
            with self.server.connect(database=DATABASE) as conn, conn.cursor() as cur:
                while not self.stop_event.is_set():
                    product = 1 + self.writes % 20
                    cur.execute("UPDATE Product SET quantity_on_hand = quantity_on_hand + 1 "
                                "WHERE product_id = %s", (product,))
                    cur.execute("UPDATE Customer SET phone = %s WHERE customer_id = %s",
                                ("555-%04d" % (self.writes % 10000), 1 + self.writes % 30))
                    self.writes += 1
        except Exception as error:  # reported by the test, never swallowed
            self.error = error

    def stop(self):
        self.stop_event.set()
        self.join(timeout=60)
        assert self.error is None, self.error


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    settings = render_server_config(tmp_path_factory.mktemp("render"))
    cluster = HealthCluster(settings).start()
    try:
        create_schema(cluster.primary, DATABASE)
        with cluster.primary.connect(database=DATABASE) as conn:
            seed(conn, customers=30, products=20)
        cluster.wait_replicas()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def inventory(cluster, tmp_path_factory):
    return write_inventory(tmp_path_factory.mktemp("inventory") / "hosts.ini", cluster)


def test_a_consistent_cluster_under_writes_passes_and_a_rerun_changes_nothing(
        cluster, inventory, tmp_path):
    writer = Writer(cluster.primary)
    writer.start()
    try:
        code, _changed, output = play("check.yml", inventory, tmp_path)
        wait_for(lambda: writer.writes > 0, what="the writer wrote")
    finally:
        writer.stop()
    assert code == 0, output[-6000:]
    for table in ("City", "Customer", "Product", "Order", "OrderLine", "PriceHistory"):
        assert re.search(rf"pos\.{table}\s+\d+\s+\d+\s+same\s+same", output), (table, output)
    verdict = json.loads((tmp_path / "reports" / "last_check.json").read_text())
    assert verdict["status"] == "consistent" and verdict["primary"] == "db1"
    assert verdict["members"] == {"db2": "same", "db3": "same"}
    assert verdict["differences"] == [] and verdict["incomplete"] == []

    code, changed, output = play("check.yml", inventory, tmp_path)
    assert code == 0 and changed == 0, output[-6000:]


def test_a_row_changed_on_one_replica_fails_naming_table_chunk_and_member(
        cluster, inventory, tmp_path):
    replica = cluster.servers[2]  # db3
    before = run(replica, f"SELECT last_name FROM {DATABASE}.Customer WHERE customer_id = 7")
    # The POS triggers log the change in ChangeLog on db3 too (locally): both differ, both undone.
    last_change = run(replica, f"SELECT COALESCE(MAX(change_id), 0) FROM {DATABASE}.ChangeLog")
    run(replica, "SET SESSION sql_log_bin = 0",
        f"UPDATE {DATABASE}.Customer SET last_name = 'Tampered' WHERE customer_id = 7")
    try:
        code, _changed, output = play("check.yml", inventory, tmp_path)
        assert code != 0
        assert re.search(r"pos\.Customer differs on db3 from the primary db1: chunk \d+", output), \
            output[-6000:]
        assert "pos.Customer differs on db2" not in output
        assert re.search(r"pos\.Customer\s+\d+\s+\d+\s+same\s+DIFF 1 chunk", output)
        assert "pt-table-sync --print --replicate pos_health.checksums --sync-to-master " \
               f"h=127.0.0.1,P={replica.port}" in output
        assert "playbooks/rejoin.yml -e rebuild=HOST" in output
        verdict = json.loads((tmp_path / "reports" / "last_check.json").read_text())
        assert verdict["status"] == "differences"
        assert verdict["members"] == {"db2": "same", "db3": "differs"}
    finally:
        run(replica, "SET SESSION sql_log_bin = 0",
            f"UPDATE {DATABASE}.Customer SET last_name = '{before[0][0]}' WHERE customer_id = 7",
            f"DELETE FROM {DATABASE}.ChangeLog WHERE change_id > {last_change[0][0]}")
    code, _changed, output = play("check.yml", inventory, tmp_path)
    assert code == 0, output[-6000:]  # repaired: consistent again


def test_a_stopped_replica_is_reported_not_compared(cluster, inventory, tmp_path):
    replica = cluster.servers[1]  # db2
    run(replica, "STOP SLAVE SQL_THREAD")
    try:
        code, _changed, output = play("check.yml", inventory, tmp_path,
                                      mariadb_health_checksum_max_lag=1)
    finally:
        run(replica, "START SLAVE SQL_THREAD")
    assert code != 0
    assert re.search(r"The check is incomplete: .*db2 did not apply the checksums in time",
                     output), output[-6000:]
    verdict = json.loads((tmp_path / "reports" / "last_check.json").read_text())
    assert verdict["status"] == "incomplete" and verdict["members"]["db2"] == "not compared"


# ---------------------------------------------------------------- status and the heartbeat

HEALTH_VARS = yaml.safe_load((REPO_ROOT / "roles/mariadb_health/vars/main.yml").read_text())
# The heartbeat event's definer, as roles/mariadb_health/files/heartbeat.sql creates it.
HEARTBEAT_DEFINER = re.search(
    r"DEFINER = ('[^']+'@'[^']+') EVENT",
    (REPO_ROOT / "roles/mariadb_health/files/heartbeat.sql").read_text()).group(1)
LAG_QUERY = HEALTH_VARS["mariadb_health_lag_query"].replace("{{ mariadb_health_database }}",
                                                            "pos_health")


def heartbeat_lag(server) -> float | None:
    value = run(server, LAG_QUERY)[0][0]
    return None if value is None else float(value)


def ensure_heartbeat(cluster):
    """check.yml installs it; a test run alone installs it from the same file."""
    if not run(cluster.primary, "SELECT COUNT(*) FROM information_schema.events "
                                "WHERE event_name = 'heartbeat_beat'")[0][0]:
        run(cluster.primary, "CREATE DATABASE IF NOT EXISTS pos_health")
        cluster.primary.client(file=REPO_ROOT / "roles/mariadb_health/files/heartbeat.sql",
                               database="pos_health")
    for server in cluster.servers:
        wait_for(lambda s=server: (heartbeat_lag(s) or 99) < 3, timeout=120,
                 what=f"a fresh heartbeat on port {server.port}")


def test_status_prints_every_member_and_writes_the_report(cluster, inventory, tmp_path):
    ensure_heartbeat(cluster)
    replica = cluster.servers[2]  # db3
    run(replica, "STOP SLAVE SQL_THREAD")
    try:
        wait_for(lambda: (heartbeat_lag(replica) or 0) > 6, timeout=60,
                 what="db3's heartbeat ages while its SQL thread is stopped")
        code, changed, output = play("status.yml", inventory, tmp_path)
    finally:
        run(replica, "START SLAVE SQL_THREAD")
    assert code == 0 and changed == 0, output[-6000:]
    rows = {m.group(1): m.group(0) for m in re.finditer(r'"(db\d) [^"]*"', output)}
    assert set(rows) == {"db1", "db2", "db3"}, output[-4000:]
    assert re.search(r"db1\s+primary\s+OFF\s+0-1-\d+", rows["db1"])
    assert re.search(r"db2\s+replica\s+ON\s+.*Yes/Yes.*OK", rows["db2"])
    assert "SQL thread not running" in rows["db3"] and "Yes/No" in rows["db3"]
    assert re.search(r"heartbeat \d+\.\d s old \(limit 5", rows["db3"])
    report = (tmp_path / "reports" / "status.md").read_text()
    for member in ("db1", "db2", "db3"):
        assert f"| {member} |" in report
    svg = (tmp_path / "reports" / "topology.svg").read_text()
    assert svg.startswith("<svg") and all(f"{m} (" in svg for m in ("db1", "db2", "db3"))
    assert 'fill="#c62828"' in svg  # db3 drawn unhealthy


def test_the_heartbeat_ages_while_a_frozen_primary_sends_nothing(cluster):
    ensure_heartbeat(cluster)
    replica = cluster.replicas[0]
    os.kill(cluster.primary.process.pid, signal.SIGSTOP)
    try:
        frozen_at = time.monotonic()
        wait_for(lambda: time.monotonic() - frozen_at > 5, what="five seconds")
        lag = heartbeat_lag(replica)
        io_running = run(replica, "SELECT variable_value FROM information_schema.global_status "
                                  "WHERE variable_name = 'Slave_running'")[0][0]
    finally:
        os.kill(cluster.primary.process.pid, signal.SIGCONT)
    # The replica may still believe its link is up; the heartbeat says it heard nothing for 5 s.
    assert io_running in ("ON", "OFF")
    assert lag is not None and lag >= 4.5, f"heartbeat lag {lag} after 5 s without a beat"
    wait_for(lambda: (heartbeat_lag(replica) or 99) < 3, timeout=120,
             what="a fresh heartbeat after the primary resumed")


def test_a_demoted_member_writes_no_beat_and_the_heartbeat_follows_a_switchover(cluster):
    ensure_heartbeat(cluster)
    db1, db2, db3 = cluster.servers
    log_size = db1.error_log.stat().st_size
    # Demote db1 as a switchover does (read_only first). Its event is still enabled, yet its
    # definer cannot write under read_only: no errant transaction.
    run(db1, "SET GLOBAL read_only = 1")
    position = run(db1, "SELECT @@gtid_binlog_pos")[0][0]
    assert run(db1, "SELECT status FROM information_schema.events "
                    "WHERE event_name = 'heartbeat_beat'") == (("ENABLED",),)
    wait_for(lambda: "--read-only option" in db1.error_log.read_text()[log_size:], timeout=60,
             what="the beat refused by read_only on db1")
    assert run(db1, "SELECT @@gtid_binlog_pos")[0][0] == position
    for replica in (db2, db3):
        assert run(replica, "SELECT MASTER_GTID_WAIT(%s, 120)", args=(position,))[0][0] == 0
    # Promote db2 as the mariadb_replication role does (roles/mariadb_replication/tasks/events.yml):
    # replicated events enabled on the new primary, disabled (locally) on the members that now
    # replicate, each keeping its definer (a bare ALTER EVENT would make root, who ignores
    # read_only, the definer).
    run(db2, "STOP SLAVE", "RESET SLAVE ALL", "SET GLOBAL read_only = 0",
        f"ALTER DEFINER = {HEARTBEAT_DEFINER} EVENT pos_health.heartbeat_beat ENABLE")
    run(db2, "CREATE USER IF NOT EXISTS repl@'127.0.0.1' IDENTIFIED BY %s", args=(REPL_PASSWORD,))
    run(db2, "GRANT REPLICATION SLAVE ON *.* TO repl@'127.0.0.1'")
    for member in (db1, db3):
        point(member, db2, cluster.heartbeat)
    run(db1, "SET SESSION sql_log_bin = 0",
        f"ALTER DEFINER = {HEARTBEAT_DEFINER} EVENT pos_health.heartbeat_beat DISABLE ON SLAVE")
    definer = HEARTBEAT_DEFINER.replace("'", "")
    for server in cluster.servers:
        assert run(server, "SELECT definer FROM information_schema.events "
                           "WHERE event_name = 'heartbeat_beat'") == ((definer,),)
    for server in cluster.servers:
        wait_for(lambda s=server: run(
            s, "SELECT COUNT(*) FROM pos_health.heartbeat WHERE server_id = 2 "
               "AND beat_at > UTC_TIMESTAMP(6) - INTERVAL 3 SECOND")[0][0] == 1,
            timeout=120, what=f"db2's beats on port {server.port}")
        assert (heartbeat_lag(server) or 99) < 3
    # db1 wrote nothing after the promotion point: its own GTIDs end where they did.
    assert parse_gtid_list(run(db1, "SELECT @@gtid_binlog_state")[0][0])[(0, 1)] == \
        parse_gtid_list(position)[(0, 1)]
