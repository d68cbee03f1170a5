"""Stored procedures (definitions/routines.sql): results, SIGNALed errors, rollback, literals."""

from __future__ import annotations

import json
from decimal import Decimal

import pymysql
import pytest

from tests.support.schema import create_schema, rows, scalar, seed

DB = "pos_t_procedures"
PRICE_ERROR = "change_product_price: the price must be a number >= 0, got "
PAYLOADS = ["'; DROP TABLE Customer; --", "O'Brien \"quoted\"", "back\\slash\\", "nul\x00byte",
            "emoji 🛒🎉", "`Order`; DELETE FROM Product", "%s %(name)s {0}"]


@pytest.fixture()
def db(mariadb_server):
    create_schema(mariadb_server, DB)
    conn = mariadb_server.connect(database=DB)
    seed(conn, stock=5)
    yield conn
    conn.close()


def call(conn, name, *args):
    with conn.cursor() as cur:
        cur.callproc(name, args)
        results = [cur.fetchall()]
        while cur.nextset():
            results.append(cur.fetchall())
        return results


def place(conn, customer_id, lines):
    """CALL place_order; returns the new order id (OUT parameter)."""
    with conn.cursor() as cur:
        cur.execute("CALL place_order(%s, %s, @pos_order_id)", (customer_id, lines))
        cur.execute("SELECT @pos_order_id")
        return cur.fetchone()[0]


def counts(conn):
    return (scalar(conn, "SELECT COUNT(*) FROM `Order`"),
            scalar(conn, "SELECT COUNT(*) FROM OrderLine"),
            rows(conn, "SELECT product_id, quantity_on_hand FROM Product ORDER BY product_id"))


def test_place_order_inserts_the_order_and_its_lines_at_the_current_price(db):
    order_id = place(db, 2, json.dumps([{"product_id": 3, "quantity": 2},
                                        {"product_id": 1, "quantity": 5}]))
    assert order_id == 1
    assert rows(db, "SELECT customer_id, date_shipped FROM `Order`") == [(2, None)]
    assert rows(db, "SELECT product_id, quantity, unit_price FROM OrderLine ORDER BY product_id") \
        == [(1, 5, Decimal("1.25")), (3, 2, Decimal("3.75"))]
    assert rows(db, "SELECT product_id, quantity_on_hand FROM Product ORDER BY product_id") == [
        (1, 0), (2, 5), (3, 3)]
    assert rows(db, "SELECT order_total FROM OrderSummary") == [(Decimal("13.75"),)]


@pytest.mark.parametrize("customer_id, lines, message", [
    (1, '[{"product_id": 1, "quantity": 1}, {"product_id": 2, "quantity": 6}]',
     "insufficient stock for product 2: 5 on hand, 6 ordered"),
    (1, '[{"product_id": 1, "quantity": 1}, {"product_id": 42, "quantity": 1}]',
     "unknown product 42"),
    (77, '[{"product_id": 1, "quantity": 1}]', "place_order: unknown customer 77"),
    (1, '[{"product_id": 1, "quantity": 1}, {"product_id": 1, "quantity": 2}]',
     "a product appears on more than one line"),
    (1, '[{"product_id": 1, "quantity": 0}]', "quantity greater than 0"),
    (1, '[{"product_id": "abc", "quantity": 1}]', "numeric product_id"),
    (1, "[]", "non-empty JSON array"),
    (1, "not json", "non-empty JSON array"),
    (1, None, "non-empty JSON array"),
])
def test_place_order_errors_roll_everything_back(db, customer_id, lines, message):
    before = counts(db)
    with pytest.raises(pymysql.MySQLError) as error:
        place(db, customer_id, lines)
    assert error.value.args[0] == 1644
    assert message in error.value.args[1]
    assert counts(db) == before  # no order, no line, stock unchanged
    assert scalar(db, "SELECT @pos_order_id") is None


def test_place_order_commits_a_transaction_the_caller_left_open(db):
    db.autocommit(False)
    with db.cursor() as cur:
        cur.execute("UPDATE Customer SET phone = 'before-order' WHERE customer_id = 1")
    place(db, 1, '[{"product_id": 1, "quantity": 1}]')
    db.rollback()  # too late: START TRANSACTION inside the procedure committed it
    db.autocommit(True)
    assert scalar(db, "SELECT phone FROM Customer WHERE customer_id = 1") == "before-order"


