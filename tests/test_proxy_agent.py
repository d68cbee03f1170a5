"""The HAProxy agent of roles/mariadb_proxy against real local servers: a primary and a replica
with the role's rendered settings, the agent serving HAProxy's agent-check protocol on loopback.

What a proxy sees: the writer check is up on the writable primary only; the reader check is up on
a running replica within the lag limit and goes down, with the reason, when replication stops,
errs or lags, or the server does not answer. And Debian's HAProxy with the role's rendered
configuration, asking these agents, starts again from the states it saved instead of every server
UP until its first check: no connection through the writer port reaches the replica, none through
the reader port the primary.
"""

from __future__ import annotations

import importlib.util
import shlex
import shutil
import socket
import socketserver
import subprocess
import threading
import time

import pytest

from tests.support.health_cluster import (
    REPO_ROOT,
    HealthCluster,
    render_role_templates,
    render_server_config,
    run,
    wait_for,
)

AGENT_FILE = REPO_ROOT / "roles" / "mariadb_proxy" / "files" / "mariadb_proxy_agent.py"
spec = importlib.util.spec_from_file_location("mariadb_proxy_agent", AGENT_FILE)
agent_module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(agent_module)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    cluster = HealthCluster(render_server_config(tmp_path_factory.mktemp("render")),
                            replicas=1).start()
    yield cluster
    cluster.stop()


class RunningAgent:
    """The agent's own server on a free loopback port, in a thread."""

    def __init__(self, socket_path, max_lag=10, cache=0.2, address=("127.0.0.1", 0)):
        member = agent_module.MemberState(socket_path, "root", cache)
        self.server = agent_module.AgentServer(address, member, max_lag)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def ask(self, role):
        """One agent-check as HAProxy makes it: send the role, read one line."""
        with socket.create_connection(self.server.server_address, timeout=5) as conn:
            conn.sendall(role.encode() + b"\n")
            return conn.makefile("rb").readline().decode().strip()

    def wait_answer(self, role, prefix, timeout=30):
        return wait_for(lambda: (lambda answer: answer if answer.startswith(prefix) else None)(
            self.ask(role)), timeout, f"{role} check answering {prefix!r}")

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def agents(cluster):
    started = {"primary": RunningAgent(cluster.primary.socket),
               "replica": RunningAgent(cluster.replicas[0].socket)}
    yield started
    for agent in started.values():
        agent.close()


def test_writer_is_the_writable_primary_and_reader_the_running_replica(agents):
    assert agents["primary"].ask("writer") == "up"
    assert agents["primary"].ask("reader") == "down #writable (the primary)"
    assert agents["replica"].ask("writer") == "down #read-only"
    assert agents["replica"].ask("reader") == "up"


def test_stopped_replication_leaves_the_reader_pool_and_returns(cluster, agents):
    replica = cluster.replicas[0]
    run(replica, "STOP SLAVE SQL_THREAD")
    try:
        answer = agents["replica"].wait_answer("reader", "down")
        assert answer == "down #replication stopped (IO Yes, SQL No)"
    finally:
        run(replica, "START SLAVE SQL_THREAD")
    agents["replica"].wait_answer("reader", "up")


def test_replication_error_is_named(cluster, agents):
    replica = cluster.replicas[0]
    # A row only the replica has: the primary's insert of the same key fails on the replica.
    run(cluster.primary, "CREATE DATABASE IF NOT EXISTS agent_t",
        "CREATE TABLE IF NOT EXISTS agent_t.k (id INT PRIMARY KEY)")
    cluster.wait_replicas()
    run(replica, "SET SESSION sql_log_bin = 0", "INSERT INTO agent_t.k VALUES (1)")
    run(cluster.primary, "INSERT INTO agent_t.k VALUES (1)")
    try:
        answer = agents["replica"].wait_answer("reader", "down #replication error")
        assert "1062" in answer or "Duplicate" in answer, answer
    finally:
        run(replica, "SET SESSION sql_log_bin = 0", "DELETE FROM agent_t.k", "START SLAVE")
    agents["replica"].wait_answer("reader", "up")
    run(cluster.primary, "DROP DATABASE agent_t")
    cluster.wait_replicas()


def test_a_lagging_replica_leaves_the_reader_pool(cluster):
    replica = cluster.replicas[0]
    strict = RunningAgent(replica.socket, max_lag=1)
    try:
        # The replica applies each event 30 s after the primary wrote it: its lag climbs past 1 s.
        run(replica, "STOP SLAVE", "CHANGE MASTER TO MASTER_DELAY = 30", "START SLAVE")
        run(cluster.primary, "CREATE DATABASE IF NOT EXISTS agent_lag")
        answer = strict.wait_answer("reader", "down", timeout=60)
        assert answer.endswith("s behind (limit 1 s)"), answer
    finally:
        run(replica, "STOP SLAVE", "CHANGE MASTER TO MASTER_DELAY = 0", "START SLAVE")
        strict.close()
    run(cluster.primary, "DROP DATABASE IF EXISTS agent_lag")
    cluster.wait_replicas()


def test_a_server_that_does_not_answer_is_down_for_both_roles(tmp_path):
    agent = RunningAgent(str(tmp_path / "no-such.sock"))
    try:
        for role in ("writer", "reader"):
            assert agent.ask(role).startswith("down #server not answering: ")
    finally:
        agent.close()


def test_a_plain_tcp_check_and_an_unknown_question_are_harmless(agents):
    with socket.create_connection(agents["primary"].server.server_address, timeout=5):
        pass  # HAProxy's port check: connect and close
    assert agents["primary"].ask("backup") == "down #unknown check 'backup' (writer or reader)"
    assert agents["primary"].ask("writer") == "up"


