"""site.yml's preflight refuses a bad inventory before any host is changed, naming the cause."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PLAYBOOK = REPO / ".venv" / "bin" / "ansible-playbook"
if not PLAYBOOK.exists():  # running outside the project's venv
    PLAYBOOK = Path(sys.executable).with_name("ansible-playbook")


PREFLIGHT = REPO / "playbooks" / "preflight.yml"


def run_preflight(tmp_path: Path, inventory: str,
                  playbook: Path = PREFLIGHT) -> subprocess.CompletedProcess:
    (tmp_path / "hosts.yml").write_text(inventory)
    return subprocess.run(
        [str(PLAYBOOK), "-i", str(tmp_path / "hosts.yml"), str(playbook)],
        cwd=REPO, capture_output=True, text=True, timeout=300, check=False,
        env={**os.environ, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_HOST_KEY_CHECKING": "False"},
    )


def inventory(primaries: list[str], replicas: list[str], host_vars: str = "") -> str:
    def hosts(names):
        return "".join(f"            {name}:{host_vars}\n" for name in names) or "            {}\n"
    return (
        "all:\n  vars:\n    ansible_connection: local\n"
        f"    ansible_python_interpreter: {sys.executable}\n"
        "  children:\n    mariadb:\n      children:\n"
        f"        primary:\n          hosts:\n{hosts(primaries)}"
        f"        replicas:\n          hosts:\n{hosts(replicas)}"
    )


def test_an_inventory_without_primary_fails_with_a_clear_message(tmp_path):
    result = run_preflight(tmp_path, inventory([], ["db2", "db3"]))
    assert result.returncode != 0
    assert "The inventory group 'primary' must hold exactly one host; it holds 0: none." in (
        " ".join(result.stdout.split()))


def test_an_inventory_with_two_primaries_names_both(tmp_path):
    result = run_preflight(tmp_path, inventory(["db1", "db2"], ["db3"]))
    assert result.returncode != 0
    assert "it holds 2: db1, db2." in " ".join(result.stdout.split())


def test_a_host_in_both_groups_is_refused(tmp_path):
    result = run_preflight(tmp_path, inventory(["db1"], ["db1", "db2"]))
    assert result.returncode != 0
    assert "db1 is in both 'primary' and 'replicas'." in " ".join(result.stdout.split())


def test_an_unreachable_replica_stops_every_host_before_any_change(tmp_path):
    # db3 is reached over SSH on a closed loopback port: it cannot answer.
    text = inventory(["db1"], ["db2", "db3"]).replace(
        "            db3:\n",
        "            db3:\n              ansible_connection: ssh\n"
        "              ansible_host: 127.0.0.1\n              ansible_port: 9\n")
    # What site.yml does: the preflight, then plays that change hosts.
    site = tmp_path / "site.yml"
    site.write_text(
        f"- ansible.builtin.import_playbook: {REPO / 'playbooks' / 'preflight.yml'}\n"
        "- hosts: mariadb\n  gather_facts: false\n  tasks:\n"
        "    - ansible.builtin.debug:\n        msg: A_HOST_WAS_CHANGED\n")
    result = run_preflight(tmp_path, text, playbook=site)
    assert result.returncode != 0
    assert "fatal: [db3]: UNREACHABLE!" in result.stdout
    assert "connect to host 127.0.0.1 port 9" in result.stdout
    # The reachable hosts stop too: nothing runs on a half cluster.
    assert "A_HOST_WAS_CHANGED" not in result.stdout


def test_a_good_inventory_passes(tmp_path):
    result = run_preflight(tmp_path, inventory(["db1"], ["db2", "db3"]))
    assert result.returncode == 0, result.stdout[-2000:]
