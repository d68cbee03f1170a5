"""One host after the mariadb_server role: service, configuration, secure installation."""

import os
import subprocess
from pathlib import Path

import testinfra.utils.ansible_runner

testinfra_hosts = testinfra.utils.ansible_runner.AnsibleRunner(
    os.environ["MOLECULE_INVENTORY_FILE"]
).get_hosts("all")

CONFIG = "/etc/mysql/mariadb.conf.d/60-pos-cluster.cnf"


def sql(host, query):
    """Run a query as root over the unix socket; return the rows as lists of strings."""
    out = host.check_output("mariadb -N -B -e %s", query)
    return [line.split("\t") for line in out.splitlines()]


def variable(host, name):
    return sql(host, f"SELECT @@GLOBAL.{name}")[0][0]


def test_service_running_and_enabled(host):
    service = host.service("mariadb")
    assert service.is_running
    assert service.is_enabled


def test_config_file_is_applied(host):
    config = host.file(CONFIG)
    assert config.exists and config.user == "root" and config.mode == 0o644
    assert variable(host, "log_bin") == "1"
    assert variable(host, "binlog_format") == "ROW"
    assert variable(host, "gtid_strict_mode") == "1"
    assert variable(host, "log_slave_updates") == "1"
    assert variable(host, "character_set_server") == "utf8mb4"
    assert variable(host, "bind_address") == "0.0.0.0"  # noqa: S104 - replicas connect
    assert variable(host, "local_infile") == "1"
    assert variable(host, "read_only") == "0"
    assert variable(host, "event_scheduler") == "ON"
    assert int(variable(host, "binlog_expire_logs_seconds")) == 7 * 86400
    assert variable(host, "log_bin_basename").endswith("/mariadb-bin")
    server_id = int(variable(host, "server_id"))
    assert f"server_id                  = {server_id}" in config.content_string
    assert server_id > 1  # derived from the host name, not the package default of 1


def test_buffer_pool_is_a_fraction_of_memory(host):
    memtotal_kib = int(host.check_output("awk '/MemTotal/ {print $2}' /proc/meminfo"))
    expected_mib = max(int(memtotal_kib / 1024 * 0.02), 128)
    pool_mib = int(variable(host, "innodb_buffer_pool_size")) // (1024 * 1024)
    # InnoDB rounds the pool up to whole chunks of 128 MiB.
    assert expected_mib <= pool_mib < expected_mib + 128


def test_root_only_through_unix_socket(host):
    assert sql(host, "SELECT host FROM mysql.global_priv WHERE user = 'root'") == [["localhost"]]
    definition = sql(host, "SHOW CREATE USER root@localhost")[0][0]
    # Debian's default is "VIA mysql_native_password USING 'invalid' OR unix_socket".
    assert definition.endswith("IDENTIFIED VIA unix_socket"), definition
    over_tcp = host.run("mariadb -h 127.0.0.1 -u root -e 'SELECT 1'")
    assert over_tcp.rc != 0
    assert "Access denied" in over_tcp.stderr or "is not allowed to connect" in over_tcp.stderr


def test_no_anonymous_users_no_test_database(host):
    assert sql(host, "SELECT COUNT(*) FROM mysql.global_priv WHERE user = ''") == [["0"]]
    assert sql(host, "SELECT COUNT(*) FROM information_schema.schemata "
                     "WHERE schema_name = 'test'") == [["0"]]


def test_secure_installation_is_not_in_the_binlog(host):
    # Local hardening must not replicate: a replica replaying DROP USER would stop.
    events = host.check_output("mariadb-binlog %s.[0-9]*", variable(host, "log_bin_basename"))
    assert "DROP USER" not in events.upper()


def test_a_host_that_is_not_debian_is_refused_with_its_name_and_distribution(tmp_path):
    """The role refuses another distribution before touching it (a container posing as Rocky)."""
    name = "mdb-default-not-debian"
    project = Path(__file__).resolve().parents[3]
    subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False)
    subprocess.run(["docker", "run", "-d", "--name", name, "mariadb-lab/debian-systemd:12",
                    "sleep", "infinity"], check=True, capture_output=True)
    try:
        subprocess.run(["docker", "exec", name, "sh", "-c",
                        "rm -f /etc/debian_version /usr/lib/os-release && printf '"
                        'NAME="Rocky Linux"\\nID="rocky"\\nVERSION_ID="9.4"\\n'
                        "' > /etc/os-release"], check=True, capture_output=True)
        playbook = tmp_path / "play.yml"
        playbook.write_text("- hosts: all\n  roles:\n    - mariadb_server\n")
        result = subprocess.run(
            ["ansible-playbook", "-i", f"{name},", "-c", "community.docker.docker",
             str(playbook)],
            cwd=project, capture_output=True, text=True, timeout=300, check=False,
            env={**os.environ, "ANSIBLE_CONFIG": str(project / "ansible.cfg"),
                 "ANSIBLE_NOCOLOR": "1"})
        output = " ".join(result.stdout.split())
        assert result.returncode != 0
        expected = f"{name} runs Rocky Linux 9.4; this role supports Debian 12"
        assert expected in output, output[-2000:]
        # Refused before anything was installed.
        installed = subprocess.run(["docker", "exec", name, "sh", "-c", "command -v mariadbd"],
                                   capture_output=True, check=False)
        assert installed.returncode != 0
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False)
