"""Tables, constraints, views and indexes of files/sql, against a real MariaDB server."""

from __future__ import annotations

import datetime
import random
import re
from pathlib import Path

import pymysql
import pytest
from mariadb_pos.schema_files import DEFINITION_GROUPS, migration_files

from tests.support.schema import SQL_DIR, apply_schema_files, create_schema, rows, scalar, seed

DB = "pos_t_objects"
BASE_TABLES = {"City", "Customer", "Product", "Order", "OrderLine", "PriceHistory"}
VIEW_COLUMNS = {
    "CustomerDirectory": ["customer_id", "first_name", "last_name", "email", "phone",
                          "address_line1", "address_line2", "zip", "city", "state"],
    "ProductBuyers": ["product_id", "product_name", "customer_id", "first_name", "last_name",
                      "email", "order_count", "total_quantity", "total_spent",
                      "first_ordered_at", "last_ordered_at"],
    "CustomerPurchases": ["customer_id", "first_name", "last_name", "email", "order_count",
                          "item_count", "total_spent", "first_order_at", "last_order_at"],
    "OrderSummary": ["order_id", "customer_id", "first_name", "last_name", "date_placed",
                     "date_shipped", "status", "line_count", "item_count", "order_total"],
    "DailySales": ["sale_date", "order_count", "item_count", "revenue"],
}


@pytest.fixture(scope="module")
def db(mariadb_server):
    create_schema(mariadb_server, DB)
    conn = mariadb_server.connect(database=DB)
    seed(conn)
    yield conn
    conn.close()
    mariadb_server.client(f"DROP DATABASE IF EXISTS `{DB}`")


def test_applying_the_files_again_changes_nothing_and_keeps_the_rows(mariadb_server, db):
    before = {t: scalar(db, f"SELECT COUNT(*) FROM `{t}`") for t in BASE_TABLES}
    assert before["Customer"] == 3
    definition = rows(db, "SHOW CREATE TABLE Customer")
    again = apply_schema_files(mariadb_server, DB)
    assert (again["changed"], again["migrations"], again["definitions"]) == (False, [], [])
    forced = apply_schema_files(mariadb_server, DB, force_definitions=True)
    assert forced["definitions"] == [f"definitions/{group}.sql" for group in DEFINITION_GROUPS]
    # Each migration is also re-runnable by hand (IF NOT EXISTS), without the loader.
    for _name, path, _digest in migration_files(str(SQL_DIR)):
        mariadb_server.client(file=Path(path), database=DB)
    assert {t: scalar(db, f"SELECT COUNT(*) FROM `{t}`") for t in BASE_TABLES} == before
    assert rows(db, "SHOW CREATE TABLE Customer") == definition


def test_every_table_is_innodb_utf8mb4_and_follows_the_naming_convention(db):
    tables = rows(db, "SELECT TABLE_NAME, ENGINE, TABLE_COLLATION FROM information_schema.TABLES "
                      "WHERE TABLE_SCHEMA = %s AND TABLE_TYPE = 'BASE TABLE'", (DB,))
    names = {name for name, _, _ in tables}
    assert BASE_TABLES <= names
    for name, engine, collation in tables:
        assert engine == "InnoDB", name
        assert collation.startswith("utf8mb4_"), name
        # schema_version is the loader's bookkeeping (module_utils/mariadb_pos/schema_files.py).
        assert name == "schema_version" or re.fullmatch(r"[A-Z][A-Za-z]*", name), (
            f"table {name} is not PascalCase")
    columns = rows(db, "SELECT TABLE_NAME, COLUMN_NAME, CHARACTER_SET_NAME "
                       "FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = %s", (DB,))
    for table, column, charset in columns:
        assert re.fullmatch(r"[a-z][a-z0-9_]*", column), f"{table}.{column} is not snake_case"
        assert charset in (None, "utf8mb4"), f"{table}.{column}"


def test_zip_codes_keep_their_leading_zeros(db):
    assert scalar(db, "SELECT zip FROM City WHERE city = 'Boston'") == "02134"
    assert scalar(db, "SELECT zip FROM CustomerDirectory WHERE customer_id = 1") == "02134"


@pytest.mark.parametrize("sql, constraint", [
    ("INSERT INTO City VALUES ('2134', 'Short', 'MA')", "City_zip_chk"),
    ("INSERT INTO City VALUES ('ABCDE', 'Letters', 'MA')", "City_zip_chk"),
    ("UPDATE Product SET current_price = -0.01 WHERE product_id = 1", "Product_current_price_chk"),
    ("UPDATE Product SET quantity_on_hand = -1 WHERE product_id = 1",
     "Product_quantity_on_hand_chk"),
])
def test_check_constraints_reject_values_outside_the_domain(db, sql, constraint):
    with pytest.raises(pymysql.MySQLError) as error:
        with db.cursor() as cur:
            cur.execute(sql)
    assert error.value.args[0] == 4025 and constraint in error.value.args[1]


