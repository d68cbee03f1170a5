"""The live-topology decisions (module_utils/mariadb_pos/topology.py).

First the GTID arithmetic on literal GTID strings as MariaDB prints them, then the decisions on the
states of REAL local servers (tests/support/mariadb_instance.py) replicating over loopback: a
primary, two replicas, a writable replica, an isolated old primary with an errant transaction.
"""

from __future__ import annotations

import time

import pytest

from module_utils.mariadb_pos.topology import (
    TopologyError,
    decide,
    errant_gtids,
    history,
    parse_gtid_list,
    position_key,
    seed_source,
)
from tests.support.mariadb_instance import MariaDBInstance

# ---------------------------------------------------------------- GTID arithmetic (pure logic)


def test_parse_gtid_list_reads_several_domains_and_servers():
    assert parse_gtid_list("0-1-100,1-2-7, 0-3-12") == {(0, 1): 100, (1, 2): 7, (0, 3): 12}
    assert parse_gtid_list("") == {}
    assert parse_gtid_list(None) == {}


def test_parse_gtid_list_names_the_bad_item():
    with pytest.raises(TopologyError, match=r"'0-1' is not a GTID"):
        parse_gtid_list("0-1-5,0-1", "gtid_binlog_state")


def test_history_merges_binlog_state_and_applied_position():
    assert history("0-1-100,0-2-150", "0-2-160") == {(0, 1): 100, (0, 2): 160}


def test_old_primary_with_transactions_after_the_promotion_point_is_errant():
    # db1 (server 1) wrote up to 105; the replica promoted at 0-1-100 then wrote 101.. as server 2.
    old_primary = history("0-1-105", "")
    new_primary = history("0-1-100,0-2-150", "0-1-100")
    assert errant_gtids(old_primary, new_primary) == ["0-1-101..0-1-105"]
    assert errant_gtids(history("0-1-101", ""), new_primary) == ["0-1-101"]


def test_old_primary_whose_history_reached_the_new_primary_is_not_errant():
    # A larger seqno in the domain alone does not make a member safe; the per-server check does.
    assert errant_gtids(history("0-1-100", ""), history("0-1-100,0-2-150", "")) == []
    assert errant_gtids(history("0-1-90", "0-1-90"), history("0-1-100", "")) == []


def test_the_primarys_own_gtids_are_never_errant_on_a_member_read_after_it():
    # The primary (server 2) was read at 150, then wrote more that a replica already applied.
    assert errant_gtids(history("0-2-155", "0-2-155"), history("0-1-100,0-2-150", ""), 2) == []
    assert errant_gtids(history("0-1-101,0-2-155", ""), history("0-1-100,0-2-150", ""), 2) == [
        "0-1-101"]


def test_a_server_the_primary_never_saw_is_errant_with_its_last_gtid():
    errant = errant_gtids(history("0-1-100,0-3-101", ""), history("0-1-100", ""))
    assert len(errant) == 1 and errant[0].startswith("0-3-101 ")


def test_position_key_orders_applied_positions():
    assert position_key("0-1-120") > position_key("0-1-100")
    assert position_key("0-1-100,1-1-5") > position_key("0-1-100")
    assert position_key("") == 0


def _member(address, read_only=True, source=None, io=True, sql=True, binlog_state="0-1-10",
            slave_pos="0-1-10", server_id=1, lag=0):
    variables = dict(read_only=int(read_only), log_bin=1, gtid_strict_mode=1,
                     log_slave_updates=1, server_id=server_id, gtid_binlog_pos=binlog_state,
                     gtid_binlog_state=binlog_state, gtid_slave_pos=slave_pos,
                     gtid_current_pos=binlog_state)
    replica = dict(Is_Replica=False)
    if source:
        replica = dict(Is_Replica=True, Master_Host=source, Master_Server_Id=0,
                       Slave_IO_Running="Yes" if io else "No",
                       Slave_SQL_Running="Yes" if sql else "No", Using_Gtid="Slave_Pos",
                       Seconds_Behind_Master=lag)
    return dict(address=address, variables=dict(query_result=[[variables]]), replica=replica)


def test_the_writable_member_that_does_not_replicate_is_the_primary_and_inventory_is_overruled():
    topology = decide({
        "db1": _member("10.0.0.1", source="10.0.0.2", server_id=1),
        "db2": _member("10.0.0.2", read_only=False, server_id=2),
        "db3": _member("10.0.0.3", source="10.0.0.2", server_id=3),
    }, inventory_primary="db1")
    assert topology["primary"] == "db2" and not topology["disagreements"]
    assert topology["notes"] == ["the inventory names db1 as the primary; the servers say db2 is: "
                                 "following the servers"]
    assert {h: m["role"] for h, m in topology["members"].items()} == {
        "db1": "replica", "db2": "primary", "db3": "replica"}


