"""The one schema loader (module_utils/mariadb_pos/schema_files.py, run by the module
mariadb_schema for roles/pos_schema) against a real server: kinds of file, refusals, the
materialized-view registry, failures, and the one identifier rule shared with the roles."""

from __future__ import annotations

import importlib.util
import re
import shutil

import pytest
from mariadb_pos.identifiers import identifier_problem
from mariadb_pos.schema_files import DEFINITION_GROUPS, SchemaFileError, apply_schema, client_runner

from tests.support.schema import (
    REGISTRY,
    REPO_ROOT,
    SQL_DIR,
    apply_schema_files,
    create_schema,
    refresh_on_new_connection,
    rows,
    scalar,
)

DB = "pos_t_loader"
DEFINITIONS = [f"definitions/{group}.sql" for group in DEFINITION_GROUPS]
MIGRATIONS = sorted(p.name for p in SQL_DIR.glob("[0-9][0-9][0-9]_*.sql"))


@pytest.fixture
def sql_dir(tmp_path):
    """A copy of files/sql the test may edit."""
    copy = tmp_path / "sql"
    shutil.copytree(SQL_DIR, copy, ignore=shutil.ignore_patterns("examples"))
    return copy


@pytest.fixture
def fresh(mariadb_server):
    mariadb_server.client(f"DROP DATABASE IF EXISTS {DB}; CREATE DATABASE {DB}")
    yield DB
    mariadb_server.client(f"DROP DATABASE IF EXISTS {DB}")


def test_a_fresh_database_gets_every_file_once_then_nothing(mariadb_server, fresh):
    first = apply_schema_files(mariadb_server, fresh)
    # (003_materialized_views.sql seeded the registry rows release 1 had: nothing to change.)
    assert (first["changed"], first["migrations"], first["definitions"],
            first["registry_changed"]) == (True, MIGRATIONS, DEFINITIONS, False)
    conn = mariadb_server.connect(database=fresh)
    assert [r[0] for r in rows(conn, "SELECT filename FROM schema_version ORDER BY filename")] \
        == sorted(MIGRATIONS + DEFINITIONS)
    assert rows(conn, "SELECT mv_table, source_view, key_columns FROM MaterializedView "
                      "ORDER BY mv_table") == sorted(
        (e["table"], e["view"], ",".join(e["key_columns"])) for e in REGISTRY)
    second = apply_schema_files(mariadb_server, fresh)
    assert (second["changed"], second["migrations"], second["definitions"],
            second["registry_changed"], second["retired"]) == (False, [], [], False, [])


def test_check_mode_reports_everything_and_writes_nothing(mariadb_server, fresh):
    checked = apply_schema_files(mariadb_server, fresh, check_mode=True)
    assert (checked["changed"], checked["migrations"], checked["definitions"]) == (
        True, MIGRATIONS, DEFINITIONS)
    conn = mariadb_server.connect()
    assert scalar(conn, "SELECT COUNT(*) FROM information_schema.TABLES "
                        "WHERE TABLE_SCHEMA = %s", (fresh,)) == 0


def test_a_changed_definition_file_alone_is_applied_again(mariadb_server, fresh, sql_dir):
    apply_schema_files(mariadb_server, fresh, sql_dir)
    path = sql_dir / "definitions" / "routines.sql"
    path.write_text(path.read_text().replace("COMMENT 'report on one customer'",
                                             "COMMENT 'report on one customer (edited)'"))
    again = apply_schema_files(mariadb_server, fresh, sql_dir)
    assert (again["migrations"], again["definitions"]) == ([], ["definitions/routines.sql"])
    assert scalar(mariadb_server.connect(), "SELECT ROUTINE_COMMENT FROM information_schema."
                  "ROUTINES WHERE ROUTINE_SCHEMA = %s AND ROUTINE_NAME = 'customer_report'",
                  (fresh,)) == "report on one customer (edited)"
    assert apply_schema_files(mariadb_server, fresh, sql_dir)["changed"] is False


def test_a_dropped_object_comes_back_with_force_definitions(mariadb_server, fresh):
    apply_schema_files(mariadb_server, fresh)
    mariadb_server.client("DROP TRIGGER Product_after_update", database=fresh)
    assert apply_schema_files(mariadb_server, fresh)["changed"] is False  # files unchanged
    forced = apply_schema_files(mariadb_server, fresh, force_definitions=True)
    assert forced["definitions"] == DEFINITIONS
    assert scalar(mariadb_server.connect(), "SELECT COUNT(*) FROM information_schema.TRIGGERS "
                  "WHERE TRIGGER_SCHEMA = %s AND TRIGGER_NAME = 'Product_after_update'",
                  (fresh,)) == 1


@pytest.mark.parametrize(("recorded", "new_file", "message"), [
    ("005_procedures.sql", "005_add_notes.sql",
     "005_add_notes.sql: number 005 was used by 005_procedures.sql, already applied"),
    (None, "004_late.sql", "004_late.sql: numbered below 008_changelog_delta_columns.sql"),
])
def test_a_new_migration_must_take_the_next_free_number(mariadb_server, fresh, sql_dir,
                                                        recorded, new_file, message):
    apply_schema_files(mariadb_server, fresh, sql_dir)
    if recorded:  # as release 1 recorded it
        with mariadb_server.connect(database=fresh).cursor() as cur:
            cur.execute("INSERT INTO schema_version (filename, sha256) VALUES (%s, %s)",
                        (recorded, "0" * 64))
    (sql_dir / new_file).write_text("CREATE TABLE IF NOT EXISTS Note (x INT);\n")
    with pytest.raises(SchemaFileError, match=re.escape(message)):
        apply_schema_files(mariadb_server, fresh, sql_dir)
    assert scalar(mariadb_server.connect(), "SELECT COUNT(*) FROM information_schema.TABLES "
                  "WHERE TABLE_SCHEMA = %s AND TABLE_NAME = 'Note'", (fresh,)) == 0


