"""Replication health on the lab's members (issue #10): durable and parallel-apply settings in
force, the heartbeat fresh everywhere, a crash of the primary under writes losing nothing, a replica
cut off the network reported within 15 s, and check.yml / status.yml end to end.

The pure checks (``expected_settings``, ``settings_problems``) are shared with
tests/test_health_config.py, which runs them against local servers; everything that needs the
containers runs only under molecule (MOLECULE_INVENTORY_FILE set).
"""

import json
import os
import re
import secrets
import subprocess
import threading
import time
from pathlib import Path

import pytest
import yaml

PROJECT = Path(__file__).resolve().parents[3]
DEFAULTS = yaml.safe_load((PROJECT / "roles/mariadb_server/defaults/main.yml").read_text())
HEALTH_VARS = yaml.safe_load((PROJECT / "roles/mariadb_health/vars/main.yml").read_text())
HEALTH_DEFAULTS = yaml.safe_load((PROJECT / "roles/mariadb_health/defaults/main.yml").read_text())
LAG_QUERY = HEALTH_VARS["mariadb_health_lag_query"].replace(
    "{{ mariadb_health_database }}", HEALTH_DEFAULTS["mariadb_health_database"])
# The role variables of issue #10, by server variable name.
HEALTH_SETTINGS = ("sync_binlog", "innodb_flush_log_at_trx_commit", "relay_log_recovery",
                   "slave_parallel_threads", "slave_parallel_mode", "slave_parallel_max_queued",
                   "slave_transaction_retries", "binlog_commit_wait_count",
                   "binlog_commit_wait_usec", "slave_net_timeout")


def _normal(value):
    text = str(value).strip().upper()
    return {"TRUE": "ON", "FALSE": "OFF"}.get(text, text)


def expected_settings(overrides=None):
    """Server variable -> value the mariadb_server role sets (its defaults, then overrides)."""
    values = {name: DEFAULTS["mariadb_server_" + name] for name in HEALTH_SETTINGS}
    values.update(overrides or {})
    return values


def settings_problems(actual, overrides=None):
    """{variable: (expected, actual)} for each health setting not in force."""
    return {name: (value, actual.get(name)) for name, value in expected_settings(overrides).items()
            if _normal(actual.get(name)) != _normal(value)}


ON_LAB = "MOLECULE_INVENTORY_FILE" in os.environ
lab = pytest.mark.skipif(not ON_LAB, reason="needs the molecule replication scenario")

if ON_LAB:
    from drills import drills  # the scenario's folder is on the path only under molecule
    from testinfra.utils.ansible_runner import AnsibleRunner

    RUNNER = AnsibleRunner(os.environ["MOLECULE_INVENTORY_FILE"])
    MEMBERS = sorted(set(RUNNER.get_hosts("primary") + RUNNER.get_hosts("replicas")
                         + RUNNER.get_hosts("late_replicas")))
else:
    MEMBERS = []
    drills = lab


def sql(name, query):
    out = subprocess.run(["docker", "exec", name, "mariadb", "-N", "-B", "-e", query],
                         capture_output=True, text=True, check=True).stdout
    return [line.split("\t") for line in out.splitlines()]


def primary():
    writable = [m for m in MEMBERS if sql(m, "SELECT @@read_only")[0][0] == "0"]
    assert len(writable) == 1, f"expected one writable member, found {writable}"
    return writable[0]


def wait_for(condition, timeout=120, what="condition"):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not within {timeout}s"
        time.sleep(0.5)


def lag(member):
    value = sql(member, LAG_QUERY)[0][0]
    return None if value == "NULL" else float(value)


@lab
@pytest.mark.parametrize("member", MEMBERS)
def test_durability_and_parallel_apply_in_force(member):
    actual = dict(sql(member, "SHOW GLOBAL VARIABLES"))
    assert not settings_problems(actual), member
    engine = sql(member, "SELECT engine FROM information_schema.tables WHERE "
                         "table_schema = 'mysql' AND table_name = 'gtid_slave_pos'")
    assert engine == [["InnoDB"]]


@lab
@pytest.mark.parametrize("member", MEMBERS)
def test_heartbeat_fresh_and_link_timeouts_short(member):
    wait_for(lambda: (lag(member) or 99) < HEALTH_DEFAULTS["mariadb_health_max_lag"],
             what=f"fresh heartbeat on {member}")
    if member != primary():
        period = float(dict(sql(member, "SHOW GLOBAL STATUS LIKE 'Slave_heartbeat_period'"))[
            "Slave_heartbeat_period"])
        assert 0 < period < DEFAULTS["mariadb_server_slave_net_timeout"]