def test_a_new_cluster_follows_the_inventory():
    topology = decide({"db1": _member("a", binlog_state="", slave_pos=""),
                       "db2": _member("b", binlog_state="", slave_pos="")},
                      inventory_primary="db1")
    assert topology["bootstrap"] and topology["primary"] == "db1"
    assert topology["members"]["db2"]["role"] == "detached"


def test_replicas_pointing_at_different_sources_are_refused_naming_each():
    topology = decide({
        "db1": _member("a", read_only=False),
        "db2": _member("b", source="a"),
        "db3": _member("c", source="b"),
    }, inventory_primary="db1")
    assert topology["primary"] is None
    assert "db2 replicates from db1" in topology["disagreements"][0]
    assert "db3 replicates from db2" in topology["disagreements"][0]


def test_a_replica_of_an_unknown_address_is_refused():
    topology = decide({"db1": _member("a", read_only=False), "db2": _member("b", source="z")},
                      inventory_primary="db1")
    assert topology["disagreements"] == [
        "db2 replicates from z, which is no member of the cluster"]


def test_a_dead_primary_is_found_through_its_replicas():
    dead = dict(address=None, variables=dict(unreachable=True, msg="container not running"),
                replica=dict(unreachable=True, msg="container not running"))
    topology = decide({"db1": dead,
                       "db2": _member("b", source="a", slave_pos="0-1-12", io=False),
                       "db3": _member("c", source="a", slave_pos="0-1-11", io=False)},
                      inventory_primary="db1")
    assert topology["primary"] == "db1" and not topology["primary_answers"]
    assert topology["most_advanced"] == "db2"
    assert "does not answer" in topology["table"][1]


def test_lag_above_the_limit_makes_a_replica_unhealthy():
    topology = decide({"db1": _member("a", read_only=False),
                       "db2": _member("b", source="a", lag=50),
                       "db3": _member("c", source="a", lag=1)},
                      inventory_primary="db1", lag_limit=10)
    assert not topology["members"]["db2"]["healthy"] and topology["members"]["db3"]["healthy"]


def test_a_new_replica_is_seeded_from_the_most_advanced_healthy_replica_never_the_primary():
    topology = decide({"db1": _member("a", read_only=False, binlog_state="0-1-20"),
                       "db2": _member("b", source="a", slave_pos="0-1-18"),
                       "db3": _member("c", source="a", slave_pos="0-1-20"),
                       "db4": _member("d", binlog_state="", slave_pos="")},
                      inventory_primary="db1", lag_limit=10)
    assert seed_source(topology, "db4") == "db3"
    # A replica being rebuilt never seeds itself; equals are broken by name.
    assert seed_source(topology, "db3") == "db2"
    topology["members"]["db2"]["gtid_slave_pos"] = "0-1-20"
    assert seed_source(topology, "db4") == "db2"


def test_lagging_stopped_or_errant_replicas_do_not_seed_then_the_primary_does():
    topology = decide({"db1": _member("a", read_only=False, binlog_state="0-1-20"),
                       "db2": _member("b", source="a", lag=50),
                       "db3": _member("c", source="a", sql=False),
                       "db4": _member("d", binlog_state="", slave_pos="")},
                      inventory_primary="db1", lag_limit=10)
    assert seed_source(topology, "db4") == "db1"
    topology["members"]["db2"].update(healthy=True, errant=["0-2-5"])
    assert seed_source(topology, "db4") == "db1"


def test_no_seed_source_when_no_replica_is_healthy_and_the_primary_is_down():
    dead = dict(address=None, variables=dict(unreachable=True, msg="container not running"),
                replica=dict(unreachable=True, msg="container not running"))
    topology = decide({"db1": dead, "db2": _member("b", source="a", io=False),
                       "db3": _member("c", binlog_state="", slave_pos="")},
                      inventory_primary="db1")
    with pytest.raises(TopologyError, match="no member can seed db3: no healthy replica of the "
                                            "primary and the primary db1 does not answer"):
        seed_source(topology, "db3")


# ---------------------------------------------------------------- real servers over loopback

REPL_PASSWORD = "repl-Password-0123"


def _state(server):
    with server.connect() as conn, conn.cursor(dict_cursor()) as cur:
        cur.execute("SELECT @@read_only AS read_only, @@log_bin AS log_bin, "
                    "@@gtid_strict_mode AS gtid_strict_mode, "
                    "@@log_slave_updates AS log_slave_updates, @@server_id AS server_id, "
                    "@@gtid_binlog_pos AS gtid_binlog_pos, "
                    "@@gtid_binlog_state AS gtid_binlog_state, "
                    "@@gtid_slave_pos AS gtid_slave_pos, @@gtid_current_pos AS gtid_current_pos")
        variables = cur.fetchone()
        cur.execute("SHOW SLAVE STATUS")
        status = cur.fetchone()
    replica = dict(status, Is_Replica=True) if status else dict(Is_Replica=False)
    return dict(address="127.0.0.1:%d" % server.port, variables=dict(query_result=[[variables]]),
                replica=dict(replica, Master_Host="127.0.0.1:%s" % replica.get("Master_Port"))
                if status else replica)


