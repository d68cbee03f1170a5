"""The replication cluster after converge, idempotence and a late-joining replica (side_effect).

Talks to the containers directly (testinfra's docker backend): SQL runs as root over each host's
unix socket, ordinary accounts over TCP.
"""

import os
import secrets
import subprocess
import time
from pathlib import Path

import pytest
import testinfra
from grown_cluster import grown_cluster_inventory
from testinfra.utils.ansible_runner import AnsibleRunner

RUNNER = AnsibleRunner(os.environ["MOLECULE_INVENTORY_FILE"])
PRIMARY = RUNNER.get_hosts("primary")[0]
REPLICAS = sorted(RUNNER.get_hosts("replicas"))
LATE_REPLICAS = sorted(RUNNER.get_hosts("late_replicas"))
ALL_REPLICAS = REPLICAS + LATE_REPLICAS
SYSTEM_SCHEMAS = ("mysql", "information_schema", "performance_schema", "sys")
PROJECT = Path(__file__).resolve().parents[3]
# The cluster CA the mariadb_tls role made on the control node (molecule/shared/group_vars):
# clients outside the containers check the members' certificates with it.
CLUSTER_CA = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / "secrets" / "tls" / "ca.crt"


def host(name):
    return testinfra.get_host(f"docker://{name}")


def sql(name, query, *, user=None, password=None, database=None):
    """Rows of a query as lists of strings; root over the socket unless an account is given."""
    command = ["mariadb", "-N", "-B"]
    if user:
        command += ["-h", "127.0.0.1", "-u", user, f"-p{password}"]
    if database:
        command.append(database)
    out = host(name).check_output(" ".join(["%s"] * (len(command) + 2)), *command, "-e", query)
    return [line.split("\t") for line in out.splitlines()]


def value(name, query):
    return sql(name, query)[0][0]


def wait_for_replicas(replicas=ALL_REPLICAS, timeout=60):
    """Block until every replica has applied everything the primary has binlogged so far."""
    position = value(PRIMARY, "SELECT @@GLOBAL.gtid_binlog_pos")
    for replica in replicas:
        waited = value(replica, f"SELECT MASTER_GTID_WAIT('{position}', {timeout})")
        assert waited == "0", f"{replica} did not reach GTID {position} within {timeout}s"
    return position


def replica_status(name):
    out = host(name).check_output("mariadb -e 'SHOW SLAVE STATUS\\G'")
    status = {}
    for line in out.splitlines():
        key, _, val = line.strip().partition(": ")
        status[key] = val
    return status


@pytest.fixture(scope="module")
def verify_db():
    sql(PRIMARY, "CREATE DATABASE IF NOT EXISTS lab_verify")
    sql(PRIMARY, "CREATE TABLE IF NOT EXISTS lab_verify.probe ("
                 " id INT AUTO_INCREMENT PRIMARY KEY, token VARCHAR(64) NOT NULL UNIQUE)")
    wait_for_replicas()
    return "lab_verify"


def test_server_ids_are_distinct():
    ids = {name: value(name, "SELECT @@server_id") for name in [PRIMARY, *ALL_REPLICAS]}
    assert len(set(ids.values())) == len(ids), ids


@pytest.mark.parametrize("replica", ALL_REPLICAS)
def test_replica_runs_gtid_replication_read_only(replica):
    status = replica_status(replica)
    assert status["Slave_IO_Running"] == "Yes", status.get("Last_IO_Error")
    assert status["Slave_SQL_Running"] == "Yes", status.get("Last_SQL_Error")
    assert status["Using_Gtid"] == "Slave_Pos"
    assert value(replica, "SELECT @@read_only") == "1"
    assert value(PRIMARY, "SELECT @@read_only") == "0"


def test_row_written_on_primary_is_on_every_replica_within_seconds(verify_db):
    token = secrets.token_hex(16)
    sql(PRIMARY, f"INSERT INTO lab_verify.probe (token) VALUES ('{token}')")
    deadline = time.monotonic() + 10
    missing = set(ALL_REPLICAS)
    while missing and time.monotonic() < deadline:
        query = f"SELECT COUNT(*) FROM lab_verify.probe WHERE token = '{token}'"
        missing = {r for r in missing if value(r, query) != "1"}
        time.sleep(0.2)
    assert not missing, f"row not replicated to {sorted(missing)} within 10 s"


