"""playbooks/check.yml end to end against a real local primary and two replicas.

The members are local mariadbd instances with the mariadb_server role's rendered settings,
replicating over loopback; the inventory names them db1..db3 with ansible_connection=local, their
own sockets and ports. The POS schema (files/sql) is applied on the primary and replicates. The
playbook learns the live topology (mariadb_replication), installs the heartbeat and runs
pt-table-checksum, exactly as on the lab.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.support.health_cluster import (
    ANSIBLE_PLAYBOOK,
    REPO_ROOT,
    HealthCluster,
    ansible_env,
    render_server_config,
    run,
    wait_for,
)
from tests.test_etl_support import load_schema
from tests.test_schema_helpers import seed

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
        load_schema(cluster.primary, DATABASE)
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
            f"UPDATE {DATABASE}.Customer SET last_name = '{before[0][0]}' WHERE customer_id = 7")
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