def test_change_product_price_records_history_and_signals_bad_input(db):
    call(db, "change_product_price", 2, Decimal("4.20"))
    call(db, "change_product_price", 2, Decimal("4.20"))
    assert rows(db, "SELECT product_id, old_price, new_price FROM PriceHistory") == [
        (2, Decimal("2.50"), Decimal("4.20"))]
    for args, message in [((9, Decimal("1")), "change_product_price: unknown product 9"),
                          ((2, Decimal("-1")), PRICE_ERROR + "-1.00"),
                          ((2, None), PRICE_ERROR + "NULL")]:
        with pytest.raises(pymysql.MySQLError) as error:
            call(db, "change_product_price", *args)
        assert error.value.args == (1644, message)
    assert scalar(db, "SELECT current_price FROM Product WHERE product_id = 2") == Decimal("4.20")


def test_customer_report_returns_contact_orders_and_products(db):
    place(db, 1, '[{"product_id": 2, "quantity": 2}]')
    place(db, 1, '[{"product_id": 2, "quantity": 1}, {"product_id": 3, "quantity": 1}]')
    contact, orders, products, _status = call(db, "customer_report", 1)
    assert contact[0][:4] == (1, "First1", "Last1", "c1@example.com")
    assert contact[0][10:13] == (2, Decimal("4"), Decimal("11.25"))
    assert [(o[0], o[5], o[6]) for o in orders] == [(1, Decimal("2"), Decimal("5.00")),
                                                    (2, Decimal("2"), Decimal("6.25"))]
    assert [(p[0], p[3]) for p in products] == [(2, Decimal("3")), (3, Decimal("1"))]
    with pytest.raises(pymysql.MySQLError) as error:
        call(db, "customer_report", 404)
    assert error.value.args == (1644, "customer_report: unknown customer 404")


def test_refresh_materialized_view_procedure_equals_a_fresh_select(db):
    place(db, 3, '[{"product_id": 1, "quantity": 2}, {"product_id": 2, "quantity": 1}]')
    result = call(db, "refresh_materialized_view", "ProductBuyersMV")
    assert result[0] == (("ProductBuyersMV", 2),)
    assert rows(db, "SELECT * FROM ProductBuyersMV ORDER BY product_id, customer_id") == rows(
        db, "SELECT * FROM ProductBuyers ORDER BY product_id, customer_id")
    assert scalar(db, "SELECT COUNT(*) FROM ChangeLog WHERE mv_table = 'ProductBuyersMV'") == 0
    assert scalar(db, "SELECT COUNT(*) FROM ChangeLog WHERE mv_table = 'DailySalesMV'") > 0
    for bad in ["Customer", "ProductBuyersMV`; DROP TABLE Customer; --", None]:
        with pytest.raises(pymysql.MySQLError) as error:
            call(db, "refresh_materialized_view", bad)
        assert "is not a registered materialized view" in error.value.args[1]
    assert scalar(db, "SELECT COUNT(*) FROM Customer") == 3


@pytest.mark.parametrize("payload", PAYLOADS)
def test_injection_payloads_are_stored_and_reported_literally(db, payload):
    with db.cursor() as cur:
        cur.execute("UPDATE Customer SET first_name = %s, address_line2 = %s WHERE customer_id = 1",
                    (payload, payload))
        cur.execute("UPDATE Product SET name = %s WHERE product_id = 1", (payload,))
    place(db, 1, json.dumps([{"product_id": 1, "quantity": 1}]))
    contact, _orders, products, _ = call(db, "customer_report", 1)
    assert contact[0][1] == payload and contact[0][6] == payload
    assert products[0][1] == payload
    call(db, "refresh_materialized_view", "ProductBuyersMV")
    assert rows(db, "SELECT product_name, first_name FROM ProductBuyersMV") == [(payload, payload)]
    assert scalar(db, "SELECT COUNT(*) FROM Customer") == 3
    # as a procedure argument the payload is data too: a readable error, nothing dropped
    with pytest.raises(pymysql.MySQLError) as error:
        place(db, 1, payload)
    assert "non-empty JSON array" in error.value.args[1]
    assert scalar(db, "SELECT COUNT(*) FROM Product") == 3


def test_refresh_procedure_releases_its_lock_after_an_error(db):
    with db.cursor() as cur:
        cur.execute("CREATE TABLE BrokenMV (customer_id INT UNSIGNED PRIMARY KEY)")
        cur.execute("INSERT INTO MaterializedView (mv_table, source_view, key_columns) "
                    "VALUES ('BrokenMV', 'NoSuchView', 'customer_id')")
    with pytest.raises(pymysql.MySQLError) as error:
        call(db, "refresh_materialized_view", "BrokenMV")
    assert "NoSuchView" in error.value.args[1]
    assert scalar(db, "SELECT IS_FREE_LOCK(%s)", (f"pos_mv_refresh:{DB}.BrokenMV",)) == 1
    assert scalar(db, "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s "
                      "AND TABLE_NAME = 'BrokenMV'", (DB,)) == 1