def test_ordinary_account_cannot_write_on_a_replica(verify_db):
    password = secrets.token_hex(12)
    sql(PRIMARY, f"CREATE OR REPLACE USER verify_app@'%' IDENTIFIED BY '{password}'")
    sql(PRIMARY, "GRANT SELECT, INSERT ON lab_verify.* TO verify_app@'%'")
    wait_for_replicas()
    # The same account writes on the primary...
    sql(PRIMARY, "INSERT INTO probe (token) VALUES ('written-by-app')",
        user="verify_app", password=password, database="lab_verify")
    wait_for_replicas()
    for replica in ALL_REPLICAS:
        attempt = host(replica).run(
            "mariadb -h 127.0.0.1 -u verify_app -p%s lab_verify -e %s", password,
            "INSERT INTO probe (token) VALUES ('must-fail')")
        # ...but is refused on every replica: ER_OPTION_PREVENTS_STATEMENT (read-only).
        assert attempt.rc != 0
        assert "ERROR 1290" in attempt.stderr and "read-only" in attempt.stderr, attempt.stderr
    sql(PRIMARY, "DROP USER verify_app@'%'")


def test_gtid_current_pos_is_equal_on_all_hosts(verify_db):
    wait_for_replicas()
    positions = {name: value(name, "SELECT @@GLOBAL.gtid_current_pos")
                 for name in [PRIMARY, *ALL_REPLICAS]}
    assert len(set(positions.values())) == 1, positions


def _write_rows(first, count):
    sql(PRIMARY, "INSERT INTO probe (token) "
                 f"SELECT CONCAT('restart-', seq) FROM seq_{first}_to_{first + count - 1}",
        database="lab_verify")


def _assert_no_gap():
    wait_for_replicas(timeout=90)
    expected = value(PRIMARY, "SELECT COUNT(*), SUM(id) FROM lab_verify.probe")
    for replica in ALL_REPLICAS:
        status = replica_status(replica)
        assert status["Slave_IO_Running"] == "Yes", (replica, status.get("Last_IO_Error"))
        assert status["Slave_SQL_Running"] == "Yes", (replica, status.get("Last_SQL_Error"))
        assert value(replica, "SELECT COUNT(*), SUM(id) FROM lab_verify.probe") == expected


def test_replica_restart_ends_with_replication_running_and_no_gap(verify_db):
    restarted = REPLICAS[0]
    _write_rows(1000, 50)
    host(restarted).check_output("systemctl stop mariadb")
    _write_rows(2000, 50)  # written while the replica is down
    host(restarted).check_output("systemctl start mariadb")
    _write_rows(3000, 50)
    _assert_no_gap()


def test_primary_restart_ends_with_replication_running_and_no_gap(verify_db):
    _write_rows(4000, 50)
    host(PRIMARY).check_output("systemctl restart mariadb")
    _write_rows(5000, 50)  # replicas reconnect by themselves (MASTER_CONNECT_RETRY)
    _assert_no_gap()


@pytest.mark.parametrize("late", LATE_REPLICAS)
def test_replica_that_joined_after_data_existed_has_the_same_checksums(late):
    assert value(late, "SELECT COUNT(*) FROM lab_verify.before_join") == "5000"
    wait_for_replicas()
    assert table_checksums(late) == table_checksums(PRIMARY)


# mariadb_backup_work_dir: the sending member keeps the log of the last seed it streamed.
SEED_LOG = "/var/lib/mariadb-backup-work/seed-{}.log"


@pytest.mark.parametrize("late", LATE_REPLICAS)
def test_late_replica_was_seeded_the_way_its_inventory_says(late):
    """mariadb_replication_seed_method: backup (the default; the Debian 12 scenario) streams
    mariadb-backup from a healthy replica, the primary carries no copy while replicas are healthy;
    dump (the Debian 13 scenario's late replica) leaves no backup stream anywhere."""
    method = RUNNER.get_variables(late).get("mariadb_replication_seed_method", "backup")
    senders = [name for name in [PRIMARY, *REPLICAS]
               if host(name).file(SEED_LOG.format(late)).exists]
    if method == "dump":
        assert senders == [], senders
        return
    assert len(senders) == 1 and senders[0] in REPLICAS, senders
    assert "completed OK!" in host(senders[0]).file(SEED_LOG.format(late)).content_string


def table_checksums(name):
    tables = sql(name, "SELECT CONCAT('`', table_schema, '`.`', table_name, '`') "
                       "FROM information_schema.tables WHERE table_type = 'BASE TABLE' AND "
                       f"table_schema NOT IN {SYSTEM_SCHEMAS} ORDER BY 1")
    if not tables:
        return {}
    rows = sql(name, "CHECKSUM TABLE " + ", ".join(t[0] for t in tables))
    return {table: checksum for table, checksum in rows}


