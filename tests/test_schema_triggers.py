"""Triggers (definitions/triggers.sql): PriceHistory, unit price, stock, ChangeLog, bulk load."""

from __future__ import annotations

import datetime
from decimal import Decimal

import pymysql
import pytest

from tests.support.schema import MATERIALIZED_VIEWS, create_schema, rows, scalar, seed

DB = "pos_t_triggers"


@pytest.fixture()
def db(mariadb_server):
    create_schema(mariadb_server, DB)
    conn = mariadb_server.connect(database=DB)
    seed(conn, stock=10)
    yield conn
    conn.close()


def run(conn, sql, params=None):
    with conn.cursor() as cur:
        cur.execute(sql, params)
        return cur.rowcount


def history(conn):
    return rows(conn, "SELECT product_id, old_price, new_price FROM PriceHistory "
                      "ORDER BY price_history_id")


def stock(conn, product_id):
    return scalar(conn, "SELECT quantity_on_hand FROM Product WHERE product_id = %s",
                  (product_id,))


def new_order(conn, order_id=1, customer_id=1):
    run(conn, "INSERT INTO `Order` (order_id, customer_id, date_placed) "
              "VALUES (%s, %s, '2024-05-01 12:00:00')", (order_id, customer_id))


def test_price_history_exactly_when_the_price_changes(db):
    run(db, "UPDATE Product SET current_price = 9.99 WHERE product_id = 1")
    assert history(db) == [(1, Decimal("1.25"), Decimal("9.99"))]
    run(db, "UPDATE Product SET current_price = 9.99 WHERE product_id = 1")  # same value
    run(db, "UPDATE Product SET current_price = 9.990 WHERE product_id = 1")  # same decimal
    run(db, "UPDATE Product SET name = 'Renamed', quantity_on_hand = 3 WHERE product_id = 1")
    assert len(history(db)) == 1
    run(db, "UPDATE Product SET current_price = current_price + 1")  # three products
    assert [(p, o, n) for p, o, n in history(db)[1:]] == [
        (1, Decimal("9.99"), Decimal("10.99")), (2, Decimal("2.50"), Decimal("3.50")),
        (3, Decimal("3.75"), Decimal("4.75"))]


def test_price_history_is_null_safe(db):
    # current_price is NOT NULL in the schema; in this throw-away database the column is made
    # nullable to prove the trigger compares with <=> (a plain <> would miss NULL transitions).
    run(db, "ALTER TABLE Product MODIFY current_price DECIMAL(10,2) NULL")
    run(db, "UPDATE Product SET current_price = NULL WHERE product_id = 1")
    run(db, "UPDATE Product SET current_price = NULL WHERE product_id = 1")
    run(db, "UPDATE Product SET current_price = 2.00 WHERE product_id = 1")
    assert history(db) == [(1, Decimal("1.25"), None), (1, None, Decimal("2.00"))]


def test_order_line_gets_the_current_price_and_takes_the_stock(db):
    new_order(db)
    run(db, "INSERT INTO OrderLine (order_id, product_id, quantity, unit_price) "
            "VALUES (1, 2, 4, 0.01)")  # a price sent by a client is replaced
    assert rows(db, "SELECT unit_price FROM OrderLine") == [(Decimal("2.50"),)]
    assert stock(db, 2) == 6
    run(db, "UPDATE Product SET current_price = 7.00 WHERE product_id = 2")
    assert rows(db, "SELECT unit_price FROM OrderLine") == [(Decimal("2.50"),)]  # kept


def test_quantity_beyond_stock_is_rejected_with_a_readable_signal(db):
    new_order(db)
    with pytest.raises(pymysql.MySQLError) as error:
        run(db, "INSERT INTO OrderLine (order_id, product_id, quantity) VALUES (1, 3, 11)")
    assert error.value.args == (1644, "insufficient stock for product 3: 10 on hand, "
                                      "11 ordered (order 1)")
    assert stock(db, 3) == 10
    assert scalar(db, "SELECT COUNT(*) FROM OrderLine") == 0
    run(db, "INSERT INTO OrderLine (order_id, product_id, quantity) VALUES (1, 3, 10)")
    assert stock(db, 3) == 0


