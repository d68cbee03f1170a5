"""playbooks/pos_etl.yml end to end with ansible-playbook against localhost (connection local,
root over the test server's unix socket): load, idempotent rerun, check/diff mode, reload."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.etl_target import REPO_ROOT, target_fixture
from tests.support.pos_csv_generator import generate
from tests.support.schema import MATERIALIZED_VIEWS

__all__ = ["target_fixture"]  # the `target` fixture

PLAYBOOK = REPO_ROOT / "playbooks" / "pos_etl.yml"
ANSIBLE_PLAYBOOK = Path(sys.executable).with_name("ansible-playbook")


def play(tmp_path: Path, extra: dict, *options: str, succeeds: bool = True) -> tuple[int, str]:
    inventory = tmp_path / "inventory.ini"
    inventory.write_text("[primary]\nlocalhost ansible_connection=local "
                         f"ansible_python_interpreter={sys.executable}\n")
    variables = tmp_path / "vars.json"
    variables.write_text(json.dumps({"ansible_become": False, **extra}))
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO_ROOT / "ansible.cfg"),
               ANSIBLE_NOCOLOR="1", ANSIBLE_LOCALHOST_WARNING="0")
    completed = subprocess.run(
        [str(ANSIBLE_PLAYBOOK), "-i", str(inventory), str(PLAYBOOK), "-e", f"@{variables}",
         *options], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300,
        check=False)
    output = completed.stdout + completed.stderr
    assert (completed.returncode == 0) is succeeds, output[-5000:]
    recap = re.search(r"localhost\s*:\s*ok=\d+\s+changed=(\d+)", output)
    assert recap, output[-3000:]
    return int(recap.group(1)), output


@pytest.mark.skipif(not ANSIBLE_PLAYBOOK.exists(), reason="ansible-playbook not in the venv")
def test_playbook_load_rerun_check_and_reload(target, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(REPO_ROOT / "files" / "data", data)
    extra = {"pos_etl_data_dir": str(data), "pos_etl_remote_dir": str(tmp_path / "remote"),
             "pos_etl_database": target.db, "pos_etl_etl_database": target.etl_db,
             "pos_etl_login_unix_socket": target.server.socket,
             "pos_etl_max_delete_percent": 100}

    changed, output = play(tmp_path, extra)
    assert changed >= 3, output  # folder, files, load (and the refresh)
    counts = target.counts()
    assert counts["OrderLine"] > 0 and counts["Customer"] > 0
    assert "rows read" in output
    mv_rows = target.query(f"SELECT COUNT(*) FROM `{target.db}`.DailySalesMV")[0][0]
    assert mv_rows > 0  # the full refresh ran after the load

    gtid, before = target.gtid(), target.checksums()
    changed, output = play(tmp_path, extra)
    assert changed == 0, output  # idempotent: nothing copied, nothing loaded, no refresh
    assert target.gtid() == gtid

    generate(data, 600, seed=31, write_manifest=False)  # new files at the source
    changed, output = play(tmp_path, extra, "--check", "--diff")
    assert changed >= 1
    assert "rows (+" in output  # the per-table diff
    assert target.gtid() == gtid and target.checksums() == before

    changed, output = play(tmp_path, extra)
    assert changed >= 2
    assert target.counts()["OrderLine"] != counts["OrderLine"]
    assert_views_materialized(target)

    # One customer's order lines removed at the source: few keys changed, so the role follows
    # the ETL's advice and refreshes incrementally, deleting that customer's ProductBuyersMV rows.
    customer = drop_one_customers_lines(data)
    assert target.query(f"SELECT COUNT(*) FROM `{target.db}`.ProductBuyersMV "
                        "WHERE customer_id = %s", (customer,))[0][0] > 0
    changed, output = play(tmp_path, extra)
    assert changed >= 2
    assert "Materialized views: incremental refresh" in output, output[-3000:]
    assert target.query(f"SELECT COUNT(*) FROM `{target.db}`.ProductBuyersMV "
                        "WHERE customer_id = %s", (customer,))[0][0] == 0
    assert_views_materialized(target)


def drop_one_customers_lines(data: Path) -> int:
    """Remove from orderlines.csv every line of the orders of the first order's customer (a
    customer with order lines); that customer's id."""
    orders = list(csv.reader((data / "orders.csv").open(newline="")))[1:]
    lines = list(csv.reader((data / "orderlines.csv").open(newline="")))
    with_lines = {line[0] for line in lines[1:]}
    customer = next(order[1] for order in orders if order[0] in with_lines)
    dropped = {order[0] for order in orders if order[1] == customer}
    with (data / "orderlines.csv").open("w", newline="") as out:
        csv.writer(out).writerows([lines[0], *(line for line in lines[1:]
                                               if line[0] not in dropped)])
    return int(customer)


def assert_views_materialized(target) -> None:
    """Each registered materialized view table holds exactly its view's rows."""
    for table, view in MATERIALIZED_VIEWS.items():
        stored, expected = (sorted(map(repr, target.query(f"SELECT * FROM `{target.db}`.{name}")))
                            for name in (table, view))
        assert stored == expected, table


@pytest.mark.skipif(not ANSIBLE_PLAYBOOK.exists(), reason="ansible-playbook not in the venv")
def test_a_database_name_the_modules_refuse_stops_the_role_first(tmp_path):
    """The role checks its names with the modules' own rule (filter
    mariadb_pos_identifier_problems) before it copies or loads anything."""
    too_long = "p" * 65
    extra = {"pos_etl_remote_dir": str(tmp_path / "remote"), "pos_etl_database": too_long}
    _changed, output = play(tmp_path, extra, succeeds=False)
    assert f"invalid database '{too_long}': 65 characters, at most 64 allowed" in output
    assert not (tmp_path / "remote").exists()
