"""The mariadb_exporter role's account and configuration with Debian's prometheus-mysqld-exporter
against a real local replica.

The account is created with community.mysql.mysql_user and the role's privileges (vars/main.yml),
the environment file is rendered from the role's template by Ansible, and the packaged exporter
runs with it as the ``prometheus`` user (unix_socket authentication, as on the members); /metrics
must answer with mysql_up 1 and the replica's lag series. The service itself (systemd) is left to
the lab.
"""

from __future__ import annotations

import json
import os
import pwd
import shlex
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.support.health_cluster import (
    ANSIBLE_PLAYBOOK,
    REPO_ROOT,
    HealthCluster,
    ansible_env,
    render_server_config,
    run,
    wait_for,
)

EXPORTER = Path("/usr/bin/prometheus-mysqld-exporter")
ROLE = REPO_ROOT / "roles" / "mariadb_exporter"


def _has_user(name):
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


pytestmark = pytest.mark.skipif(
    not EXPORTER.exists() or not ANSIBLE_PLAYBOOK.exists() or not _has_user("prometheus"),
    reason="needs Debian's prometheus-mysqld-exporter and ansible-playbook in the venv")


def _free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _apply_role_parts(tmp_path, cluster, port):
    """Create the account on the primary and render the environment file, as the role does."""
    defaults = yaml.safe_load((ROLE / "defaults/main.yml").read_text())
    role_vars = yaml.safe_load((ROLE / "vars/main.yml").read_text())
    env_file = tmp_path / "exporter.env"
    playbook = tmp_path / "exporter.json"
    playbook.write_text(json.dumps([{"hosts": "localhost", "gather_facts": False, "tasks": [
        {"name": "account", "community.mysql.mysql_user": {
            "name": defaults["mariadb_exporter_user"], "host": "localhost",
            "plugin": "unix_socket", "priv": role_vars["mariadb_exporter_privileges"],
            "resource_limits": {"MAX_USER_CONNECTIONS": 3}, "column_case_sensitive": True,
            "login_unix_socket": cluster.primary.socket}},
        {"name": "environment", "ansible.builtin.template": {
            "src": str(ROLE / "templates/prometheus-mysqld-exporter.j2"), "dest": str(env_file),
            "mode": "0644"}}]}]))
    variables = dict(defaults, mariadb_exporter_socket=cluster.replicas[0].socket,
                     mariadb_exporter_listen_address=f"127.0.0.1:{port}")
    extra = tmp_path / "vars.json"
    extra.write_text(json.dumps(variables))
    completed = subprocess.run(
        [str(ANSIBLE_PLAYBOOK), "-i", "localhost,", "-c", "local", str(playbook), "-e",
         f"@{extra}", "-e", f"ansible_python_interpreter={sys.executable}"],
        cwd=REPO_ROOT, env=ansible_env(), capture_output=True, text=True, timeout=300,
        check=False)
    assert completed.returncode == 0, completed.stdout[-3000:]
    return dict(line.split("=", 1) for line in env_file.read_text().splitlines()
                if line and not line.startswith("#"))


def test_metrics_answer_with_mysql_up_and_the_replica_lag(tmp_path):
    cluster = HealthCluster(render_server_config(tmp_path), replicas=1).start()
    process = None
    try:
        replica = cluster.replicas[0]
        # The prometheus user must reach the socket in the test's private directory.
        os.chmod(replica.basedir, 0o711)  # noqa: S103 - search only, no listing
        port = _free_port()
        environment = _apply_role_parts(tmp_path, cluster, port)
        cluster.wait_replicas()  # the account replicated
        assert run(replica, "SELECT COUNT(*) FROM mysql.user WHERE user = 'prometheus'") == (
            (1,),)
        command = ["runuser", "-u", "prometheus", "--", str(EXPORTER),
                   *shlex.split(json.loads(environment["ARGS"]))]
        env = dict(os.environ, DATA_SOURCE_NAME=json.loads(environment["DATA_SOURCE_NAME"]))
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.PIPE, text=True)

        def metrics():
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics",
                                            timeout=10) as answer:
                    return answer.read().decode()
            except OSError:
                assert process.poll() is None, process.stderr.read()
                return None

        text = wait_for(metrics, timeout=60, what="/metrics answers")
        assert "\nmysql_up 1\n" in text
        assert "mysql_slave_status_seconds_behind_master" in text
        assert "mysql_slave_status_slave_sql_running" in text
    finally:
        if process is not None:
            process.terminate()
            process.wait(timeout=30)
        cluster.stop()
