"""roles/pos_schema and the mariadb_view_refresh module through Ansible, against the test server.

The playbook playbooks/pos_schema.yml runs on localhost (connection local) as the primary, with
the fixture's socket; it must report changed=0 the second time, apply a new migration in place
without losing rows, refuse an edited migration, and leave three accounts that can do exactly
what they need.
"""

from __future__ import annotations

import hashlib
import re

import pymysql
import pytest
from mariadb_pos.view_refresh import refresh

from tests.support.pos_schema_role import PosSchemaRole, recap_changed
from tests.support.schema import MATERIALIZED_VIEWS, rows, scalar

DB, ETL_DB = "pos_t_role", "pos_t_role_etl"
USERS = {"app": "t_role_app", "report": "t_role_report", "etl": "t_role_etl"}


@pytest.fixture(scope="module")
def lab(mariadb_server, tmp_path_factory):
    role = PosSchemaRole(mariadb_server, tmp_path_factory.mktemp("pos_role"), DB, USERS)
    first = role.playbook()
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-2000:]
    yield dict(server=mariadb_server, playbook=role.playbook,
               adhoc=lambda args, *more: role.module("mariadb_view_refresh", args, *more),
               first=first, passwords=role.passwords, sql_dir=role.sql_dir, role=role)
    role.drop()


def root(lab):
    return lab["server"].connect(database=DB)


def as_user(lab, kind, database=DB):
    return lab["server"].connect(user=USERS[kind], password=lab["passwords"][kind],
                                 database=database)


def test_first_run_applies_every_file_and_records_it(lab):
    assert recap_changed(lab["first"].stdout) > 0
    conn = root(lab)
    recorded = rows(conn, "SELECT filename, sha256 FROM schema_version ORDER BY filename")
    files = [*lab["sql_dir"].glob("*.sql"), *lab["sql_dir"].glob("definitions/*.sql")]
    expected = sorted((str(p.relative_to(lab["sql_dir"])),
                       hashlib.sha256(p.read_bytes()).hexdigest()) for p in files)
    assert recorded == expected and len(recorded) == 7
    assert rows(conn, "SELECT mv_table FROM MaterializedView WHERE last_refresh_mode = 'full' "
                      "ORDER BY mv_table") == [(t,) for t in sorted(MATERIALIZED_VIEWS)]
    assert "pos_schema_app_password" not in lab["first"].stdout
    assert lab["passwords"]["app"] not in lab["first"].stdout + lab["first"].stderr


def test_second_run_changes_nothing_nor_does_a_check_run(lab):
    second = lab["playbook"]()
    assert recap_changed(second.stdout) == 0, second.stdout[-3000:]
    checked = lab["playbook"]("--check")
    assert checked.returncode == 0, checked.stdout[-3000:]
    assert recap_changed(checked.stdout) == 0, checked.stdout[-3000:]


def test_a_name_the_modules_would_refuse_is_refused_by_the_role_first(lab):
    result = lab["playbook"]("-e", "pos_schema_etl_database=pos-etl", "-e",
                             '{"pos_schema_report_views": ["DailySales", "' + "V" * 65 + '"]}')
    assert result.returncode != 0
    assert "invalid database 'pos-etl': letters, digits and _ only" in result.stdout
    assert "invalid view '" + "V" * 65 + "': 65 characters, at most 64 allowed" in result.stdout


def test_module_refreshes_after_data_changes_through_ansible(lab):
    conn = root(lab)
    with conn.cursor() as cur:
        cur.execute("INSERT INTO City VALUES ('00501', 'Holtsville', 'NY')")
        cur.execute("INSERT INTO Customer (customer_id, first_name, last_name, email, "
                    "address_line1, birthdate, zip) VALUES (1, 'Ann', 'Lee', 'ann@example.com', "
                    "'1 Road', '1980-02-03', '00501')")
        cur.execute("INSERT INTO Product VALUES (1, 'Pen', 1.50, 100), (2, 'Ink', 4.00, 10)")
        cur.execute("CALL place_order(1, '[{\"product_id\": 1, \"quantity\": 3}]', @o)")
    for table in MATERIALIZED_VIEWS:
        result = lab["adhoc"]({"name": table, "database": DB,
                               "login_unix_socket": lab["server"].socket})
        assert (result["changed"], result["mode"], result["rows"]) == (True, "incremental", 1)
    assert rows(conn, "SELECT * FROM CustomerPurchasesMV") == rows(
        conn, "SELECT * FROM CustomerPurchases")


