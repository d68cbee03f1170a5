"""Which scenario runs which drills.

The drills exercise the playbooks' logic, which is the same on both releases; each release's
server settings, replication and heartbeat are checked in both scenarios. Running every drill in
both scenarios would add ~25 minutes to CI, and running them all in one would make that scenario
the critical path: each drill module runs in one scenario, named by its marker.

- ``drills`` (operations, health): the Debian 12 ``replication`` scenario.
- ``backup_drills`` (backup, point-in-time restore, rebuild): the Debian 13
  ``replication-debian13`` scenario. Its mariadb-backup (11.8) writes mariadb_backup_* files;
  10.11's xtrabackup_* go through the same tasks (roles/mariadb_backup/tasks/receive.yml) when the
  Debian 12 scenario seeds its late replica by backup stream.

LAB_DRILLS=1 runs every drill in any scenario; outside molecule (against the lab, no
MOLECULE_SCENARIO_NAME) every drill runs.
"""

from __future__ import annotations

import os

import pytest


def _runs_in(scenario):
    here = os.environ.get("MOLECULE_SCENARIO_NAME")
    return pytest.mark.skipif(
        here is not None and here != scenario and os.environ.get("LAB_DRILLS") != "1",
        reason=f"these drills run in the {scenario} scenario (LAB_DRILLS=1 runs them here)")


drills = _runs_in("replication")
backup_drills = _runs_in("replication-debian13")
