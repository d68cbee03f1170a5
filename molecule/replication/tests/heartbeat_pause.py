"""Pause and resume the replication heartbeat (used by conftest.py and the drills).

Exact comparisons between members need the primary quiet.

site.yml installs the replication heartbeat (roles/mariadb_health): the live primary writes a row
every second, so its GTID position and the checksum of pos_health.heartbeat move on between two
reads. Every drill except the health ones (which test the heartbeat itself) therefore runs with
the event scheduler off on every member, and it is switched on again afterwards on the writable
member, as the replication role does (every member starts with the scheduler off).
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from testinfra.utils.ansible_runner import AnsibleRunner

PROJECT = Path(__file__).resolve().parents[3]
INVENTORY = os.environ.get("MOLECULE_INVENTORY_FILE") or str(PROJECT / "inventory" / "lab")
MEMBERS = sorted(set().union(*(AnsibleRunner(INVENTORY).get_hosts(group)
                               for group in ("primary", "replicas", "late_replicas"))))
HEARTBEAT_DEFINER = "pos_heartbeat"


def _mariadb(member, query):
    return subprocess.run(["docker", "exec", member, "mariadb", "-N", "-B", "-e", query],
                          capture_output=True, text=True, check=False, timeout=120)


def pause_heartbeat(timeout=60):
    """Event scheduler off everywhere, and no heartbeat write still running (polled, not slept)."""
    for member in MEMBERS:
        _mariadb(member, "SET GLOBAL event_scheduler = OFF")  # a stopped member: nothing to do
    deadline = time.monotonic() + timeout
    while True:
        busy = [m for m in MEMBERS if _mariadb(
            m, "SELECT COUNT(*) FROM information_schema.processlist "
               f"WHERE user = '{HEARTBEAT_DEFINER}'").stdout.strip() not in ("", "0")]
        if not busy:
            return
        assert time.monotonic() < deadline, f"heartbeat writes still running on {busy}"
        time.sleep(0.2)


def resume_heartbeat():
    for member in MEMBERS:
        if _mariadb(member, "SELECT @@read_only").stdout.strip() == "0":
            _mariadb(member, "SET GLOBAL event_scheduler = ON")