def test_module_check_mode_and_diff_through_ansible(lab):
    conn = root(lab)
    with conn.cursor() as cur:
        cur.execute("UPDATE Customer SET email = 'new@example.com' WHERE customer_id = 1")
    args = {"name": "CustomerPurchasesMV", "database": DB,
            "login_unix_socket": lab["server"].socket}
    checked = lab["adhoc"](args, "--check", "--diff")
    assert checked["changed"] is True and checked["mode"] == "incremental"
    assert scalar(conn, "SELECT email FROM CustomerPurchasesMV") == "ann@example.com"
    done = lab["adhoc"](args)
    assert (done["changed"], done["rows"], done["updated"]) == (True, 1, 1)
    assert done["duration"] >= 0
    assert scalar(conn, "SELECT email FROM CustomerPurchasesMV") == "new@example.com"
    assert lab["adhoc"]({**args, "mode": "full"})["changed"] is False


def applied(output: str) -> tuple[str, str]:
    """(migrations, definitions) of the role's "Show what was applied" message."""
    match = re.search(r"migrations (.*?); definitions (.*?);", output)
    assert match, output[-3000:]
    return match.group(1), match.group(2)


def test_a_new_migration_upgrades_in_place_without_losing_rows(lab):
    conn = root(lab)
    before = rows(conn, "SELECT * FROM Customer")
    (lab["sql_dir"] / "900_test_add_loyalty_points.sql").write_text(
        "ALTER TABLE Customer ADD COLUMN IF NOT EXISTS loyalty_points INT NOT NULL DEFAULT 0;\n")
    result = lab["playbook"]()
    assert result.returncode == 0, result.stdout[-3000:]
    # Only the new migration, then every definition again (a migration may rebuild a table).
    assert applied(result.stdout) == (
        "900_test_add_loyalty_points.sql", ", ".join(
            f"definitions/{g}.sql" for g in ("views", "routines", "triggers", "events")))
    assert [r[:-1] for r in rows(conn, "SELECT * FROM Customer")] == list(before)
    assert scalar(conn, "SELECT COUNT(*) FROM schema_version "
                        "WHERE filename = '900_test_add_loyalty_points.sql'") == 1
    assert recap_changed(lab["playbook"]().stdout) == 0


def test_an_edited_definition_file_is_applied_again_then_nothing(lab):
    path = lab["sql_dir"] / "definitions" / "views.sql"
    original = path.read_text()
    column = "SELECT DATE(o.date_placed) AS sale_date,"  # DailySales only
    assert original.count(column) == 1
    path.write_text(original.replace(column, column + " 'edited' AS marker,"))
    try:
        result = lab["playbook"]()
        assert result.returncode == 0, result.stdout[-3000:]
        assert applied(result.stdout) == ("none", "definitions/views.sql")
        assert scalar(root(lab), "SELECT DISTINCT marker FROM DailySales") == "edited"
        assert recap_changed(lab["playbook"]().stdout) == 0
    finally:
        path.write_text(original)
    assert lab["playbook"]().returncode == 0
    assert "marker" not in rows(root(lab), "SHOW CREATE VIEW DailySales")[0][1]


def test_an_edited_migration_is_refused_with_a_clear_message(lab):
    path = lab["sql_dir"] / "001_base_tables.sql"
    path.write_text(path.read_text() + "\n-- edited after being applied\n")
    result = lab["playbook"]()
    assert result.returncode != 0
    assert "001_base_tables.sql changed after being applied" in result.stdout
    assert "add a new numbered one" in result.stdout


def test_missing_passwords_fail_with_a_clear_message(lab):
    result = lab["playbook"]("-e", "pos_schema_report_password=''")
    assert result.returncode != 0
    assert "pos_schema_report_password" in result.stdout
    assert lab["passwords"]["app"] not in result.stdout


def denied(conn, sql, params=None):
    with pytest.raises(pymysql.MySQLError) as error:
        with conn.cursor() as cur:
            cur.execute(sql, params)
    assert error.value.args[0] in (1044, 1142, 1143, 1370), error.value.args


