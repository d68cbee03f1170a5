"""A cluster built by release 1 (files/sql 001-007: 001 and 003 are still in files/sql, the others
are kept in tests/data/schema_release_1) upgrades to
the current layout (numbered migrations + definitions/ + the materialized-view registry) through
roles/pos_schema: every view, routine, trigger, event and table keeps its exact definition (the
dead log_order_change is dropped; the definitions changed on purpose since, CHANGED_SINCE_RELEASE_1,
become the fresh install's), the rows stay, and the next run reports changed=0."""

from __future__ import annotations

import hashlib
import re
import shutil

import pytest

from tests.support.pos_schema_role import PosSchemaRole, recap_changed
from tests.support.schema import (
    MATERIALIZED_VIEWS,
    REPO_ROOT,
    SQL_DIR,
    create_schema,
    refresh_on_new_connection,
    rows,
    scalar,
    seed,
)

DB = "pos_t_upgrade"
USERS = {"app": "t_upg_app", "report": "t_upg_report", "etl": "t_upg_etl"}
RELEASE_1_RETIRED = REPO_ROOT / "tests" / "data" / "schema_release_1"
RELEASE_1 = sorted([SQL_DIR / "001_base_tables.sql", SQL_DIR / "003_materialized_views.sql",
                    *RELEASE_1_RETIRED.glob("*.sql")], key=lambda path: path.name)
# Release 1's roles/pos_schema created this table and recorded each file after importing it.
RELEASE_1_VERSION_TABLE = """CREATE TABLE IF NOT EXISTS schema_version (
    filename VARCHAR(255) NOT NULL,
    sha256 CHAR(64) NOT NULL,
    applied_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    CONSTRAINT schema_version_filename_pk PRIMARY KEY (filename)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci"""


def build_release_1(server, database: str, remote_dir) -> None:
    """What release 1's role left: files imported with the client and recorded, copies of them
    in the remote directory, full-refreshed materialized views, some rows."""
    server.client(f"DROP DATABASE IF EXISTS {database}; CREATE DATABASE {database} "
                  "CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
    server.client(RELEASE_1_VERSION_TABLE, database=database)
    remote_dir.mkdir(parents=True, exist_ok=True)
    for path in RELEASE_1:
        server.client(file=path, database=database)
        conn = server.connect(database=database)
        with conn.cursor() as cur:
            cur.execute("INSERT INTO schema_version (filename, sha256) VALUES (%s, %s)",
                        (path.name, hashlib.sha256(path.read_bytes()).hexdigest()))
        conn.close()
        shutil.copy(path, remote_dir / path.name)
    conn = server.connect(database=database)
    seed(conn, customers=4, products=3)
    with conn.cursor() as cur:
        cur.execute("CALL place_order(1, '[{\"product_id\": 1, \"quantity\": 2}]', @o)")
        cur.execute("CALL place_order(2, '[{\"product_id\": 2, \"quantity\": 1}, "
                    "{\"product_id\": 3, \"quantity\": 4}]', @o)")
        cur.execute("CALL change_product_price(1, 9.99)")
        for table in MATERIALIZED_VIEWS:
            cur.execute("CALL refresh_materialized_view(%s)", (table,))
    conn.close()


def definitions(server, database: str) -> dict:
    """SHOW CREATE of every view, routine, trigger, event and table (creation times left out),
    and the registry rows."""
    conn = server.connect(database=database)
    found = {}

    def names(sql):
        return [r[0] for r in rows(conn, sql, (database,))]

    for view in names("SELECT TABLE_NAME FROM information_schema.VIEWS WHERE TABLE_SCHEMA = %s"):
        found[f"view {view}"] = rows(conn, f"SHOW CREATE VIEW `{view}`")
    for kind, name in rows(conn, "SELECT ROUTINE_TYPE, ROUTINE_NAME FROM information_schema."
                                 "ROUTINES WHERE ROUTINE_SCHEMA = %s", (database,)):
        found[f"{kind.lower()} {name}"] = rows(conn, f"SHOW CREATE {kind} `{name}`")
    for trigger, order in rows(conn, "SELECT TRIGGER_NAME, ACTION_ORDER FROM information_schema."
                                     "TRIGGERS WHERE TRIGGER_SCHEMA = %s", (database,)):
        found[f"trigger {trigger}"] = (order, rows(conn, f"SHOW CREATE TRIGGER `{trigger}`")[0][:6])
    for event in names("SELECT EVENT_NAME FROM information_schema.EVENTS WHERE EVENT_SCHEMA = %s"):
        found[f"event {event}"] = rows(conn, f"SHOW CREATE EVENT `{event}`")
    for table in names("SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s "
                       "AND TABLE_TYPE = 'BASE TABLE' AND TABLE_NAME <> 'schema_version'"):
        found[f"table {table}"] = rows(conn, f"SHOW CREATE TABLE `{table}`")
    found["registry"] = rows(conn, "SELECT mv_table, source_view, key_columns "
                                   "FROM MaterializedView ORDER BY mv_table")
    conn.close()
    return found


def contents(server, database: str) -> dict:
    conn = server.connect(database=database)
    tables = ("City", "Customer", "Product", "Order", "OrderLine", "PriceHistory",
              *MATERIALIZED_VIEWS)
    found = {t: rows(conn, f"SELECT * FROM `{t}` ORDER BY 1, 2") for t in tables}
    conn.close()
    return found


@pytest.fixture(scope="module")
def upgrade(mariadb_server, tmp_path_factory):
    role = PosSchemaRole(mariadb_server, tmp_path_factory.mktemp("pos_upgrade"), DB, USERS)
    build_release_1(mariadb_server, DB, role.remote_dir)
    before = definitions(mariadb_server, DB), contents(mariadb_server, DB)
    first = role.playbook()
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-2000:]
    yield dict(role=role, before=before, first=first)
    role.drop()