def test_order_line_quantity_must_be_positive_even_in_bulk_load_mode(db):
    with db.cursor() as cur:
        cur.execute("INSERT INTO `Order` (order_id, customer_id, date_placed) "
                    "VALUES (900, 1, '2024-01-01 10:00:00')")
        cur.execute("SET @pos_bulk_load = 1")
        try:
            with pytest.raises(pymysql.MySQLError) as error:
                cur.execute("INSERT INTO OrderLine VALUES (900, 1, 0, 1.00)")
        finally:
            cur.execute("SET @pos_bulk_load = NULL")
            cur.execute("DELETE FROM `Order` WHERE order_id = 900")
    assert "OrderLine_quantity_chk" in error.value.args[1]


def test_foreign_keys_reject_unknown_references(db):
    with pytest.raises(pymysql.err.IntegrityError) as error:
        with db.cursor() as cur:
            cur.execute("INSERT INTO Customer (first_name, last_name, email, address_line1, zip) "
                        "VALUES ('No', 'City', 'n@example.com', 'x', '99999')")
    assert error.value.args[0] == 1452 and "Customer_zip_fk" in error.value.args[1]
    with pytest.raises(pymysql.err.IntegrityError):
        with db.cursor() as cur:
            cur.execute("DELETE FROM City WHERE zip = '02134'")


@pytest.mark.parametrize("view", sorted(VIEW_COLUMNS))
def test_view_columns(db, view):
    columns = [c for (c,) in rows(db, "SELECT COLUMN_NAME FROM information_schema.COLUMNS "
                                      "WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s "
                                      "ORDER BY ORDINAL_POSITION", (DB, view))]
    assert columns == VIEW_COLUMNS[view]
    assert "birthdate" not in columns


@pytest.fixture(scope="module")
def explain_data(db):
    """Enough rows (bulk-loaded, as the ETL does) for the optimizer to prefer the indexes."""
    rnd = random.Random(3)
    with db.cursor() as cur:
        cur.execute("SET @pos_bulk_load = 1")
        cur.executemany(
            "INSERT INTO Customer (customer_id, first_name, last_name, email, address_line1, zip) "
            "VALUES (%s, %s, %s, %s, 'street', '10001')",
            [(i, f"F{i}", f"L{i}", f"user{i}@example.com") for i in range(100, 3100)])
        cur.executemany("INSERT INTO Product (product_id, name, current_price, quantity_on_hand) "
                        "VALUES (%s, %s, 9.99, 1000)",
                        [(i, f"Item {i:04d}") for i in range(100, 400)])
        start = datetime.datetime(2020, 1, 1)
        cur.executemany("INSERT INTO `Order` (order_id, customer_id, date_placed) "
                        "VALUES (%s, %s, %s)",
                        [(i, rnd.randrange(100, 3100), start + datetime.timedelta(hours=7 * i))
                         for i in range(1000, 7000)])
        cur.executemany("INSERT INTO OrderLine VALUES (%s, %s, %s, 9.99)",
                        [(o, p, 1 + o % 3) for o in range(1000, 7000)
                         for p in rnd.sample(range(100, 400), 2)])
        cur.execute("SET @pos_bulk_load = NULL")
        for table in ("Customer", "Product", "`Order`", "OrderLine"):
            cur.execute(f"ANALYZE TABLE {table}")
            cur.fetchall()
    db.commit()


def _keys_used(db, sql, params=None):
    with db.cursor(pymysql.cursors.DictCursor) as cur:
        cur.execute("EXPLAIN " + sql, params)
        return {row["key"] for row in cur.fetchall() if row["key"]}


@pytest.mark.parametrize("sql, params, index", [
    ("SELECT * FROM CustomerDirectory WHERE email = %s", ("user42@example.com",),
     "Customer_email_idx"),
    ("SELECT customer_id, email FROM Customer WHERE email LIKE %s", ("user123%",),
     "Customer_email_idx"),
    ("SELECT * FROM ProductBuyers WHERE product_name = %s", ("Item 0150",), "Product_name_idx"),
    ("SELECT * FROM OrderSummary WHERE date_placed >= %s AND date_placed < %s",
     ("2021-01-01", "2021-01-02"), "Order_date_placed_idx"),
    ("SELECT * FROM ProductBuyers WHERE customer_id = %s", (150,), "Order_customer_id_fk_idx"),
    ("SELECT * FROM CustomerPurchases WHERE customer_id IN (150, 151)", None,
     "Order_customer_id_fk_idx"),
    ("SELECT * FROM ProductBuyers WHERE product_id = %s", (150,), "OrderLine_product_id_fk_idx"),
    ("SELECT * FROM PriceHistory WHERE product_id = %s ORDER BY changed_at", (150,),
     "PriceHistory_product_id_changed_at_fk_idx"),
])
def test_queries_of_the_views_and_procedures_use_the_indexes(db, explain_data, sql, params,
                                                             index):
    used = _keys_used(db, sql, params)
    assert index in used, f"{sql}: EXPLAIN used {used or 'no index'}"
