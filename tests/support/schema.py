"""Helpers shared by the schema, refresh and transaction tests: a fresh database with files/sql
applied by the project's one loader (module_utils/mariadb_pos/schema_files.py, the code the module
mariadb_schema runs for roles/pos_schema), seed data, and comparisons.

Each test module uses its own database name, so the modules never see each other's rows (the
SQL files name no database; the role applies them in `pos`).
"""

from __future__ import annotations

import datetime
from pathlib import Path

from mariadb_pos.schema_files import apply_schema, client_runner, load_registry_file
from mariadb_pos.view_refresh import refresh

REPO_ROOT = Path(__file__).resolve().parents[2]
SQL_DIR = REPO_ROOT / "files" / "sql"
EXAMPLES_DIR = SQL_DIR / "examples"
# The registry of materialized views (files/sql/materialized_views.yml), as the role reads it.
REGISTRY = load_registry_file(str(SQL_DIR))


def apply_schema_files(server, database: str, sql_dir: Path = SQL_DIR, **kwargs) -> dict:
    """Apply ``sql_dir`` to an existing ``database`` exactly as the role does; the result dict."""
    conn = server.connect()
    try:
        return apply_schema(conn, database, str(sql_dir), load_registry_file(str(sql_dir)),
                            client_runner(login_unix_socket=server.socket), **kwargs)
    finally:
        conn.close()


def create_schema(server, database: str) -> None:
    """Drop and recreate ``database`` and apply files/sql to it."""
    server.client(f"DROP DATABASE IF EXISTS `{database}`; CREATE DATABASE `{database}` "
                  "CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
    apply_schema_files(server, database)


def seed(conn, customers: int = 3, products: int = 3, stock: int = 100) -> None:
    """Cities, customers 1..n and products 1..n (price = id * 1.25) with the given stock."""
    with conn.cursor() as cur:
        cur.executemany("INSERT INTO City (zip, city, state) VALUES (%s, %s, %s)",
                        [("02134", "Boston", "MA"), ("10001", "New York", "NY")])
        cur.executemany(
            "INSERT INTO Customer (customer_id, first_name, last_name, email, address_line1, "
            "address_line2, phone, birthdate, zip) VALUES (%s, %s, %s, %s, %s, NULL, %s, %s, %s)",
            [(i, f"First{i}", f"Last{i}", f"c{i}@example.com", f"{i} Main St", f"555-01{i:02d}",
              "1990-01-0%d" % (1 + i % 9), "02134" if i % 2 else "10001")
             for i in range(1, customers + 1)])
        cur.executemany(
            "INSERT INTO Product (product_id, name, current_price, quantity_on_hand) "
            "VALUES (%s, %s, %s, %s)",
            [(i, f"Product {i}", f"{i * 1.25:.2f}", stock) for i in range(1, products + 1)])
    conn.commit()


def scalar(conn, sql: str, params=None):
    with conn.cursor() as cur:
        cur.execute(sql, params)
        return cur.fetchone()[0]


def rows(conn, sql: str, params=None):
    with conn.cursor() as cur:
        cur.execute(sql, params)
        return list(cur.fetchall())


# Materialized-view tables and their source views, from the registry.
MATERIALIZED_VIEWS = {entry["table"]: entry["view"] for entry in REGISTRY}
ORDERS_START = datetime.datetime(2024, 3, 1, 9, 0, 0)


def create_schema_with_orders(server, database: str, stock: int):
    """A fresh schema with 8 customers, 6 products and 40 orders of one or two lines each."""
    create_schema(server, database)
    conn = server.connect(database=database)
    seed(conn, customers=8, products=6, stock=stock)
    with conn.cursor() as cur:
        for order_id in range(1, 41):
            cur.execute("INSERT INTO `Order` (order_id, customer_id, date_placed) "
                        "VALUES (%s, %s, %s)",
                        (order_id, 1 + order_id % 8,
                         ORDERS_START + datetime.timedelta(hours=13 * order_id)))
            for product_id in {1 + order_id % 6, 1 + (order_id * 7) % 6}:
                cur.execute("INSERT INTO OrderLine (order_id, product_id, quantity) "
                            "VALUES (%s, %s, %s)", (order_id, product_id, 1 + order_id % 4))
    return conn


def refresh_on_new_connection(server, database: str, table: str, **kwargs):
    """One refresh on its own connection, as one module run opens it (no default database)."""
    conn = server.connect()
    try:
        return refresh(conn, database, table, **kwargs)
    finally:
        conn.close()


def primary_key(conn, table: str) -> list[str]:
    return [r[0] for r in rows(conn, "SELECT COLUMN_NAME FROM information_schema.STATISTICS "
                                     "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = %s "
                                     "AND INDEX_NAME = 'PRIMARY' ORDER BY SEQ_IN_INDEX", (table,))]


def assert_equal_to_view(conn, table: str) -> None:
    """The materialized view table holds exactly its view's rows (ordered by its primary key)."""
    view, order = MATERIALIZED_VIEWS[table], ", ".join(primary_key(conn, table))
    assert order, f"{table} has no primary key"
    assert rows(conn, f"SELECT * FROM {table} ORDER BY {order}") == rows(
        conn, f"SELECT * FROM {view} ORDER BY {order}"), table