# --- HAProxy right after it (re)starts ----------------------------------------------------------

class NameServer(socketserver.ThreadingTCPServer):
    """Stands in for a member's MariaDB port: tells a client which member it reached."""

    allow_reuse_address = True
    daemon_threads = True

    def __init__(self, address, name):
        self.name = name

        class Handler(socketserver.BaseRequestHandler):
            def handle(handler):
                handler.request.sendall(name.encode() + b"\n")

        super().__init__(address, Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()


def landed(port):
    """The member one new connection through HAProxy's port reaches; None when refused/closed."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
            return conn.makefile("rb").readline().decode().strip() or None
    except OSError:
        return None


def free_port(address):
    with socket.socket() as probe:
        probe.bind((address, 0))
        return probe.getsockname()[1]


class HAProxy:
    """Debian's haproxy in the foreground (-db) with a rendered configuration."""

    def __init__(self, config, stats_socket):
        self.stats_socket = stats_socket
        self.process = subprocess.Popen(["haproxy", "-db", "-f", str(config)],
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    def command(self, line):
        with socket.socket(socket.AF_UNIX) as conn:
            conn.connect(str(self.stats_socket))
            conn.sendall(line.encode() + b"\n")
            return b"".join(iter(lambda: conn.recv(65536), b"")).decode()

    def states(self):
        """backend/server -> UP or DOWN from show stat (without "1/2", "(agent)"); {} while the
        socket does not answer yet."""
        try:
            stat = self.command("show stat")
        except OSError:
            return {}
        rows = [line.split(",") for line in stat.splitlines() if line and not line.startswith("#")]
        return {f"{row[0]}/{row[1]}": row[17].split()[0] for row in rows
                if row[1] not in ("FRONTEND", "BACKEND")}

    def stop(self):
        self.process.terminate()
        return self.process.communicate(timeout=30)[0].decode()


SETTLED = {"mariadb_writer/replica": "DOWN", "mariadb_writer/primary": "UP",
           "mariadb_reader/replica": "UP", "mariadb_reader/primary": "DOWN",
           "mariadb_reader/replica-primary": "DOWN", "mariadb_reader/primary-primary": "UP"}


@pytest.mark.skipif(not shutil.which("haproxy") or not shutil.which("socat"),
                    reason="needs Debian's haproxy and socat (scripts/bootstrap.sh installs them)")
def test_haproxy_restarts_from_the_saved_states_not_all_up(cluster, tmp_path):
    # Two members on their own loopback addresses (one port for all, as the template has it); the
    # replica first, where balance first would send writes if it counted as UP.
    addresses = {"replica": "127.0.0.2", "primary": "127.0.0.3"}
    agent_port, server_port = free_port("127.0.0.2"), free_port("127.0.0.2")
    agents = [RunningAgent(cluster.replicas[0].socket, address=(addresses["replica"], agent_port)),
              RunningAgent(cluster.primary.socket, address=(addresses["primary"], agent_port))]
    servers = [NameServer((address, server_port), name) for name, address in addresses.items()]
    config, dropin = tmp_path / "haproxy.cfg", tmp_path / "mariadb-proxy.conf"
    stats_socket, state_file = tmp_path / "admin.sock", tmp_path / "server-state"
    ports = {"writer": free_port("127.0.0.1"), "reader": free_port("127.0.0.1")}
    render_role_templates(
        tmp_path, "mariadb_proxy",
        {"haproxy.cfg.j2": config, "haproxy-server-state.conf.j2": dropin},
        {"mariadb_proxy_members": list(addresses), "mariadb_proxy_bind_address": "127.0.0.1",
         "mariadb_proxy_writer_port": ports["writer"], "mariadb_proxy_reader_port": ports["reader"],
         "mariadb_proxy_agent_port": agent_port, "mariadb_proxy_server_port": server_port,
         "mariadb_proxy_stats_socket": str(stats_socket),
         "mariadb_proxy_server_state_file": str(state_file)},
        {name: {"mariadb_replication_address": address} for name, address in addresses.items()})
    # What systemd runs before a reload or stop (the drop-in's save line).
    [save] = [line.split("=-", 1)[1] for line in dropin.read_text().splitlines()
              if line.startswith("ExecReload=-")]
    try:
        first = HAProxy(config, stats_socket)
        try:
            wait_for(lambda: first.states() == SETTLED, 30,
                     "HAProxy's checks settling on the agents' answers")
            subprocess.run(shlex.split(save), check=True, timeout=30)
        finally:
            first.stop()
        assert " mariadb_writer 1 replica " in state_file.read_text()

        second = HAProxy(config, stats_socket)
        try:
            # The first connection HAProxy accepts counts too: it is the one most at risk.
            seen = {"writer": [wait_for(lambda: landed(ports["writer"]), 30,
                                        "the writer port answering")], "reader": []}
            started = time.monotonic()
            initial = second.states()
            # Beyond one check interval every server has been asked: the window that matters.
            while time.monotonic() - started < 1.5:
                for role, port in ports.items():
                    seen[role].append(landed(port))
        finally:
            log = second.stop()
    finally:
        for agent in agents:
            agent.close()
        for server in servers:
            server.shutdown()
            server.server_close()
    assert "state file" not in log, log  # e.g. "Can't open global server state file"
    assert set(seen["writer"]) == {"primary"}, seen["writer"]
    assert set(seen["reader"]) == {"replica"}, seen["reader"]
    assert initial == SETTLED