@lab
def test_a_replica_cut_off_the_network_is_reported_within_15_seconds():
    source = primary()
    replica = next(m for m in MEMBERS if m != source)
    network = next(iter(json.loads(subprocess.run(
        ["docker", "inspect", "-f", "{{json .NetworkSettings.Networks}}", replica],
        capture_output=True, text=True, check=True).stdout)))
    subprocess.run(["docker", "network", "disconnect", network, replica], check=True)
    try:
        cut_at = time.monotonic()
        wait_for(lambda: (lag(replica) or 0) > 5 or dict(zip(
            ("io",), sql(replica, "SELECT variable_value FROM information_schema.global_status "
                                  "WHERE variable_name = 'Slave_running'")[0], strict=False))
            ["io"] != "ON", timeout=15, what=f"{replica} reported lagging or broken")
        assert time.monotonic() - cut_at <= 15
    finally:
        subprocess.run(["docker", "network", "connect", network, replica], check=True)
    wait_for(lambda: (lag(replica) or 99) < 5, timeout=180, what=f"{replica} caught up")


@lab
def test_kill_9_of_the_primary_under_writes_loses_no_transaction():
    source = primary()
    sql(source, "CREATE DATABASE IF NOT EXISTS health_drill; CREATE TABLE IF NOT EXISTS "
                "health_drill.t (id INT AUTO_INCREMENT PRIMARY KEY, v CHAR(32))")
    stop = threading.Event()

    def write():
        while not stop.is_set():
            subprocess.run(["docker", "exec", source, "mariadb", "-e",
                            "INSERT INTO health_drill.t (v) VALUES ('%s')" % secrets.token_hex(8)],
                           capture_output=True, check=False)

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    wait_for(lambda: int(sql(source, "SELECT COUNT(*) FROM health_drill.t")[0][0]) > 20)
    subprocess.run(["docker", "exec", source, "pkill", "-KILL", "-x", "mariadbd"], check=True)
    stop.set()
    writer.join(timeout=60)
    wait_for(lambda: subprocess.run(["docker", "exec", source, "mariadb", "-e", "SELECT 1"],
                                    capture_output=True, check=False).returncode == 0,
             timeout=180, what=f"{source} restarted by systemd")
    # Every member starts read-only with its scheduler off (playbooks/mariadb.yml): a restarted
    # primary takes no writes and fires no event by surprise. Give it its writes back, as the
    # replication role does for the live primary (resume_heartbeat below runs its scheduler), so
    # the drills that follow find the cluster as this one found it.
    assert sql(source, "SELECT @@GLOBAL.read_only, @@GLOBAL.event_scheduler")[0] == ["1", "OFF"]
    sql(source, "SET GLOBAL read_only = OFF")
    # Exact positions below: no heartbeat write between the reads. (Imported here: the settings
    # checks of this file also run from tests/, where this folder is not on the path.)
    from heartbeat_pause import pause_heartbeat, resume_heartbeat
    pause_heartbeat()
    try:
        _assert_no_transaction_lost_or_forked(source)
    finally:
        resume_heartbeat()


def _assert_no_transaction_lost_or_forked(source):
    position = sql(source, "SELECT @@gtid_binlog_pos")[0][0]
    checksums = {}
    for member in MEMBERS:
        if member != source:
            assert sql(member, f"SELECT MASTER_GTID_WAIT('{position}', 180)")[0][0] == "0"
            # no member holds a transaction the primary lacks (no GTID past the primary's)
            assert sql(member, "SELECT @@gtid_current_pos")[0][0] == position
        checksums[member] = sql(member, "CHECKSUM TABLE health_drill.t")[0][1]
    assert len(set(checksums.values())) == 1, checksums
    sql(source, "DROP DATABASE health_drill")


@lab
@drills
def test_check_and_status_playbooks_on_the_lab(tmp_path):
    inventory = os.environ["MOLECULE_INVENTORY_FILE"]
    password = secrets.token_hex(12)
    extra = ["-e", f"mariadb_health_checksum_password={password}",
             "-e", f"mariadb_health_report_dir={tmp_path}"]
    base = [str(PROJECT / ".venv/bin/ansible-playbook"), "-i", inventory]
    check = subprocess.run([*base, str(PROJECT / "playbooks/check.yml"), *extra],
                           capture_output=True, text=True, cwd=PROJECT, check=False)
    assert check.returncode == 0, check.stdout[-5000:]
    assert json.loads((tmp_path / "last_check.json").read_text())["status"] == "consistent"
    status = subprocess.run([*base, str(PROJECT / "playbooks/status.yml"), *extra],
                            capture_output=True, text=True, cwd=PROJECT, check=False)
    assert status.returncode == 0, status.stdout[-5000:]
    report = (tmp_path / "status.md").read_text()
    # The playbooks act on the inventory's members (the late replica joined through another one).
    members = RUNNER.get_hosts("mariadb")
    assert members and all(f"| {m} |" in report for m in members), (members, report)
    assert re.search(r"consistent at", report)