def test_an_unknown_or_missing_definition_file_is_refused(mariadb_server, fresh, sql_dir):
    (sql_dir / "definitions" / "functions.sql").write_text("-- nothing\n")
    with pytest.raises(SchemaFileError, match=r"unknown file\(s\) functions.sql"):
        apply_schema_files(mariadb_server, fresh, sql_dir)
    (sql_dir / "definitions" / "functions.sql").unlink()
    (sql_dir / "definitions" / "events.sql").unlink()
    with pytest.raises(SchemaFileError, match=r"missing events\.sql"):
        apply_schema_files(mariadb_server, fresh, sql_dir)


def test_a_failing_file_is_named_and_not_recorded(mariadb_server, fresh, sql_dir):
    apply_schema_files(mariadb_server, fresh, sql_dir)
    broken = sql_dir / "900_broken.sql"
    broken.write_text("CREATE TABLE Broken (x INT);\nALTER TABLE NoSuchTable ADD y INT;\n")
    with pytest.raises(SchemaFileError) as failure:
        apply_schema_files(mariadb_server, fresh, sql_dir)
    message = str(failure.value)
    assert message.startswith("900_broken.sql: ") and "NoSuchTable" in message
    assert "applied before it in this run: nothing" in message
    assert "the next run starts again with it" in message
    conn = mariadb_server.connect(database=fresh)
    assert scalar(conn, "SELECT COUNT(*) FROM schema_version WHERE filename = '900_broken.sql'") \
        == 0
    broken.write_text("CREATE TABLE IF NOT EXISTS Broken (x INT);\n")
    fixed = apply_schema_files(mariadb_server, fresh, sql_dir)
    assert fixed["migrations"] == ["900_broken.sql"] and fixed["definitions"] == DEFINITIONS


def test_the_registry_is_what_the_table_holds(mariadb_server, fresh):
    apply_schema_files(mariadb_server, fresh)
    conn = mariadb_server.connect(database=fresh)
    with conn.cursor() as cur:  # a hand edit is put back
        cur.execute("UPDATE MaterializedView SET key_columns = 'product_id' "
                    "WHERE mv_table = 'ProductBuyersMV'")
        cur.execute("INSERT INTO ChangeLog (mv_table, customer_id) VALUES ('DailySalesMV', 1)")
    run = client_runner(login_unix_socket=mariadb_server.socket)
    two = [e for e in REGISTRY if e["table"] != "DailySalesMV"]
    result = apply_schema(mariadb_server.connect(), fresh, str(SQL_DIR), two, run)
    assert result["registry_changed"] is True
    assert [r[0] for r in rows(conn, "SELECT mv_table FROM MaterializedView ORDER BY 1")] == \
        sorted(e["table"] for e in two)
    assert scalar(conn, "SELECT key_columns FROM MaterializedView "
                        "WHERE mv_table = 'ProductBuyersMV'") == "customer_id,product_id"
    # The removed entry's ChangeLog rows went with it; the triggers now log two tables only.
    assert scalar(conn, "SELECT COUNT(*) FROM ChangeLog WHERE mv_table = 'DailySalesMV'") == 0
    assert apply_schema_files(mariadb_server, fresh)["registry_changed"] is True  # back to 3


@pytest.mark.parametrize(("entry", "message"), [
    (dict(table="DailySalesMV", view="NoSuchView", key_columns=["sale_date"]),
     "DailySalesMV: view pos_t_loader.NoSuchView does not exist"),
    (dict(table="DailySalesMV", view="DailySales", key_columns=["order_day"]),
     "key column order_day is not a column of DailySalesMV"),
    (dict(table="Daily-Sales", view="DailySales", key_columns=["sale_date"]),
     "entry 1: invalid table 'Daily-Sales'"),
    (dict(table="DailySalesMV", view="DailySales"), "needs exactly the keys"),
])
def test_a_registry_entry_that_does_not_fit_the_schema_fails_loudly(mariadb_server, fresh,
                                                                    entry, message):
    run = client_runner(login_unix_socket=mariadb_server.socket)
    with pytest.raises(SchemaFileError, match=re.escape(message)):
        apply_schema(mariadb_server.connect(), fresh, str(SQL_DIR), [entry], run)


def test_a_64_character_database_name_works_and_65_is_refused_everywhere(mariadb_server):
    name = "pos_" + "x" * 60
    create_schema(mariadb_server, name)
    try:
        result = refresh_on_new_connection(mariadb_server, name, "DailySalesMV", mode="full")
        assert result["rows"] == 0 and result["database"] == name
    finally:
        mariadb_server.client(f"DROP DATABASE IF EXISTS {name}")
    too_long = name + "y"
    expected = identifier_problem(too_long, "database")
    assert "65 characters, at most 64 allowed" in expected
    run = client_runner(login_unix_socket=mariadb_server.socket)
    with pytest.raises(SchemaFileError) as refused:
        apply_schema(mariadb_server.connect(), too_long, str(SQL_DIR), REGISTRY, run)
    assert str(refused.value) == expected
    # The roles apply the same rule through the project's filter plugin.
    spec = importlib.util.spec_from_file_location(
        "mariadb_pos_filters", REPO_ROOT / "plugins" / "filter" / "mariadb_pos.py")
    filters = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(filters)
    problems = filters.FilterModule().filters()["mariadb_pos_identifier_problems"]
    assert problems([name, too_long, "pos-db"], "database") == [
        expected, identifier_problem("pos-db", "database")]
