"""Atomicity of mariadb_csv_etl: kill -9 of the module process, or of the server, in the middle
of the load transaction leaves the previous data intact, and a rerun ends in the same table
contents as an uninterrupted load."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.support.etl_target import REPO_ROOT, new_target, run_etl
from tests.support.mariadb_instance import MariaDBInstance
from tests.support.pos_csv_generator import generate

# the second data set replaces the first: its deletes are intended
EVERYTHING = dict(max_delete_percent=100, delete_rejected=True)
RUNNER = ("import json, sys; sys.path[:0] = [sys.argv[2], sys.argv[2] + '/module_utils']; "
          "from tests.support.etl_target import run_etl; run_etl(json.loads(sys.argv[1]))")


def start_etl(params: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", RUNNER, json.dumps(params), str(REPO_ROOT)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def wait_for_orderline_load(server, database: str, process, timeout: float = 120) -> tuple:
    """Block until the ETL is loading OrderLine: the last statement of its load transaction,
    after the other tables' rows were written in the same transaction."""
    conn = server.connect()
    patterns = (f"%INTO TABLE `{database}`.`OrderLine`%", f"INSERT INTO `{database}`.`OrderLine`%")
    try:
        deadline = time.monotonic() + timeout
        with conn.cursor() as cursor:
            while time.monotonic() < deadline:
                cursor.execute("SELECT ID, INFO FROM information_schema.PROCESSLIST "
                               "WHERE ID <> CONNECTION_ID() AND (INFO LIKE %s OR INFO LIKE %s)",
                               patterns)
                row = cursor.fetchone()
                if row:
                    return row
                if process.poll() is not None:
                    pytest.fail("the ETL finished before its transaction was caught: "
                                + process.stderr.read().decode()[-2000:])
                time.sleep(0.001)
    finally:
        conn.close()
    pytest.fail("the ETL never loaded OrderLine")
    return None, ""


def wait_until_rolled_back(server, thread_id: int | None = None, timeout: float = 120) -> None:
    """Wait until the killed run's connection is gone and its transaction rolled back (only
    that connection's: other tests may hold transactions on the shared server). Without a
    thread id (server restarted), until no transaction is left (recovered ones show id 0)."""
    conn = server.connect()
    try:
        deadline = time.monotonic() + timeout
        with conn.cursor() as cursor:
            while time.monotonic() < deadline:
                # INNODB_TRX is a cache refreshed when read after more than 0.1 s
                time.sleep(0.15)
                if thread_id is None:
                    cursor.execute("SELECT COUNT(*) FROM information_schema.INNODB_TRX")
                else:
                    cursor.execute(
                        "SELECT (SELECT COUNT(*) FROM information_schema.INNODB_TRX "
                        "WHERE trx_mysql_thread_id = %s) + (SELECT COUNT(*) FROM "
                        "information_schema.PROCESSLIST WHERE ID = %s)", (thread_id, thread_id))
                if cursor.fetchone()[0] == 0:
                    return
    finally:
        conn.close()
    pytest.fail("the killed ETL's transaction was not rolled back")


def last_run_id(tgt):
    if not tgt.query("SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s "
                     "AND TABLE_NAME = 'etl_run'", (tgt.etl_db,))[0][0]:
        return None
    return tgt.query(f"SELECT MAX(run_id) FROM `{tgt.etl_db}`.etl_run")[0][0]


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    base = tmp_path_factory.mktemp("atomic")
    generate(base / "a", 20_000, seed=21)
    generate(base / "b", 60_000, seed=22)
    return base / "a", base / "b"


@pytest.mark.parametrize("previous", ["empty", "loaded"])
def test_kill_module_process_mid_load(mariadb_server, datasets, previous):
    files_a, files_b = datasets
    tgt = new_target(mariadb_server)
    if previous == "loaded":
        run_etl(tgt.params(files_a))
    before, run_before = tgt.checksums(), last_run_id(tgt)
    process = start_etl(tgt.params(files_b, **EVERYTHING))
    thread_id, statement = wait_for_orderline_load(mariadb_server, tgt.db, process)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL
    wait_until_rolled_back(mariadb_server, thread_id)
    assert "OrderLine" in statement
    assert tgt.checksums() == before  # previous data intact
    assert last_run_id(tgt) == run_before  # and the audit says so
    result = run_etl(tgt.params(files_b, **EVERYTHING))
    assert result["changed"] and result["data_changed"]
    fresh = new_target(mariadb_server)
    run_etl(fresh.params(files_b))
    assert tgt.checksums(unit_price=False) == fresh.checksums(unit_price=False)
    assert not run_etl(tgt.params(files_b))["changed"]


@pytest.mark.parametrize("previous", ["empty", "loaded"])
def test_server_killed_mid_load_then_restarted(datasets, previous):
    """"empty": the first load (bulk insert into the empty tables); "loaded": a reload."""
    files_a, files_b = datasets
    with MariaDBInstance() as server:
        tgt = new_target(server)
        if previous == "loaded":
            run_etl(tgt.params(files_a))
        before, run_before = tgt.checksums(), last_run_id(tgt)
        process = start_etl(tgt.params(files_b, **EVERYTHING))
        wait_for_orderline_load(server, tgt.db, process)
        server.kill()
        process.wait(timeout=60)
        assert process.returncode != 0
        server.start()
        wait_until_rolled_back(server)
        assert tgt.checksums() == before
        assert last_run_id(tgt) == run_before
        run_etl(tgt.params(files_b, **EVERYTHING))
        fresh = new_target(server)
        run_etl(fresh.params(files_b))
        assert tgt.checksums(unit_price=False) == fresh.checksums(unit_price=False)



def test_a_duplicate_key_in_the_first_loads_bulk_insert_fails_and_commits_nothing(
        mariadb_server, tmp_path):
    """The first load fills empty tables by InnoDB's bulk insert (checks off); on MariaDB 10.11
    a bulk insert that meets a duplicate key commits the table empty without an error. The
    cleaning keeps one row per key, so the duplicate is written into the load's file here: the
    load step must fail naming the table and the key, and nothing is stored."""
    import pymysql
    from mariadb_pos import etl
    from mariadb_pos.db import connect

    target = new_target(mariadb_server)
    conn = connect(login_user="root", login_unix_socket=mariadb_server.socket,
                   **etl.CONNECTION_OPTIONS)
    runner = etl.Runner(conn, str(tmp_path), database=target.db, etl_database=target.etl_db)
    runner.open()
    try:
        path = tmp_path / "city.tsv"
        path.write_text("01001\tAgawam\tMA\n01002\tAmherst\tMA\n01001\tAgawam\tMA\n")
        conn.begin()
        runner.sql("SET SESSION foreign_key_checks = 0, unique_checks = 0")
        # A server that refuses the duplicate itself raises the server's error instead.
        with pytest.raises((etl.EtlError, pymysql.err.IntegrityError),
                           match="Duplicate entry '01001' for key 'PRIMARY'") as refused:
            runner.load_tsv(f"`{target.db}`.`City`", ("zip", "city", "state"), str(path), 3,
                            "table City")
        if isinstance(refused.value, etl.EtlError):
            assert str(refused.value).startswith("loading table City raised 1 warnings, "
                                                 "nothing loaded")
        conn.rollback()
    finally:
        runner.close()
        conn.close()
    assert target.counts()["City"] == 0
