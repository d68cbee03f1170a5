"""The HAProxy agent of roles/mariadb_proxy against real local servers: a primary and a replica
with the role's rendered settings, the agent serving HAProxy's agent-check protocol on loopback.

What a proxy sees: the writer check is up on the writable primary only; the reader check is up on
a running replica within the lag limit and goes down, with the reason, when replication stops,
errs or lags, or the server does not answer.
"""

from __future__ import annotations

import importlib.util
import socket
import threading

import pytest

from tests.support.health_cluster import (
    REPO_ROOT,
    HealthCluster,
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

    def __init__(self, socket_path, max_lag=10, cache=0.2):
        member = agent_module.MemberState(socket_path, "root", cache)
        self.server = agent_module.AgentServer(("127.0.0.1", 0), member, max_lag)
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
