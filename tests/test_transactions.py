"""Milestone 4: the runnable examples of files/sql/examples/, each checked by its final state."""

from __future__ import annotations

from decimal import Decimal

import pytest

from tests.support.schema import EXAMPLES_DIR, create_schema, rows, scalar, seed

DB = "pos_t_transactions"


@pytest.fixture(scope="module")
def db(mariadb_server):
    create_schema(mariadb_server, DB)
    conn = mariadb_server.connect(database=DB)
    seed(conn)
    yield conn
    conn.close()


def run_example(server, name):
    """Run the example twice (it must be re-runnable); return the second run's output."""
    server.client(file=EXAMPLES_DIR / name, database=DB)
    return server.client(file=EXAMPLES_DIR / name, database=DB).stdout


def product(conn, product_id=9001):
    return rows(conn, "SELECT current_price, quantity_on_hand FROM Product "
                      "WHERE product_id = %s", (product_id,))


def history(conn):
    return rows(conn, "SELECT old_price, new_price FROM PriceHistory WHERE product_id = 9001")


def test_commit(mariadb_server, db):
    run_example(mariadb_server, "tx_01_commit.sql")
    assert product(db) == [(Decimal("12.50"), 15)]
    assert history(db) == [(Decimal("10.00"), Decimal("12.50"))]


def test_rollback_undoes_the_changes_and_the_trigger_rows(mariadb_server, db):
    output = run_example(mariadb_server, "tx_02_rollback.sql")
    assert "history_inside_transaction\n1\n" in output  # the trigger did write, inside
    assert "history_after_rollback\n0\n" in output
    assert product(db) == [(Decimal("10.00"), 5)]
    assert history(db) == []


def test_rollback_to_savepoint_keeps_the_work_before_it(mariadb_server, db):
    run_example(mariadb_server, "tx_03_savepoint.sql")
    assert product(db) == [(Decimal("11.00"), 5)]
    assert history(db) == [(Decimal("10.00"), Decimal("11.00"))]


def test_ddl_commits_the_open_transaction_implicitly(mariadb_server, db):
    run_example(mariadb_server, "tx_04_implicit_commit.sql")
    assert product(db) == [(Decimal("10.00"), 42)]
    assert scalar(db, "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s "
                      "AND TABLE_NAME = 'ImplicitCommitDemo'", (DB,)) == 0


def test_prepared_statements_take_values_as_parameters(mariadb_server, db):
    output = run_example(mariadb_server, "tx_05_prepared_statements.sql")
    assert product(db) == [(Decimal("10.00"), 7)]
    assert rows(db, "SELECT name FROM Product WHERE product_id = 9002") == [
        ("'; DROP TABLE Customer; --",)]
    assert "9002\t'; DROP TABLE Customer; --" in output
    assert scalar(db, "SELECT COUNT(*) FROM Customer") == 3


def test_the_same_transactions_from_python_use_parameters(db):
    db.autocommit(False)
    try:
        with db.cursor() as cur:
            cur.execute("UPDATE Product SET quantity_on_hand = %s WHERE product_id = %s", (1, 1))
            cur.execute("SAVEPOINT s1")
            cur.execute("UPDATE Product SET name = %s WHERE product_id = %s", ("x'); --", 1))
            cur.execute("ROLLBACK TO SAVEPOINT s1")
        db.commit()
    finally:
        db.autocommit(True)
    assert rows(db, "SELECT name, quantity_on_hand FROM Product WHERE product_id = 1") == [
        ("Product 1", 1)]