def test_unknown_product_and_bad_quantity_are_signalled(db):
    new_order(db)
    with pytest.raises(pymysql.MySQLError) as error:
        run(db, "INSERT INTO OrderLine (order_id, product_id, quantity) VALUES (1, 99, 1)")
    assert error.value.args[1] == "unknown product 99 in order 1"
    with pytest.raises(pymysql.MySQLError) as error:
        run(db, "INSERT INTO OrderLine (order_id, product_id, quantity) VALUES (1, 1, -2)")
    assert error.value.args[1] == "order line quantity must be greater than 0 (order 1, product 1)"


def test_stock_follows_order_line_updates_and_deletes(db):
    new_order(db)
    run(db, "INSERT INTO OrderLine (order_id, product_id, quantity) VALUES (1, 1, 4)")
    assert stock(db, 1) == 6
    run(db, "UPDATE OrderLine SET quantity = 9 WHERE order_id = 1")
    assert stock(db, 1) == 1
    with pytest.raises(pymysql.MySQLError) as error:
        run(db, "UPDATE OrderLine SET quantity = 11 WHERE order_id = 1")
    assert "insufficient stock for product 1: 1 on hand, 2 more ordered" in error.value.args[1]
    run(db, "UPDATE OrderLine SET quantity = 2 WHERE order_id = 1")
    assert stock(db, 1) == 8
    run(db, "UPDATE OrderLine SET product_id = 3 WHERE order_id = 1")  # moves to another product
    assert (stock(db, 1), stock(db, 3)) == (10, 8)
    assert rows(db, "SELECT unit_price FROM OrderLine") == [(Decimal("3.75"),)]
    run(db, "DELETE FROM OrderLine WHERE order_id = 1")
    assert (stock(db, 1), stock(db, 3)) == (10, 10)
    assert history(db) == []  # stock changes are not price changes


def test_bulk_load_mode_bypasses_every_data_trigger(db):
    run(db, "DELETE FROM ChangeLog")
    run(db, "SET @pos_bulk_load = 1")
    new_order(db, 5)
    run(db, "INSERT INTO OrderLine VALUES (5, 1, 50, 0.99)")  # beyond stock, CSV price kept
    run(db, "UPDATE Product SET current_price = 5.55, quantity_on_hand = 7 WHERE product_id = 1")
    run(db, "UPDATE Customer SET email = 'bulk@example.com' WHERE customer_id = 1")
    assert rows(db, "SELECT quantity, unit_price FROM OrderLine") == [(50, Decimal("0.99"))]
    assert stock(db, 1) == 7
    assert history(db) == []
    assert scalar(db, "SELECT COUNT(*) FROM ChangeLog") == 0
    run(db, "SET @pos_bulk_load = 0")
    run(db, "UPDATE Product SET current_price = 6.00 WHERE product_id = 1")
    assert history(db) == [(1, Decimal("5.55"), Decimal("6.00"))]


def test_changes_feed_the_changelog_of_every_materialized_view(db):
    run(db, "DELETE FROM ChangeLog")
    new_order(db, 7, customer_id=2)
    run(db, "INSERT INTO OrderLine (order_id, product_id, quantity) VALUES (7, 3, 1)")
    logged = rows(db, "SELECT mv_table, customer_id, product_id, sale_date FROM ChangeLog "
                      "ORDER BY change_id")
    tables = set(MATERIALIZED_VIEWS)
    assert {r[0] for r in logged} == tables and len(logged) == 6
    assert {r[1:] for r in logged} == {(2, None, _date()), (2, 3, _date())}
    run(db, "DELETE FROM ChangeLog")
    run(db, "UPDATE Product SET current_price = 1.00, quantity_on_hand = 1")  # not in any MV key
    run(db, "UPDATE `Order` SET date_shipped = '2024-05-02' WHERE order_id = 7")
    assert scalar(db, "SELECT COUNT(*) FROM ChangeLog") == 0
    run(db, "UPDATE Product SET name = 'New name' WHERE product_id = 3")
    run(db, "UPDATE Customer SET last_name = 'Changed' WHERE customer_id = 1")
    assert set(rows(db, "SELECT customer_id, product_id, sale_date FROM ChangeLog")) == {
        (None, 3, None), (1, None, None)}


def _date():
    return datetime.date(2024, 5, 1)