def test_release_1_had_the_objects_compared(upgrade):
    kinds = [name.split()[0] for name in upgrade["before"][0]]
    assert (kinds.count("view"), kinds.count("procedure"), kinds.count("trigger"),
            kinds.count("event")) == (5, 9, 12, 1)
    assert "procedure log_order_change" in upgrade["before"][0]


# Definitions changed on purpose since release 1: the upgrade replaces them (with the fresh
# install's, test_the_upgraded_schema_equals_a_fresh_install) and keeps every other one.
CHANGED_SINCE_RELEASE_1 = {
    # issue 12: the lines are summed before the names are joined (same rows, faster full build)
    "view ProductBuyers",
}


def test_upgrade_keeps_every_definition_and_row_and_drops_the_dead_procedure(mariadb_server,
                                                                            upgrade):
    assert recap_changed(upgrade["first"].stdout) > 0
    before_definitions, before_rows = upgrade["before"]
    after_definitions = definitions(mariadb_server, DB)
    assert "procedure log_order_change" not in after_definitions
    expected = {k: v for k, v in before_definitions.items() if k != "procedure log_order_change"}
    assert sorted(after_definitions) == sorted(expected)
    for name, definition in expected.items():
        if name in CHANGED_SINCE_RELEASE_1:
            assert after_definitions[name] != definition, f"{name} was not replaced"
        else:
            assert after_definitions[name] == definition, name
    assert contents(mariadb_server, DB) == before_rows


def test_upgrade_records_the_new_files_and_keeps_release_1_records(mariadb_server, upgrade):
    conn = mariadb_server.connect(database=DB)
    recorded = [r[0] for r in rows(conn, "SELECT filename FROM schema_version ORDER BY filename")]
    release_1 = [p.name for p in RELEASE_1]
    assert recorded == sorted([*release_1, "008_changelog_delta_columns.sql",
                               "definitions/events.sql", "definitions/routines.sql",
                               "definitions/triggers.sql", "definitions/views.sql"])
    # Release 1's copies of its retired files are gone from the host; the current ones are there.
    remote = upgrade["role"].remote_dir
    assert sorted(p.name for p in remote.glob("*.sql")) == [
        "001_base_tables.sql", "003_materialized_views.sql", "008_changelog_delta_columns.sql"]
    assert scalar(conn, "SELECT COUNT(*) FROM information_schema.ROUTINES "
                        "WHERE ROUTINE_SCHEMA = %s AND ROUTINE_NAME = 'log_order_change'",
                  (DB,)) == 0


def test_the_run_after_the_upgrade_changes_nothing(upgrade):
    second = upgrade["role"].playbook()
    assert second.returncode == 0, second.stdout[-3000:]
    assert recap_changed(second.stdout) == 0, second.stdout[-3000:]


def test_the_upgraded_schema_equals_a_fresh_install(mariadb_server, upgrade):
    fresh = "pos_t_upgrade_fresh"
    create_schema(mariadb_server, fresh)
    for table in MATERIALIZED_VIEWS:
        refresh_on_new_connection(mariadb_server, fresh, table, mode="full")
    try:
        upgraded, installed = definitions(mariadb_server, DB), definitions(mariadb_server, fresh)
        assert sorted(upgraded) == sorted(installed)
        for name in upgraded:
            if name.startswith("table "):  # AUTO_INCREMENT differs: the upgraded one has rows
                assert [re.sub(r" AUTO_INCREMENT=\d+", "", r[1]) for r in upgraded[name]] == [
                    re.sub(r" AUTO_INCREMENT=\d+", "", r[1]) for r in installed[name]], name
            else:
                assert upgraded[name] == installed[name], name
    finally:
        mariadb_server.client(f"DROP DATABASE IF EXISTS {fresh}")
