"""Additive (delta) incremental refresh: ChangeLog contributions (written by the triggers of
files/sql/definitions/triggers.sql) applied per key.

Own database on the session server; every check compares the tables with their views.
"""

from __future__ import annotations

import datetime
import json
import random
import threading

import pymysql
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mariadb_pos.view_refresh import DELTA_SPECS, ViewRefreshError

from tests.support.order_changes import CHANGE, apply_change
from tests.support.schema import (
    MATERIALIZED_VIEWS,
    assert_equal_to_view,
    create_schema,
    create_schema_with_orders,
    refresh_on_new_connection,
    rows,
    scalar,
)

DB = "pos_t_delta"


@pytest.fixture(scope="module")
def server_db(mariadb_server):
    conn = create_schema_with_orders(mariadb_server, DB, stock=1000000)
    yield mariadb_server, conn
    conn.close()


def do_refresh(server, table, **kwargs):
    return refresh_on_new_connection(server, DB, table, **kwargs)


def full_all(server):
    for table in MATERIALIZED_VIEWS:
        do_refresh(server, table, mode="full")


def deltas(conn, table):
    return rows(conn, "SELECT customer_id, product_id, sale_date, order_id, d_lines, d_orders, "
                      "d_quantity, d_amount, line_added_at IS NOT NULL, "
                      "line_removed_at IS NOT NULL, order_added_at IS NOT NULL, "
                      "order_removed_at IS NOT NULL FROM ChangeLog "
                      "WHERE mv_table = %s AND delta = 1 ORDER BY change_id", (table,))


def test_triggers_log_signed_contributions(server_db):
    server, conn = server_db
    full_all(server)
    day = datetime.date(2024, 6, 1)
    with conn.cursor() as cur:
        cur.execute("INSERT INTO `Order` (order_id, customer_id, date_placed) "
                    "VALUES (900, 3, '2024-06-01 10:00:00')")
        cur.execute("INSERT INTO OrderLine (order_id, product_id, quantity) VALUES (900, 2, 3)")
        cur.execute("INSERT INTO OrderLine (order_id, product_id, quantity) VALUES (900, 4, 1)")
        cur.execute("UPDATE OrderLine SET quantity = 5 WHERE order_id = 900 AND product_id = 2")
        cur.execute("DELETE FROM OrderLine WHERE order_id = 900")
        cur.execute("DELETE FROM `Order` WHERE order_id = 900")
    price2 = scalar(conn, "SELECT current_price FROM Product WHERE product_id = 2")
    price4 = scalar(conn, "SELECT current_price FROM Product WHERE product_id = 4")
    expected = [
        (3, None, day, 900, 0, 1, 0, 0, 0, 0, 1, 0),              # order placed
        (3, 2, day, 900, 1, 0, 3, 3 * price2, 1, 0, 0, 0),        # a line
        (3, 4, day, 900, 1, 0, 1, price4, 1, 0, 0, 0),            # another line
        (3, 2, day, 900, 0, 0, 2, 2 * price2, 0, 0, 0, 0),        # quantity 3 -> 5
        (3, 2, day, 900, -1, 0, -5, -5 * price2, 0, 1, 0, 0),     # a line removed ...
        (3, 4, day, 900, -1, 0, -1, -price4, 0, 1, 0, 0),         # ... and the other one
        (3, None, day, 900, 0, -1, 0, 0, 0, 0, 0, 1)]             # order removed
    for table in MATERIALIZED_VIEWS:
        assert deltas(conn, table) == expected, table
    for table in MATERIALIZED_VIEWS:
        result = do_refresh(server, table)
        assert result["changed"] is False and result["consumed_changes"] == 7, table
        assert scalar(conn, "SELECT COUNT(*) FROM ChangeLog WHERE mv_table = %s", (table,)) == 0


def test_quantity_changes_are_added_without_recomputing(server_db):
    server, conn = server_db
    full_all(server)
    with conn.cursor() as cur:
        cur.execute("UPDATE OrderLine SET quantity = quantity + 2 WHERE order_id IN (3, 17, 29)")
    for table in MATERIALIZED_VIEWS:
        result = do_refresh(server, table)
        assert result["mode"] == "incremental" and result["changed"] is True, table
        assert result["recomputed_keys"] == 0 and result["delta_keys"] > 0, (table, result)
        assert result["updated"] == result["delta_keys"] and result["inserted"] == 0, table
        assert_equal_to_view(conn, table)
        assert result["rows"] == scalar(conn, f"SELECT COUNT(*) FROM {table}")


