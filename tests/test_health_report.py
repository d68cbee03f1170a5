"""The health report logic (module_utils/mariadb_pos/health.py) on literal inputs as the servers
and pt-table-checksum print them, and the module through ansible against a temp directory."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from module_utils.mariadb_pos.health import (
    HealthError,
    parse_checksum_output,
    status_markdown,
    status_rows,
    status_svg,
    status_table,
    summarize_check,
)
from tests.support.health_cluster import ANSIBLE_PLAYBOOK, REPO_ROOT, ansible_env

PT_OUTPUT = """Checking if all tables can be checksummed ...
Starting checksum ...
            TS ERRORS  DIFFS     ROWS  DIFF_ROWS  CHUNKS SKIPPED    TIME TABLE
11-29T08:45:18      0      0       30          0       1       0   0.030 pos.Customer
11-29T08:45:18      0      1     1000          0       4       0   0.330 pos.OrderLine
"""


def test_pt_table_checksum_lines_are_read_per_table():
    assert parse_checksum_output(PT_OUTPUT) == {
        "pos.Customer": dict(errors=0, rows=30, chunks=1, skipped=0),
        "pos.OrderLine": dict(errors=0, rows=1000, chunks=4, skipped=0)}


def test_a_differing_chunk_is_named_with_table_member_and_bounds_and_a_repair():
    diff = dict(db="pos", tbl="OrderLine", chunk=3, chunk_index="PRIMARY", lower_boundary="501",
                upper_boundary="750", this_cnt=250, master_cnt=250)
    result = summarize_check("db1", PT_OUTPUT, {
        "db2": dict(caught_up=True, diffs=[], dsn="h=10.0.0.2,P=3306"),
        "db3": dict(caught_up=True, diffs=[diff], dsn="h=10.0.0.3,P=3306")})
    assert result["status"] == "differences"
    assert result["differences"] == [
        "pos.OrderLine differs on db3 from the primary db1: chunk 3 (PRIMARY 501..750): "
        "250 rows on the replica, 250 on the primary"]
    assert result["members"] == {"db2": "same", "db3": "differs"}
    assert any("--sync-to-master h=10.0.0.3,P=3306" in line for line in result["repair"])
    assert any("rejoin.yml -e rebuild=HOST" in line for line in result["repair"])
    assert result["table"][2].split() == ["pos.OrderLine", "1000", "4", "same", "DIFF", "1",
                                          "chunk"]


def test_a_replica_that_did_not_catch_up_is_not_compared_and_the_check_is_incomplete():
    result = summarize_check("db1", PT_OUTPUT, {"db2": dict(caught_up=False, diffs=[]),
                                                "db3": dict(error="Access denied")})
    assert result["status"] == "incomplete"
    assert result["members"] == {"db2": "not compared", "db3": "not compared"}
    assert "db2 did not apply the checksums in time" in result["incomplete"][0]
    assert result["incomplete"][1] == "db3: Access denied"


def test_no_table_checked_or_tool_errors_are_never_a_clean_verdict():
    assert summarize_check("db1", "Starting checksum ...", {"db2": dict(caught_up=True)})[
        "status"] == "incomplete"
    result = summarize_check("db1", PT_OUTPUT, {"db2": dict(caught_up=True)},
                             checksum_errors="Error checksumming table pos.t: denied\n")
    assert result["status"] == "incomplete"
    assert result["incomplete"] == ["pt-table-checksum: Error checksumming table pos.t: denied"]


def test_no_primary_is_refused():
    with pytest.raises(HealthError, match="no primary"):
        summarize_check(None, PT_OUTPUT, {})


def _topology():
    replica = dict(io_running=True, sql_running=False, last_io_error="",
                   last_sql_error="Duplicate entry '5' for key 'PRIMARY'")
    return dict(primary="db1", members={
        "db1": dict(role="primary", answered=True, read_only=False, gtid_binlog_pos="0-1-9",
                    gtid_slave_pos="", errant=[]),
        "db2": dict(role="replica", answered=True, read_only=True, gtid_binlog_pos="0-1-7",
                    gtid_slave_pos="0-1-7", errant=[], replica=replica),
        "db3": dict(role="down", answered=False, error="container not running")})


def test_status_rows_say_what_is_wrong_per_member():
    rows = status_rows(_topology(), {"db1": dict(lag=0.3, tls="server yes"),
                                     "db2": dict(lag=42.0, tls="server yes, link on")},
                       last_check=dict(primary="db1", members={"db2": "differs"}), max_lag=5)
    by = {r["member"]: r for r in rows}
    assert by["db1"]["healthy"] and by["db1"]["check"] == "primary (reference)"
    assert by["db2"]["problems"] == ["SQL thread not running",
                                     "Duplicate entry '5' for key 'PRIMARY'",
                                     "heartbeat 42.0 s old (limit 5 s)",
                                     "data differs (last check)"]
    assert by["db3"]["problems"][0] == "does not answer: container not running"
    table = status_table(rows)
    assert table[0].split()[:3] == ["member", "role", "ro"]
    assert table[2].startswith("db2") and "42.0 s" in table[2] and "Yes/No" in table[2]
    markdown = status_markdown("lab", rows, None)
    assert "| db3 | down |" in markdown and "No check has run yet" in markdown
    svg = status_svg(rows, 5)
    assert svg.count("<rect") == 3 and 'stroke-dasharray="6,4"' in svg  # db2's stopped link


def test_the_module_writes_the_report_and_a_same_verdict_is_no_change(tmp_path):
    playbook = tmp_path / "play.json"
    topology = _topology()
    playbook.write_text(json.dumps([{"hosts": "localhost", "gather_facts": False, "tasks": [
        {"name": "check", "mariadb_health_report": {
            "kind": "check", "topology": topology, "checksum_output": PT_OUTPUT,
            "replicas": {"db2": {"caught_up": True, "diffs": []}},
            "report_dir": str(tmp_path / "r"), "timestamp": "{{ now() }}"}},
        {"name": "status", "mariadb_health_report": {
            "kind": "status", "topology": topology, "extras": {"db1": {"lag": 0.2}},
            "max_lag": 5, "report_dir": str(tmp_path / "r")}, "register": "status"},
        {"name": "show", "ansible.builtin.debug": {"var": "status.table"}}]}]))

    def play(*options):
        completed = subprocess.run(
            [str(ANSIBLE_PLAYBOOK), "-i", "localhost,", "-c",
             "local", str(playbook), "-e", f"ansible_python_interpreter={sys.executable}",
             *options], cwd=REPO_ROOT, env=ansible_env(), capture_output=True, text=True,
            check=False, timeout=300)
        assert completed.returncode == 0, completed.stdout[-3000:]
        return completed.stdout

    out = play("--check")
    assert not (tmp_path / "r").exists()  # check mode writes nothing
    out = play()
    assert json.loads((tmp_path / "r" / "last_check.json").read_text())["status"] == "consistent"
    assert (tmp_path / "r" / "status.md").exists() and (tmp_path / "r" / "topology.svg").exists()
    out = play()
    assert "changed=0" in out