def test_application_account_reads_writes_and_calls_but_no_ddl(lab):
    conn = as_user(lab, "app")
    with conn.cursor() as cur:
        cur.execute("SELECT birthdate FROM Customer WHERE customer_id = 1")
        cur.execute("UPDATE Customer SET phone = %s WHERE customer_id = 1", ("555-0100",))
        cur.execute("CALL place_order(1, '[{\"product_id\": 2, \"quantity\": 1}]', @o)")
        cur.execute("SELECT * FROM ProductBuyersMV")
    denied(conn, "CREATE TABLE Sneaky (x INT)")
    denied(conn, "DROP TABLE PriceHistory")
    denied(conn, "ALTER TABLE Customer ADD COLUMN x INT")
    denied(conn, f"SELECT * FROM {ETL_DB}.nothing")
    denied(conn, "SELECT * FROM mysql.user")


def test_reporting_account_reads_only_the_views(lab):
    # A full refresh that swaps the table in keeps the grant (grants follow the table name).
    with root(lab).cursor() as cur:
        cur.execute("UPDATE Product SET name = 'Pen (blue)' WHERE product_id = 1")
    swapped = refresh(root(lab), DB, "ProductBuyersMV", mode="full")
    assert swapped["changed"] is True
    conn = as_user(lab, "report")
    assert scalar(conn, "SELECT product_name FROM ProductBuyersMV WHERE product_id = 1") == \
        "Pen (blue)"
    with conn.cursor() as cur:
        for view in ("CustomerDirectory", "ProductBuyers", "CustomerPurchases", "OrderSummary",
                     "DailySales", "ProductBuyersMV", "CustomerPurchasesMV", "DailySalesMV"):
            cur.execute(f"SELECT * FROM {view}")
        cur.execute("SELECT email FROM CustomerDirectory WHERE customer_id = 1")
        assert cur.fetchone() == ("new@example.com",)
    denied(conn, "SELECT birthdate FROM Customer")
    denied(conn, "SELECT * FROM Customer")
    denied(conn, "SELECT * FROM `Order`")
    denied(conn, "UPDATE CustomerDirectory SET email = 'x' WHERE customer_id = 1")
    denied(conn, "DELETE FROM ProductBuyersMV")
    denied(conn, "CALL customer_report(1)")


def test_etl_account_has_dml_and_lock_tables_on_pos_and_all_on_its_database(lab):
    conn = as_user(lab, "etl")
    with conn.cursor() as cur:
        cur.execute("SET @pos_bulk_load = 1")
        cur.execute("LOCK TABLES Product WRITE")
        cur.execute("UPDATE Product SET quantity_on_hand = 50 WHERE product_id = 1")
        cur.execute("UNLOCK TABLES")
        cur.execute("INSERT INTO City VALUES ('99501', 'Anchorage', 'AK')")
        cur.execute("DELETE FROM City WHERE zip = '99501'")
        cur.execute(f"CREATE TABLE {ETL_DB}.staging_demo (x INT)")
        cur.execute(f"DROP TABLE {ETL_DB}.staging_demo")
    denied(conn, "CREATE TABLE Sneaky (x INT)")
    denied(conn, "DROP TABLE OrderLine")
    denied(conn, "CALL change_product_price(1, 2.00)")
    denied(conn, "SELECT * FROM mysql.user")


def test_a_check_run_on_a_bare_server_succeeds_and_writes_nothing(mariadb_server, tmp_path):
    bare = PosSchemaRole(mariadb_server, tmp_path, "pos_t_role_bare",
                         {k: f"t_bare_{k}" for k in USERS})
    try:
        checked = bare.playbook("--check")
        assert checked.returncode == 0, checked.stdout[-3000:]
        assert recap_changed(checked.stdout) > 0
        assert "check mode cannot say which objects" in checked.stdout
        assert scalar(mariadb_server.connect(), "SELECT COUNT(*) FROM information_schema."
                      "SCHEMATA WHERE SCHEMA_NAME LIKE 'pos_t_role_bare%'") == 0
        assert not bare.remote_dir.exists()
    finally:
        bare.drop()
