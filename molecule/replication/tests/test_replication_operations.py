"""Operations drills on the replication scenario's cluster (after test_replication.py, by name).

The playbooks a user runs (switchover.yml, failover.yml, rejoin.yml, site.yml) against the four
containers, late replica included, while a writer on the control node commits numbered rows through
whichever member is the primary and records every acknowledged commit. Containers are killed and
cut off the network for real. The drills end with the inventory's primary back in charge.

Run in the Debian 12 replication scenario (see drills.py; LAB_DRILLS=1 runs them on Debian 13).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from drills import drills
from grown_cluster import grown_cluster_inventory
from heartbeat_pause import pause_heartbeat, resume_heartbeat
from test_connections import PROXIES, WriterPortWatch
from test_replication import (
    ALL_REPLICAS,
    CLUSTER_CA,
    LATE_REPLICAS,
    PRIMARY,
    PROJECT,
    host,
    sql,
    table_checksums,
    value,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
from tests.support.writer import CREATE_TABLE, Writer

pytestmark = drills

MEMBERS = [PRIMARY, *ALL_REPLICAS]
# The scenario's Docker network (the primary's only one).
NETWORK = next(iter(json.loads(subprocess.run(
    ["docker", "inspect", "-f", "{{json .NetworkSettings.Networks}}", PRIMARY],
    capture_output=True, text=True, check=True).stdout)))
WRITER_USER = "drill_writer"
WRITER_PASSWORD = uuid.uuid4().hex


# ----------------------------------------------------------------------------- helpers


def run_playbook(playbook, *extra, inventory_dir):
    # molecule exports ANSIBLE_FORCE_COLOR, which beats ANSIBLE_NOCOLOR: the recap must be parsed
    env = {key: val for key, val in os.environ.items() if key != "ANSIBLE_FORCE_COLOR"}
    env.update(ANSIBLE_CONFIG=str(PROJECT / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    started = time.monotonic()
    result = subprocess.run(
        ["ansible-playbook", "-i", str(os.path.dirname(os.environ["MOLECULE_INVENTORY_FILE"])),
         "-i", str(inventory_dir / "grown.yml"), playbook, *extra],
        cwd=PROJECT, env=env, capture_output=True, text=True, timeout=1200, check=False)
    result.stdout = re.sub(r"\x1b\[[0-9;]*m", "", result.stdout)
    result.flat = " ".join(result.stdout.split())
    result.seconds = time.monotonic() - started
    print(f"{playbook} {' '.join(extra)}: rc={result.returncode} in {result.seconds:.0f} s")
    return result


def changed_counts(result):
    return {m.group(1): int(m.group(2))
            for m in re.finditer(r"^(\S+)\s+: ok=\d+\s+changed=(\d+)", result.stdout, re.M)}


def assert_ok_and_unchanged(result):
    assert result.returncode == 0, result.stdout[-4000:]
    counts = changed_counts(result)
    assert counts and not any(counts.values()), (counts, result.stdout[-4000:])


def site_changes_nothing(drill_dir):
    """site.yml reports changed=0. The drills run with the heartbeat paused (scheduler off on every
    member) and the role runs the primary's scheduler: resumed first, as a user's cluster is."""
    resume_heartbeat()
    result = play(drill_dir, "site.yml")
    assert_ok_and_unchanged(result)
    return result


def address(name):
    out = subprocess.run(["docker", "inspect", "-f", "{{json .NetworkSettings.Networks}}", name],
                         capture_output=True, text=True, check=True).stdout
    networks = json.loads(out) or {}
    return next((n["IPAddress"] for n in networks.values() if n.get("IPAddress")), None)


def running(name):
    return subprocess.run(["docker", "inspect", "-f", "{{.State.Running}}", name],
                          capture_output=True, text=True, check=False).stdout.strip() == "true"


def live_primary(members=MEMBERS):
    writable = [m for m in members if running(m) and value(m, "SELECT @@read_only") == "0"]
    assert len(writable) == 1, f"writable members: {writable}"
    return writable[0]


def wait_until(condition, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.5)
    raise AssertionError(f"not within {timeout} s: {what}")


def wait_for_members(primary, members, timeout=120):
    """Every member has applied everything the primary has binlogged so far."""
    position = value(primary, "SELECT @@GLOBAL.gtid_binlog_pos")
    for member in members:
        if member != primary:
            waited = value(member, f"SELECT MASTER_GTID_WAIT('{position}', {timeout})")
            assert waited == "0", f"{member} did not reach {position} within {timeout} s"


def assert_replicates_from(member, primary):
    status = {}
    out = host(member).check_output("mariadb -e 'SHOW SLAVE STATUS\\G'")
    for line in out.splitlines():
        key, _, val = line.strip().partition(": ")
        status[key] = val
    assert status.get("Master_Host") == address(primary), (member, status.get("Master_Host"))
    assert status["Slave_IO_Running"] == "Yes", (member, status.get("Last_IO_Error"))
    assert status["Slave_SQL_Running"] == "Yes", (member, status.get("Last_SQL_Error"))
    assert status["Using_Gtid"] == "Slave_Pos"
    assert value(member, "SELECT @@read_only") == "1"


def assert_cluster(primary, members=MEMBERS):
    """One writable primary, every other member a healthy read-only replica, same data."""
    assert live_primary(members) == primary
    pause_heartbeat()  # a drill may have restarted a member (its scheduler is on again)
    wait_for_members(primary, members)
    for member in members:
        if member != primary:
            assert_replicates_from(member, primary)
    expected = table_checksums(primary)
    for member in members:
        assert table_checksums(member) == expected, member
    # Scheduled events fire on the primary only, each with the definer it was created with (root's
    # events ignore read_only: a restarted old primary would write errant transactions).
    for member in members:
        definer = value(member, "SELECT definer FROM information_schema.events "
                                "WHERE event_name = 'heartbeat_beat'")
        assert definer == "pos_heartbeat@localhost", (member, definer)
    assert value(primary, "SELECT COUNT(*) FROM information_schema.events "
                          "WHERE event_schema = 'pos' AND status <> 'ENABLED'") == "0"
    for member in members:
        if member != primary:
            assert value(member, "SELECT COUNT(*) FROM information_schema.events "
                                 "WHERE event_schema = 'pos' AND status <> 'SLAVESIDE_DISABLED'"
                         ) == "0", member


def member_address(name):
    """The writer's view: the member's address while its container runs."""
    return address(name) if running(name) else None


def writer_for(name):
    return Writer(f"{name}-{uuid.uuid4().hex[:8]}", MEMBERS, member_address, WRITER_USER,
                  WRITER_PASSWORD, "lab_verify", ssl_ca=str(CLUSTER_CA))


def lost_on(writer, member):
    rows = {int(r[0]) for r in sql(member, "SELECT seq FROM lab_verify.drill "
                                           f"WHERE run = '{writer.run_id}'")}
    return writer.missing(rows)


@pytest.fixture(scope="module")
def drill(tmp_path_factory):
    inventory_dir = tmp_path_factory.mktemp("drills")
    (inventory_dir / "grown.yml").write_text(grown_cluster_inventory(LATE_REPLICAS))
    # On the live primary: root ignores read_only, and a write on a replica would be errant.
    primary = live_primary()
    sql(primary, CREATE_TABLE.format(table="lab_verify.drill"))
    sql(primary, f"CREATE OR REPLACE USER {WRITER_USER}@'%' IDENTIFIED BY '{WRITER_PASSWORD}'")
    sql(primary, f"GRANT SELECT, INSERT ON lab_verify.* TO {WRITER_USER}@'%'")
    wait_for_members(primary, MEMBERS)
    return inventory_dir


def play(drill_dir, playbook, *extra):
    return run_playbook(playbook, *extra, inventory_dir=drill_dir)


def writing(name):
    writer = writer_for(name)
    writer.start()
    writer.wait_for(20, 60)
    return writer


# ----------------------------------------------------------------------------- drills


def switch_while_writing(drill, old, new):
    """switchover.yml from old to new while the writer commits; nothing acknowledged is lost."""
    assert live_primary() == old
    writer = writing("switchover")
    # A client of the proxy's writer port (docs/connections.md) follows without a change.
    watch = WriterPortWatch(new, WRITER_USER, WRITER_PASSWORD) if PROXIES else None
    if watch:
        watch.start()
    result = play(drill, "playbooks/switchover.yml", "-e", f"new_primary={new}")
    writer.wait_for(len(writer.acked) + 20, 120)
    writer.stop()
    assert result.returncode == 0, result.stdout[-4000:]
    if watch:
        watch.finish(old)
    assert "member role read_only source" in result.flat  # the per-member table
    assert_cluster(new)
    for member in MEMBERS:
        assert lost_on(writer, member) == [], member
    print(f"switchover {old} -> {new}: {len(writer.acked)} acknowledged commits, 0 lost, "
          f"write-unavailability window {writer.window():.2f} s, playbook {result.seconds:.0f} s")


def test_switchover_while_writing_then_site_keeps_the_new_primary(drill):
    new = ALL_REPLICAS[0]
    switch_while_writing(drill, PRIMARY, new)

    again = play(drill, "playbooks/switchover.yml", "-e", f"new_primary={new}")
    assert_ok_and_unchanged(again)
    assert f"{new} already is the primary: nothing to do." in again.flat

    site = site_changes_nothing(drill)
    assert (f"the inventory names {PRIMARY} as the primary; the servers say {new} "
            "is: following the servers") in site.flat
    assert_cluster(new)


def test_bad_input_is_refused_naming_the_host_and_the_cause(drill):
    primary = live_primary()
    nobody = play(drill, "playbooks/switchover.yml", "-e", "new_primary=db-nobody")
    assert nobody.returncode != 0
    assert "Switchover refused, nothing was changed: new_primary=db-nobody is not a member" \
        in nobody.flat

    answering = play(drill, "playbooks/failover.yml")
    assert answering.returncode != 0
    assert f"Failover refused, nothing was changed: the primary {primary} answers" \
        in answering.flat

    lagging = ALL_REPLICAS[1]
    sql(lagging, "STOP SLAVE SQL_THREAD")
    try:
        result = play(drill, "playbooks/switchover.yml", "-e", f"new_primary={lagging}")
    finally:
        sql(lagging, "START SLAVE SQL_THREAD")
    assert result.returncode != 0
    assert f"{lagging} is not a healthy replica of {primary} (IO thread Yes, SQL thread No" \
        in result.flat

    writable = ALL_REPLICAS[2]
    sql(writable, "SET GLOBAL read_only = 0")
    try:
        result = play(drill, "site.yml")
    finally:
        sql(writable, "SET GLOBAL read_only = 1")
    assert result.returncode != 0
    assert "The cluster members disagree; nothing was changed" in result.flat
    assert "more than one member is writable" in result.flat
    assert f"{primary}: read_only=OFF, does not replicate" in result.flat
    assert f"{writable}: read_only=OFF, replicates from {primary}" in result.flat
    assert_cluster(primary)


def test_switchover_whose_target_cannot_catch_up_aborts_and_leaves_the_old_primary_writable(drill):
    primary = live_primary()
    target = next(m for m in MEMBERS if m != primary)
    # A session on the target holds a global read lock: its SQL thread cannot apply the next
    # transaction, although both threads run and the lag is small.
    lock = subprocess.Popen(["docker", "exec", target, "mariadb", "-e",
                             "FLUSH TABLES WITH READ LOCK; SELECT SLEEP(300)"])
    try:
        wait_until(lambda: value(target, "SELECT COUNT(*) FROM information_schema.processlist "
                                         "WHERE info LIKE 'SELECT SLEEP(300)%'") == "1",
                   30, "the read lock on the target")
        sql(primary, "INSERT INTO lab_verify.drill (run, seq) "
                     f"VALUES ('catch-up-{uuid.uuid4().hex[:8]}', 1)")
        result = play(drill, "playbooks/switchover.yml", "-e", f"new_primary={target}",
                      "-e", "mariadb_replication_catchup_timeout=5")
    finally:
        for (session,) in sql(target, "SELECT id FROM information_schema.processlist "
                                      "WHERE info LIKE 'SELECT SLEEP(300)%'"):
            sql(target, f"KILL {session}")
        lock.wait(timeout=60)
    assert result.returncode != 0
    assert ("aborted at step 'Check that the target caught up within its deadline': "
            f"{target} did not apply the old primary's last transaction") in result.flat
    assert f"{primary} is writable again and still the primary" in result.flat
    assert_cluster(primary)


def test_failover_after_the_primary_is_killed_then_it_rejoins(drill):
    old = live_primary()
    survivors = [m for m in MEMBERS if m != old]
    # Quiesce first so the killed primary holds nothing the replicas lack (it rejoins cleanly);
    # the errant case is the next drill.
    wait_for_members(old, MEMBERS)
    subprocess.run(["docker", "kill", old], check=True, capture_output=True)
    killed_at = time.monotonic()
    writer = writer_for("failover")
    writer.start()
    result = play(drill, "playbooks/failover.yml")
    assert result.returncode == 0, result.stdout[-4000:]
    writer.wait_for(20, 120)
    writer.stop()
    new = live_primary(survivors)
    assert f"{new} is the primary now" in result.flat
    assert f"{old} did not answer: any transaction it committed that no replica received is " \
           "unknown while it is down" in result.flat
    assert_cluster(new, survivors)
    first_ack = writer.acked[0][1]
    print(f"failover {old} -> {new}: writes unavailable {first_ack - killed_at:.1f} s after the "
          f"kill (playbook {result.seconds:.0f} s); {len(writer.acked)} commits after, 0 lost")
    for member in survivors:
        assert lost_on(writer, member) == [], member

    subprocess.run(["docker", "start", old], check=True, capture_output=True)
    wait_until(lambda: host(old).run("mariadb -e 'SELECT 1'").rc == 0, 180,
               f"MariaDB answers on {old}")
    # It came back read-only with its scheduler off, as configured: it writes nothing of its own.
    assert value(old, "SELECT @@read_only") == "1"
    assert value(old, "SELECT @@event_scheduler") == "OFF"
    rejoin = play(drill, "playbooks/rejoin.yml")
    assert rejoin.returncode == 0, rejoin.stdout[-4000:]
    assert_cluster(new)
    site_changes_nothing(drill)
    assert live_primary() == new


def test_errant_transaction_on_a_cut_off_primary_is_refused_then_rebuilt(drill):
    old = live_primary()
    wait_for_members(old, MEMBERS)
    subprocess.run(["docker", "network", "disconnect", NETWORK, old], check=True)
    sql(old, "INSERT INTO lab_verify.drill (run, seq) VALUES ('errant', 1)")  # rebuilt: gone
    errant = value(old, "SELECT @@GLOBAL.gtid_binlog_pos")
    subprocess.run(["docker", "kill", old], check=True, capture_output=True)
    subprocess.run(["docker", "network", "connect", NETWORK, old], check=True)
    failover = play(drill, "playbooks/failover.yml")
    assert failover.returncode == 0, failover.stdout[-4000:]
    new = live_primary([m for m in MEMBERS if m != old])

    subprocess.run(["docker", "start", old], check=True, capture_output=True)
    wait_until(lambda: host(old).run("mariadb -e 'SELECT 1'").rc == 0, 180,
               f"MariaDB answers on {old}")
    refused = play(drill, "playbooks/rejoin.yml")
    assert refused.returncode != 0
    assert f"{old} holds transactions the primary {new} never received (errant GTIDs: " \
           f"{errant})" in refused.flat
    assert value(old, "SELECT @@read_only") == "1"
    assert "Yes" not in host(old).check_output("mariadb -e 'SHOW SLAVE STATUS\\G'")
    command = re.search(r"(ansible-playbook -i .*? playbooks/rejoin.yml -e rebuild=[\w.-]+)",
                        refused.flat).group(1)
    rebuilt = subprocess.run(shlex.split(command), cwd=PROJECT, capture_output=True, text=True,
                             env={**os.environ, "ANSIBLE_NOCOLOR": "1"}, timeout=1200, check=False)
    assert rebuilt.returncode == 0, rebuilt.stdout[-4000:]
    assert value(old, "SELECT COUNT(*) FROM lab_verify.drill WHERE run = 'errant'") == "0"
    assert_cluster(new)
    site_changes_nothing(drill)


def test_switchover_back_to_the_inventory_primary_while_writing(drill):
    switch_while_writing(drill, live_primary(), PRIMARY)