def dict_cursor():
    import pymysql.cursors
    return pymysql.cursors.DictCursor


def _run(server, *statements):
    with server.connect() as conn, conn.cursor() as cur:
        for statement in statements:
            cur.execute(statement)
        return cur.fetchall()


def _point(replica, source):
    _run(replica, "STOP SLAVE", "SET GLOBAL read_only = 1",
         "CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT=%d, MASTER_USER='repl', "
         "MASTER_PASSWORD='%s', MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=1"
         % (source.port, REPL_PASSWORD), "START SLAVE")


def _wait_applied(replica, position, timeout=60):
    assert _run(replica, "SELECT MASTER_GTID_WAIT('%s', %d)" % (position, timeout))[0][0] == 0


@pytest.fixture(scope="module")
def trio():
    servers = [MariaDBInstance(server_id=i) for i in (1, 2, 3)]
    try:
        for server in servers:
            server.start()
        primary = servers[0]
        _run(primary, "CREATE USER repl@'127.0.0.1' IDENTIFIED BY '%s'" % REPL_PASSWORD,
             "GRANT REPLICATION SLAVE ON *.* TO repl@'127.0.0.1'",
             "CREATE DATABASE drill", "CREATE TABLE drill.t (id INT PRIMARY KEY)",
             "INSERT INTO drill.t VALUES (1), (2)")
        for replica in servers[1:]:
            _point(replica, primary)
        position = _run(primary, "SELECT @@gtid_binlog_pos")[0][0]
        for replica in servers[1:]:
            _wait_applied(replica, position)
        yield servers
    finally:
        for server in servers:
            server.stop()


def _members(servers):
    return {"db%d" % (i + 1): _state(server) for i, server in enumerate(servers)}


def test_real_servers_primary_replicas_and_the_most_advanced(trio):
    db1, db2, db3 = trio
    _run(db3, "STOP SLAVE SQL_THREAD")
    try:
        _run(db1, "INSERT INTO drill.t VALUES (3)")
        _wait_applied(db2, _run(db1, "SELECT @@gtid_binlog_pos")[0][0])
        topology = decide(_members(trio), inventory_primary="db1")
        assert topology["primary"] == "db1" and not topology["disagreements"]
        assert topology["most_advanced"] == "db2"
        assert not topology["members"]["db3"]["healthy"]
        assert all(not m.get("errant") for m in topology["members"].values())
    finally:
        _run(db3, "START SLAVE SQL_THREAD")


def test_real_servers_two_writable_members_are_refused_naming_both(trio):
    _run(trio[2], "SET GLOBAL read_only = 0")
    try:
        topology = decide(_members(trio), inventory_primary="db1")
    finally:
        _run(trio[2], "SET GLOBAL read_only = 1")
    assert topology["primary"] is None
    (message,) = topology["disagreements"]
    assert "more than one member is writable" in message
    assert "db1: read_only=OFF, does not replicate" in message
    assert "db3: read_only=OFF, replicates from db1" in message


def test_real_servers_switchover_then_an_errant_write_on_the_isolated_old_primary(trio):
    db1, db2, db3 = trio
    # Planned switchover by hand, the way playbooks/switchover.yml does it.
    _run(db1, "SET GLOBAL read_only = 1")
    position = _run(db1, "SELECT @@gtid_binlog_pos")[0][0]
    _wait_applied(db2, position)
    _run(db2, "STOP SLAVE", "RESET SLAVE ALL", "SET GLOBAL read_only = 0")
    _run(db2, "CREATE USER IF NOT EXISTS repl@'127.0.0.1' IDENTIFIED BY '%s'" % REPL_PASSWORD,
         "GRANT REPLICATION SLAVE ON *.* TO repl@'127.0.0.1'")
    _point(db3, db2)
    # db1 stays out (as if cut off) and takes a write the cluster never sees.
    _run(db1, "SET GLOBAL read_only = 0", "INSERT INTO drill.t VALUES (100)",
         "SET GLOBAL read_only = 1")
    _run(db2, "INSERT INTO drill.t VALUES (200)")
    deadline = time.monotonic() + 60
    topology = decide(_members(trio), inventory_primary="db1")
    while topology["members"]["db3"]["gtid_slave_pos"] != _run(
            db2, "SELECT @@gtid_binlog_pos")[0][0] and time.monotonic() < deadline:
        time.sleep(0.2)
        topology = decide(_members(trio), inventory_primary="db1")
    assert topology["primary"] == "db2", topology["disagreements"]
    assert topology["members"]["db1"]["role"] == "detached"
    old_position = parse_gtid_list(_run(db1, "SELECT @@gtid_binlog_pos")[0][0])
    (gtid,) = ["%d-%d-%d" % (d, s, n) for (d, s), n in old_position.items()]
    assert topology["members"]["db1"]["errant"] == [gtid]  # exactly the write db2 never saw
    assert topology["members"]["db3"]["errant"] == []
    assert "ERRANT " + gtid in next(row for row in topology["table"] if row.startswith("db1"))