def test_last_line_of_a_day_removes_its_row_and_a_new_day_is_added(server_db):
    server, conn = server_db
    full_all(server)
    with conn.cursor() as cur:
        cur.execute("INSERT INTO `Order` (order_id, customer_id, date_placed) "
                    "VALUES (901, 2, '2030-01-02 08:00:00')")
        cur.execute("INSERT INTO OrderLine (order_id, product_id, quantity) VALUES (901, 5, 2)")
    result = do_refresh(server, "DailySalesMV")
    assert (result["inserted"], result["recomputed_keys"]) == (1, 0)
    assert_equal_to_view(conn, "DailySalesMV")
    with conn.cursor() as cur:
        cur.execute("DELETE FROM OrderLine WHERE order_id = 901")
    result = do_refresh(server, "DailySalesMV")
    assert (result["deleted"], result["recomputed_keys"]) == (1, 0)
    assert scalar(conn, "SELECT COUNT(*) FROM DailySalesMV WHERE sale_date = '2030-01-02'") == 0
    for table in MATERIALIZED_VIEWS:
        do_refresh(server, table)
        assert_equal_to_view(conn, table)


def test_orders_count_for_a_day_once_they_have_lines(server_db):
    """DailySales counts the orders WITH lines: first line +1, last line -1, others 0."""
    server, conn = server_db
    full_all(server)
    day = "2024-03-05"
    before = scalar(conn, "SELECT order_count FROM DailySalesMV WHERE sale_date = %s", (day,))
    with conn.cursor() as cur:
        cur.execute("INSERT INTO `Order` (order_id, customer_id, date_placed) "
                    "VALUES (902, 4, '2024-03-05 23:00:00'), (903, 5, '2024-03-05 23:30:00')")
        cur.execute("INSERT INTO OrderLine (order_id, product_id, quantity) "
                    "VALUES (902, 1, 1), (902, 2, 1), (903, 3, 1)")
    result = do_refresh(server, "DailySalesMV")
    assert result["recomputed_keys"] == 0 and result["updated"] == 1
    assert scalar(conn, "SELECT order_count FROM DailySalesMV WHERE sale_date = %s",
                  (day,)) == before + 2
    with conn.cursor() as cur:
        cur.execute("DELETE FROM OrderLine WHERE order_id = 902 AND product_id = 1")  # one left
        cur.execute("DELETE FROM OrderLine WHERE order_id = 903")  # its only line
        cur.execute("INSERT INTO OrderLine (order_id, product_id, quantity) VALUES (903, 4, 2)")
        cur.execute("DELETE FROM OrderLine WHERE order_id = 903")
    result = do_refresh(server, "DailySalesMV")
    assert result["recomputed_keys"] == 0
    assert scalar(conn, "SELECT order_count FROM DailySalesMV WHERE sale_date = %s",
                  (day,)) == before + 1
    assert_equal_to_view(conn, "DailySalesMV")


