"""Durability, parallel apply and truthful-health settings of the mariadb_server role, in force on
real servers.

The configuration file is rendered by Ansible from the role's template and defaults; local
mariadbd instances start with every rendered setting not tied to the host (an unknown or misspelt
option stops mariadbd, so the whole file is checked), and the tests read what the servers report.
"""

from __future__ import annotations

import os
import signal
import time

import pytest
import yaml

from tests.support.health_cluster import (
    ANSIBLE_PLAYBOOK,
    HealthCluster,
    render_server_config,
    run,
    wait_applied,
    wait_for,
)
from tests.support.mariadb_instance import REPO_ROOT

pytestmark = pytest.mark.skipif(not ANSIBLE_PLAYBOOK.exists(),
                                reason="ansible-playbook not in the venv")

ROLE = REPO_ROOT / "roles" / "mariadb_server"
DEFAULTS = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())


def _normal(value) -> str:
    text = str(value).strip().upper()
    return {"TRUE": "ON", "FALSE": "OFF", "1": "1"}.get(text, text)


@pytest.fixture(scope="module")
def settings(tmp_path_factory):
    return render_server_config(tmp_path_factory.mktemp("render"))


@pytest.fixture(scope="module")
def cluster(settings):
    cluster = HealthCluster(settings).start()
    yield cluster
    cluster.stop()


def test_the_template_renders_the_role_defaults(settings):
    # Each setting the role documents reaches the configuration file under the server's name.
    for variable, value in DEFAULTS.items():
        name = variable.removeprefix("mariadb_server_")
        if name in ("sync_binlog", "innodb_flush_log_at_trx_commit", "relay_log_recovery",
                    "slave_net_timeout") or name.startswith(("slave_parallel", "binlog_commit")):
            assert _normal(settings[name]) == _normal(value), name


def test_durable_defaults_as_the_issue_requires():
    assert DEFAULTS["mariadb_server_sync_binlog"] == 1
    assert DEFAULTS["mariadb_server_innodb_flush_log_at_trx_commit"] == 1
    assert DEFAULTS["mariadb_server_slave_parallel_threads"] > 0
    assert DEFAULTS["mariadb_server_slave_net_timeout"] <= 10


def test_every_rendered_setting_is_in_force_on_every_member(cluster, settings):
    checked = {name: value for name, value in settings.items()
               if name not in ("server_id", "report_host", "bind_address", "port", "socket",
                               "log_bin", "relay_log", "innodb_buffer_pool_size", "read_only",
                               "binlog_expire_logs_seconds")}
    assert "sync_binlog" in checked and "slave_parallel_threads" in checked
    for server in cluster.servers:
        actual = dict(run(server, "SHOW GLOBAL VARIABLES"))
        wrong = {name: (value, actual.get(name)) for name, value in checked.items()
                 if _normal(actual.get(name)) != _normal(value)}
        assert not wrong, f"server {server.server_id}: rendered vs in force: {wrong}"


def test_replica_state_is_crash_safe_in_innodb(cluster):
    for replica in cluster.replicas:
        engine = run(replica, "SELECT engine FROM information_schema.tables WHERE "
                              "table_schema = 'mysql' AND table_name = 'gtid_slave_pos'")
        assert engine == (("InnoDB",),)


def test_replicas_apply_with_the_configured_parallel_workers(cluster, settings):
    run(cluster.primary, "CREATE DATABASE IF NOT EXISTS apply_check",
        "CREATE TABLE IF NOT EXISTS apply_check.t (id INT PRIMARY KEY, v INT)")
    for i in range(200):
        run(cluster.primary, "REPLACE INTO apply_check.t VALUES (%s, %s)", args=(i, i))
    cluster.wait_replicas()
    workers = int(settings["slave_parallel_threads"])
    for replica in cluster.replicas:
        # The pool of worker threads is the one the setting asks for, and they apply events.
        threads = run(replica, "SELECT COUNT(*) FROM information_schema.processlist "
                               "WHERE user = 'system user' AND state LIKE '%%work from SQL%%'")
        assert threads[0][0] == workers
        assert run(replica, "SELECT COUNT(*) FROM apply_check.t") == ((200,),)


def test_a_frozen_primary_shows_as_a_broken_link_within_fifteen_seconds(cluster, settings):
    # SIGSTOP keeps the TCP connection open and silent, as a cut network does: the replica must
    # not go on reporting IO Yes / 0 s behind. slave_net_timeout (with the heartbeat period below
    # it) bounds the time until it notices.
    timeout = int(settings["slave_net_timeout"])
    replica = cluster.replicas[0]
    period = run(replica, "SHOW GLOBAL STATUS LIKE 'Slave_heartbeat_period'")[0][1]
    assert float(period) < timeout
    os.kill(cluster.primary.process.pid, signal.SIGSTOP)
    started = time.monotonic()
    try:
        def broken():
            status = _slave_status(replica)
            return status["Slave_IO_Running"] != "Yes"
        wait_for(broken, timeout=15 + 45, what="replica reports the link broken")
        noticed = time.monotonic() - started
    finally:
        os.kill(cluster.primary.process.pid, signal.SIGCONT)
    assert noticed <= max(15, timeout + 5) + 5, f"the broken link showed after {noticed:.1f}s"
    wait_for(lambda: _slave_status(replica)["Slave_IO_Running"] == "Yes", timeout=120,
             what="replica reconnects after the primary resumes")
    wait_applied(replica, cluster.primary)


def _slave_status(replica):
    import pymysql.cursors
    with replica.connect() as conn, conn.cursor(pymysql.cursors.DictCursor) as cur:
        cur.execute("SHOW SLAVE STATUS")
        return cur.fetchone()


def _lab_checks():
    """The molecule verify file's pure checks, loaded by path (``molecule`` is also a package)."""
    import importlib.util

    path = ROLE.parents[1] / "molecule/replication/tests/test_replication_health.py"
    spec = importlib.util.spec_from_file_location("replication_health_checks", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_lab_verify_checks_pass_here_and_catch_a_wrong_setting(cluster):
    checks = _lab_checks()
    for server in cluster.servers:
        assert checks.settings_problems(dict(run(server, "SHOW GLOBAL VARIABLES"))) == {}
    replica = cluster.replicas[0]
    run(replica, "STOP SLAVE", "SET GLOBAL slave_parallel_threads = 0", "START SLAVE")
    try:
        problems = checks.settings_problems(dict(run(replica, "SHOW GLOBAL VARIABLES")))
    finally:
        run(replica, "STOP SLAVE",
            "SET GLOBAL slave_parallel_threads = %d"
            % DEFAULTS["mariadb_server_slave_parallel_threads"], "START SLAVE")
    assert problems == {"slave_parallel_threads": (
        DEFAULTS["mariadb_server_slave_parallel_threads"], "0")}
