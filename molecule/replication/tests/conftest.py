"""Every drill except the health ones runs with the replication heartbeat paused (see
heartbeat_pause.py): exact GTID positions and checksums are compared between members."""

from __future__ import annotations

import os
import re

import pytest
import testinfra
from heartbeat_pause import INVENTORY, pause_heartbeat, resume_heartbeat
from testinfra.utils.ansible_runner import AnsibleRunner


@pytest.fixture(scope="session", autouse=True)
def release_of_the_scenario():
    """The lab's release comes from LAB_DEBIAN (.config/molecule/config.yml): a scenario named
    ...-debianNN run without LAB_DEBIAN=NN would test the wrong release and pass."""
    scenario = os.environ.get("MOLECULE_SCENARIO_NAME", "replication")
    match = re.search(r"debian(\d+)$", scenario)
    expected = match.group(1) if match else "12"
    found = {}
    for name in AnsibleRunner(INVENTORY).get_hosts("all"):  # the lab outside molecule
        release = testinfra.get_host(f"docker://{name}").check_output(
            ". /etc/os-release && echo $VERSION_ID")
        found[name] = release.strip()
    wrong = {name: release for name, release in found.items() if release != expected}
    if wrong:
        pytest.exit(f"scenario {scenario} tests Debian {expected}, but the lab runs "
                    + ", ".join(f"{name}: Debian {release}" for name, release in wrong.items())
                    + f": run it with LAB_DEBIAN={expected} (scripts/test.sh does)", returncode=1)


@pytest.fixture(autouse=True)
def quiet_primary(request):
    if request.module.__name__.endswith("test_replication_health"):
        yield
        return
    pause_heartbeat()
    yield
    resume_heartbeat()