def schema_objects(name):
    """Routines, triggers, views and events of the application schemas, with their bodies."""
    return {
        "routines": sql(name, "SELECT routine_schema, routine_name, routine_type, "
                              "SHA2(routine_definition, 256) FROM information_schema.routines "
                              f"WHERE routine_schema NOT IN {SYSTEM_SCHEMAS} ORDER BY 1, 2, 3"),
        "triggers": sql(name, "SELECT trigger_schema, trigger_name, "
                              "SHA2(action_statement, 256) FROM information_schema.triggers "
                              f"WHERE trigger_schema NOT IN {SYSTEM_SCHEMAS} ORDER BY 1, 2"),
        "views": sql(name, "SELECT table_schema, table_name, SHA2(view_definition, 256) "
                           "FROM information_schema.views "
                           f"WHERE table_schema NOT IN {SYSTEM_SCHEMAS} ORDER BY 1, 2"),
    }


@pytest.mark.parametrize("replica", ALL_REPLICAS)
def test_every_table_and_schema_object_is_identical_on_the_replica(replica):
    wait_for_replicas()
    primary_checksums = table_checksums(PRIMARY)
    assert primary_checksums, "the primary holds no application tables"
    assert table_checksums(replica) == primary_checksums
    assert schema_objects(replica) == schema_objects(PRIMARY)


@pytest.mark.parametrize("replica", ALL_REPLICAS)
def test_pos_schema_reached_the_replica_with_its_routines_and_refreshed_views(replica):
    wait_for_replicas()
    applied = value(PRIMARY, "SELECT COUNT(*) FROM pos.schema_version")
    assert int(applied) >= 6
    assert value(replica, "SELECT COUNT(*) FROM pos.schema_version") == applied
    for mv in ("ProductBuyersMV", "CustomerPurchasesMV", "DailySalesMV"):
        assert value(replica, f"SELECT COUNT(*) FROM pos.{mv}") == value(
            PRIMARY, f"SELECT COUNT(*) FROM pos.{mv}")
    # Events replicate disabled on the replica side: they fire on the primary only.
    statuses = sql(replica, "SELECT event_name, status FROM information_schema.events "
                            "WHERE event_schema = 'pos'")
    assert statuses and all(status == "SLAVESIDE_DISABLED" for _, status in statuses)
    assert value(replica, "SELECT COUNT(*) FROM information_schema.triggers "
                          "WHERE trigger_schema = 'pos'") == value(
        PRIMARY, "SELECT COUNT(*) FROM information_schema.triggers WHERE trigger_schema = 'pos'")


@pytest.mark.parametrize("replica", ALL_REPLICAS)
def test_etl_rows_reached_the_replica(replica):
    wait_for_replicas()
    for table in ("City", "Customer", "Product", "`Order`", "OrderLine"):
        on_primary = value(PRIMARY, f"SELECT COUNT(*) FROM pos.{table}")
        assert int(on_primary) > 0, f"the ETL loaded no rows into {table}"
        assert value(replica, f"SELECT COUNT(*) FROM pos.{table}") == on_primary


def run_cluster_playbook(tmp_path, host_vars=""):
    """Run playbooks/rejoin.yml on the grown cluster (late replicas included).

    rejoin.yml runs the replication role alone, as site.yml and mariadb.yml run it after the
    server, TLS and health roles (which take no part in re-pointing a replica): the same failure
    and recovery in about a third of the time (75 s against 207 s, one run each, 2 cores).
    """
    extra = tmp_path / "grown.yml"
    extra.write_text(grown_cluster_inventory(LATE_REPLICAS, host_vars=host_vars))
    env = {**os.environ, "ANSIBLE_CONFIG": str(PROJECT / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"}
    return subprocess.run(
        ["ansible-playbook", "-i", str(Path(os.environ["MOLECULE_INVENTORY_FILE"]).parent),
         "-i", str(extra), "playbooks/rejoin.yml", "-e", "mariadb_replication_wait_retries=5"],
        cwd=PROJECT, env=env, capture_output=True, text=True, timeout=900, check=False)


def test_a_wrong_replication_password_fails_naming_the_replica_and_the_cause(tmp_path):
    replica = REPLICAS[-1]
    wrong = run_cluster_playbook(tmp_path, f"    {replica}:\n"
                                 "      mariadb_replication_password: WrongPassword-0123456789\n")
    output = " ".join(wrong.stdout.split())
    assert wrong.returncode != 0
    assert f"Replication on {replica} from" in output and "is not running" in output, output[-3000:]
    assert "Access denied for user 'repl'" in output
    assert "WrongPassword" not in wrong.stdout  # no_log keeps the secret out of the output
    # The replica reports what it is: not healthy.
    assert replica_status(replica)["Slave_IO_Running"] != "Yes"

    # With the right password again the replica recovers and nothing is missing.
    healed = run_cluster_playbook(tmp_path)
    assert healed.returncode == 0, healed.stdout[-3000:]
    _assert_no_gap()
