"""A local primary and replicas running the mariadb_server role's rendered settings.

``render_server_config`` renders roles/mariadb_server/templates/mariadb-cluster.cnf.j2 with the
role's own defaults through ansible-playbook (the same template and variables a real run uses);
``HealthCluster`` starts real mariadbd instances with those settings and real GTID replication
over loopback, as tests/test_ops_topology.py does.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pymysql

from tests.support.mariadb_instance import REPO_ROOT, MariaDBInstance

ANSIBLE_PLAYBOOK = Path(sys.executable).with_name("ansible-playbook")
# Settings tied to the host (paths, addresses, memory) that the local instances set themselves.
HOST_SETTINGS = {"server_id", "report_host", "bind_address", "port", "socket", "log_bin",
                 "relay_log", "innodb_buffer_pool_size", "read_only"}
REPL_PASSWORD = "repl-Health-0123"


def ansible_env() -> dict:
    return dict(os.environ, ANSIBLE_CONFIG=str(REPO_ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1",
                ANSIBLE_LOCALHOST_WARNING="0", ANSIBLE_INVENTORY_UNPARSED_WARNING="0")


def render_role_templates(workdir: Path, role: str, templates: dict[str, Path],
                          overrides: dict | None = None, hosts: dict | None = None) -> None:
    """Render ``templates`` (template name -> destination) of ``role`` through ansible-playbook,
    with the role's defaults and ``overrides`` (extra vars); ``hosts`` are further inventory hosts
    (name -> host variables) the templates may read through hostvars."""
    role_dir = REPO_ROOT / "roles" / role
    playbook = workdir / "render.yml"
    playbook.write_text(json.dumps([{
        "name": "Render templates", "hosts": "localhost", "gather_facts": True,
        "tasks": [
            {"name": "Role defaults", "ansible.builtin.include_vars":
                {"file": str(role_dir / "defaults" / "main.yml")}},
            *({"name": f"Render {src}", "ansible.builtin.template":
                {"src": str(role_dir / "templates" / src), "dest": str(dest), "mode": "0644"}}
              for src, dest in templates.items()),
        ]}]))
    inventory = workdir / "render-inventory.json"
    inventory.write_text(json.dumps({"all": {"hosts": {
        "localhost": {"ansible_connection": "local", "ansible_python_interpreter": sys.executable},
        **(hosts or {})}}}))
    extra = workdir / "render-vars.json"
    extra.write_text(json.dumps(overrides or {}))
    completed = subprocess.run(
        [str(ANSIBLE_PLAYBOOK), "-i", str(inventory), str(playbook), "-e", f"@{extra}"],
        cwd=REPO_ROOT, env=ansible_env(), capture_output=True, text=True, timeout=300,
        check=False)
    assert completed.returncode == 0, (completed.stdout + completed.stderr)[-4000:]


def render_server_config(workdir: Path, overrides: dict | None = None) -> dict[str, str]:
    """The [mariadbd] settings the role writes, rendered by Ansible; returns name -> value."""
    target = workdir / "60-pos-cluster.cnf"
    render_role_templates(workdir, "mariadb_server", {"mariadb-cluster.cnf.j2": target}, overrides)
    settings: dict[str, str] = {}
    section = None
    for raw in target.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        if section == "mariadbd":
            name, _, value = line.partition("=")
            settings[name.strip()] = value.strip()
    return settings


def server_options(settings: dict[str, str]) -> tuple[str, ...]:
    """Command-line options for every rendered setting not tied to the host."""
    return tuple(f"--{name.replace('_', '-')}={value}" for name, value in settings.items()
                 if name not in HOST_SETTINGS)


def run(server: MariaDBInstance, *statements: str, args=None):
    with server.connect() as conn, conn.cursor() as cur:
        for statement in statements:
            cur.execute(statement, args)
        return cur.fetchall()


def point(replica: MariaDBInstance, source: MariaDBInstance, heartbeat: float | None = None):
    """CHANGE MASTER the way the mariadb_replication role does (GTID slave_pos)."""
    heartbeat_clause = f", MASTER_HEARTBEAT_PERIOD={heartbeat}" if heartbeat else ""
    run(replica, "STOP SLAVE", "SET GLOBAL read_only = 1",
        "CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT=%d, MASTER_USER='repl', "
        "MASTER_PASSWORD='%s', MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=1%s"
        % (source.port, REPL_PASSWORD, heartbeat_clause), "START SLAVE")


def wait_applied(replica: MariaDBInstance, source: MariaDBInstance, timeout: int = 120):
    position = run(source, "SELECT @@gtid_binlog_pos")[0][0]
    result = run(replica, "SELECT MASTER_GTID_WAIT(%s, %s)", args=(position, timeout))[0][0]
    assert result == 0, f"replica on port {replica.port} did not reach {position} in {timeout}s"


def wait_for(condition, timeout: float = 60, what: str = "condition"):
    """Poll ``condition`` until it returns a true value; generous deadline, no fixed sleeps."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not reached within {timeout}s")
        time.sleep(0.2)


class HealthCluster:
    """A primary and ``replicas`` replicas, all with the role's rendered settings."""

    def __init__(self, settings: dict[str, str], replicas: int = 2, heartbeat: float = 2):
        options = (*server_options(settings), "--report-host=127.0.0.1")
        self.servers = [MariaDBInstance(server_id=i + 1, extra_options=options)
                        for i in range(replicas + 1)]
        self.heartbeat = heartbeat

    @property
    def primary(self) -> MariaDBInstance:
        return self.servers[0]

    @property
    def replicas(self) -> list[MariaDBInstance]:
        return self.servers[1:]

    def start(self) -> HealthCluster:
        try:
            for server in self.servers:
                server.start()
            run(self.primary,
                "CREATE USER repl@'127.0.0.1' IDENTIFIED BY '%s'" % REPL_PASSWORD,
                "GRANT REPLICATION SLAVE ON *.* TO repl@'127.0.0.1'")
            for replica in self.replicas:
                point(replica, self.primary, self.heartbeat)
            self.wait_replicas()
        except Exception:
            self.stop()
            raise
        return self

    def wait_replicas(self, timeout: int = 120):
        for replica in self.replicas:
            wait_applied(replica, self.primary, timeout)

    def stop(self):
        for server in self.servers:
            try:
                server.stop()
            except (OSError, pymysql.err.Error):
                pass
