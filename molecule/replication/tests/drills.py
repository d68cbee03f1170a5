"""Which scenario runs the drills (backup, health, operations).

The drills exercise the playbooks' logic, which is the same on both releases; each release's
server settings, replication and heartbeat are checked in both scenarios. Running the drills a
second time on Debian 13 would add ~15 minutes to CI: they run in the Debian 12 `replication`
scenario, and on Debian 13 with LAB_DRILLS=1.
"""

from __future__ import annotations

import os

import pytest

drills = pytest.mark.skipif(
    os.environ.get("MOLECULE_SCENARIO_NAME", "replication") != "replication"
    and os.environ.get("LAB_DRILLS") != "1",
    reason="the drills run in the Debian 12 replication scenario (LAB_DRILLS=1 runs them here)")