def test_concurrent_orders_neither_deadlock_nor_drift(server_db):
    """The triggers take no extra locks: orders placed at the same time never deadlock."""
    server, conn = server_db
    full_all(server)
    errors = []

    def clerk(seed_):
        rnd = random.Random(seed_)
        cconn = server.connect(database=DB)
        try:
            for _ in range(40):
                lines = [{"product_id": p, "quantity": 1} for p in rnd.sample(range(1, 7), 3)]
                with cconn.cursor() as cur:
                    cur.execute("CALL place_order(%s, %s, @o)",
                                (rnd.randint(1, 8), json.dumps(lines)))
        except pymysql.MySQLError as error:
            errors.append(error)
        finally:
            cconn.close()

    threads = [threading.Thread(target=clerk, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    for table in MATERIALIZED_VIEWS:
        assert do_refresh(server, table)["mode"] == "incremental"
        assert_equal_to_view(conn, table)


def test_removing_the_first_order_recomputes_first_and_last_dates(server_db):
    server, conn = server_db
    full_all(server)
    customer = scalar(conn, "SELECT customer_id FROM CustomerPurchasesMV WHERE order_count > 1 "
                            "ORDER BY customer_id LIMIT 1")
    first = scalar(conn, "SELECT order_id FROM `Order` WHERE customer_id = %s "
                         "ORDER BY date_placed LIMIT 1", (customer,))
    with conn.cursor() as cur:
        cur.execute("DELETE FROM OrderLine WHERE order_id = %s", (first,))
        cur.execute("DELETE FROM `Order` WHERE order_id = %s", (first,))
    for table in MATERIALIZED_VIEWS:
        result = do_refresh(server, table)
        assert result["changed"] is True, table
        assert_equal_to_view(conn, table)
    assert do_refresh(server, "CustomerPurchasesMV", mode="full")["changed"] is False


def test_check_mode_applies_nothing_and_keeps_the_changelog(server_db):
    server, conn = server_db
    full_all(server)
    with conn.cursor() as cur:
        cur.execute("UPDATE OrderLine SET quantity = quantity + 1 WHERE order_id = 5")
    before = rows(conn, "SELECT * FROM DailySalesMV ORDER BY sale_date")
    logged = scalar(conn, "SELECT COUNT(*) FROM ChangeLog WHERE mv_table = 'DailySalesMV'")
    result = do_refresh(server, "DailySalesMV", check_mode=True)
    assert result["changed"] is True and result["updated"] == 1
    assert rows(conn, "SELECT * FROM DailySalesMV ORDER BY sale_date") == before
    assert scalar(conn, "SELECT COUNT(*) FROM ChangeLog WHERE mv_table = 'DailySalesMV'") == logged
    assert do_refresh(server, "DailySalesMV")["changed"] is True
    assert_equal_to_view(conn, "DailySalesMV")


@settings(max_examples=15, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(rounds=st.lists(st.lists(CHANGE, min_size=1, max_size=6), min_size=2, max_size=4))
def test_chained_incremental_refreshes_stay_equal_to_the_view(server_db, rounds):
    """Deltas accumulate over several incremental refreshes with no full refresh between."""
    server, conn = server_db
    full_all(server)
    for changes in rounds:
        for change in changes:
            apply_change(conn, change)
        for table in MATERIALIZED_VIEWS:
            assert do_refresh(server, table)["mode"] == "incremental"
            assert_equal_to_view(conn, table)


def test_changes_committed_during_refreshes_are_counted_once(server_db):
    """A writer commits quantity changes while full and incremental refreshes run."""
    server, conn = server_db
    full_all(server)
    lines = rows(conn, "SELECT order_id, product_id FROM OrderLine ORDER BY 1, 2")
    stop, errors = threading.Event(), []

    def writer():
        rnd = random.Random(5)
        wconn = server.connect(database=DB)
        try:
            while not stop.is_set():
                with wconn.cursor() as cur:
                    for _ in range(3):
                        cur.execute("UPDATE OrderLine SET quantity = %s WHERE order_id = %s "
                                    "AND product_id = %s", (rnd.randint(1, 9),
                                                            *rnd.choice(lines)))
                wconn.commit()
        except pymysql.MySQLError as error:
            errors.append(error)
        finally:
            wconn.close()

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        for round_ in range(12):
            for table in MATERIALIZED_VIEWS:
                do_refresh(server, table, mode="full" if round_ % 3 == 0 else "incremental")
    finally:
        stop.set()
        thread.join()
    assert errors == []
    for table in MATERIALIZED_VIEWS:
        do_refresh(server, table)
        assert_equal_to_view(conn, table)


def test_full_refresh_procedure_leaves_no_delta_to_add_twice(server_db):
    server, conn = server_db
    with conn.cursor() as cur:
        cur.execute("UPDATE OrderLine SET quantity = quantity + 1 WHERE order_id = 7")
        cur.execute("CALL refresh_materialized_view('DailySalesMV')")
        cur.fetchall()
    assert scalar(conn, "SELECT COUNT(*) FROM ChangeLog WHERE mv_table = 'DailySalesMV' "
                        "AND delta = 1") == 0
    assert do_refresh(server, "DailySalesMV")["changed"] is False
    assert_equal_to_view(conn, "DailySalesMV")


def test_every_delta_spec_names_a_registered_table_and_its_view():
    assert {table: spec["view"] for table, spec in DELTA_SPECS.items()} == {
        table: MATERIALIZED_VIEWS[table] for table in DELTA_SPECS}


def test_a_delta_spec_that_does_not_match_fails_loudly(mariadb_server, monkeypatch):
    database = "pos_t_delta_mismatch"
    create_schema(mariadb_server, database)
    try:
        for table in MATERIALIZED_VIEWS:
            refresh_on_new_connection(mariadb_server, database, table, mode="full")
        spec = DELTA_SPECS["DailySalesMV"]
        monkeypatch.setitem(DELTA_SPECS, "DailySalesMV", {**spec, "view": "DailySalesByDay"})
        with pytest.raises(ViewRefreshError, match=r"DELTA_SPECS\['DailySalesMV'\] .* is for the "
                           "view DailySalesByDay but pos_t_delta_mismatch.DailySalesMV is "
                           "refreshed from DailySales"):
            refresh_on_new_connection(mariadb_server, database, "DailySalesMV")
        monkeypatch.setitem(DELTA_SPECS, "DailySalesMV", spec)
        mariadb_server.client("ALTER TABLE ChangeLog DROP COLUMN d_amount", database=database)
        for table in DELTA_SPECS:
            with pytest.raises(ViewRefreshError, match=r"needs the ChangeLog column\(s\) d_amount"):
                refresh_on_new_connection(mariadb_server, database, table)
    finally:
        mariadb_server.client(f"DROP DATABASE IF EXISTS {database}")
