"""mariadb_view_refresh logic (module_utils/mariadb_pos/view_refresh.py) against a real server."""

from __future__ import annotations

import threading
import time

import pymysql
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mariadb_pos.view_refresh import ViewRefreshError, refresh

from tests.support.order_changes import CHANGE, apply_change
from tests.support.pos_schema_role import run_module
from tests.support.schema import (
    MATERIALIZED_VIEWS,
    assert_equal_to_view,
    create_schema_with_orders,
    refresh_on_new_connection,
    rows,
    scalar,
)

DB = "pos_t_refresh"


@pytest.fixture(scope="module")
def server_db(mariadb_server):
    conn = create_schema_with_orders(mariadb_server, DB, stock=100000)
    yield mariadb_server, conn
    conn.close()


@pytest.fixture()
def db(server_db):
    return server_db[1]


def fresh(mariadb_server):
    return mariadb_server.connect(database=DB)


def do_refresh(mariadb_server, table, **kwargs):
    return refresh_on_new_connection(mariadb_server, DB, table, **kwargs)


@pytest.mark.parametrize("table", sorted(MATERIALIZED_VIEWS))
def test_full_refresh_equals_a_fresh_select_and_is_idempotent(server_db, table):
    server, conn = server_db
    definition = rows(conn, f"SHOW CREATE TABLE {table}")
    first = do_refresh(server, table, mode="full")
    # the shadow table got its secondary indexes back before it was swapped in
    assert rows(conn, f"SHOW CREATE TABLE {table}") == definition
    assert first["mode"] == "full" and first["rows"] > 0 and first["duration"] >= 0
    assert_equal_to_view(conn, table)
    again = do_refresh(server, table, mode="full")
    assert again["changed"] is False and again["rows"] == first["rows"]
    assert scalar(conn, "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s "
                        "AND TABLE_NAME LIKE %s", (DB, table + "\\_\\_%")) == 0
    assert scalar(conn, "SELECT COUNT(*) FROM ChangeLog WHERE mv_table = %s", (table,)) == 0
    assert rows(conn, "SELECT last_refresh_mode, row_count FROM MaterializedView "
                      "WHERE mv_table = %s", (table,)) == [("full", first["rows"])]


def test_full_refresh_keeps_every_index_of_the_table(server_db):
    """The full build adds the plain secondary indexes after filling the shadow table: prefix,
    descending and multi-column ones come back exactly; a unique one, and one whose name the
    project's identifier rule refuses, stay throughout."""
    server, conn = server_db
    table = "CustomerPurchasesMV"
    with conn.cursor() as cur:
        # extra_idx comes last: it is the one left out of the shadow table and added back
        cur.execute(f"ALTER TABLE {table} ADD INDEX `extra-dash` (first_name), "
                    "ADD INDEX extra_idx (last_name(10), total_spent DESC, first_name), "
                    "ADD UNIQUE INDEX extra_uq (customer_id, email)")
    try:
        definition = rows(conn, f"SHOW CREATE TABLE {table}")
        with conn.cursor() as cur:  # a real difference, so the shadow is swapped in
            cur.execute(f"UPDATE {table} SET total_spent = total_spent + 1 LIMIT 1")
        assert do_refresh(server, table, mode="full")["changed"] is True
        assert rows(conn, f"SHOW CREATE TABLE {table}") == definition
        assert_equal_to_view(conn, table)
    finally:
        with conn.cursor() as cur:
            cur.execute(f"ALTER TABLE {table} DROP INDEX extra_idx, DROP INDEX extra_uq, "
                        "DROP INDEX `extra-dash`")


BULK_OPERATIONS = ("SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS "
                   "WHERE VARIABLE_NAME = 'INNODB_BULK_OPERATIONS'")
SESSION_CHECKS = "SELECT @@SESSION.unique_checks, @@SESSION.foreign_key_checks"


@pytest.mark.parametrize("checks", [(1, 1), (0, 1)])
def test_the_full_build_is_a_bulk_insert_logged_as_rows_and_restores_the_session(server_db,
                                                                                  checks):
    """The shadow table is filled by InnoDB's bulk insert into an empty table (both checks off
    for that transaction only): the server counts a bulk operation, the binary log still holds
    the rows for the replicas, and the session gets its own values back."""
    server, conn = server_db
    table = "ProductBuyersMV"
    with conn.cursor() as cur:  # a real difference, so the shadow is swapped in
        cur.execute(f"UPDATE {table} SET total_spent = total_spent + 1 LIMIT 1")
    bulk_operations = int(scalar(conn, BULK_OPERATIONS))
    log_file, position = rows(conn, "SHOW MASTER STATUS")[0][:2]
    own = server.connect()
    try:
        with own.cursor() as cur:
            cur.execute("SET SESSION unique_checks = %s, foreign_key_checks = %s", checks)
        assert refresh(own, DB, table, mode="full")["changed"] is True
        assert rows(own, SESSION_CHECKS) == [checks]
    finally:
        own.close()
    assert int(scalar(conn, BULK_OPERATIONS)) > bulk_operations
    events = rows(conn, "SHOW BINLOG EVENTS IN %s FROM %s", (log_file, position))
    shadow = [n for n, e in enumerate(events)
              if e[2] == "Table_map" and e[5].endswith(f"({DB}.{table}__shadow)")]
    assert shadow and events[shadow[0] + 1][2].startswith("Write_rows"), events[:20]
    assert_equal_to_view(conn, table)


COLUMNS = ("product_id, {name} AS product_name, customer_id, first_name, last_name, email, "
           "order_count, total_quantity, total_spent, first_ordered_at, last_ordered_at")


@pytest.mark.parametrize("select, message", [
    # every row twice: MariaDB 10.11's bulk insert then stores none and reports no error
    ("SELECT * FROM ProductBuyers UNION ALL SELECT * FROM ProductBuyers",
     "same primary key|Duplicate entry"),
    # a value too long for its column: the INSERT itself fails (strict mode)
    ("SELECT %s FROM ProductBuyers" % COLUMNS.format(name="REPEAT('x', 300)"),
     "Data too long"),
])
def test_a_failed_full_build_changes_nothing_and_restores_the_session(server_db, select,
                                                                      message):
    server, conn = server_db
    table = "ProductBuyersMV"
    do_refresh(server, table, mode="full")
    snapshot = rows(conn, f"SELECT * FROM {table} ORDER BY product_id, customer_id")
    with conn.cursor() as cur:
        cur.execute(f"CREATE OR REPLACE VIEW BrokenBuyers AS {select}")
    own = server.connect()
    try:
        with pytest.raises((ViewRefreshError, pymysql.err.MySQLError), match=message):
            refresh(own, DB, table, mode="full", view="BrokenBuyers")
        assert rows(own, SESSION_CHECKS) == [(1, 1)]
    finally:
        own.close()
        with conn.cursor() as cur:
            cur.execute("DROP VIEW BrokenBuyers")
    assert rows(conn, f"SELECT * FROM {table} ORDER BY product_id, customer_id") == snapshot
    assert do_refresh(server, table, mode="full")["changed"] is False
    assert scalar(conn, "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s "
                        "AND TABLE_NAME LIKE %s", (DB, table + "\\_\\_%")) == 0


def test_check_mode_reports_the_change_and_writes_nothing(server_db):
    server, conn = server_db
    do_refresh(server, "CustomerPurchasesMV", mode="full")
    with conn.cursor() as cur:
        cur.execute("UPDATE OrderLine SET quantity = quantity + 1 WHERE order_id = 3")
    snapshot = rows(conn, "SELECT * FROM CustomerPurchasesMV ORDER BY customer_id")
    log = rows(conn, "SELECT change_id FROM ChangeLog WHERE mv_table = 'CustomerPurchasesMV'")
    for mode in ("incremental", "full"):
        result = do_refresh(server, "CustomerPurchasesMV", mode=mode, check_mode=True)
        assert result["changed"] is True and result["mode"] == mode
        assert rows(conn, "SELECT * FROM CustomerPurchasesMV ORDER BY customer_id") == snapshot
        assert rows(conn, "SELECT change_id FROM ChangeLog "
                          "WHERE mv_table = 'CustomerPurchasesMV'") == log
    result = do_refresh(server, "CustomerPurchasesMV")
    assert (result["changed"], result["mode"], result["updated"]) == (True, "incremental", 1)
    assert_equal_to_view(conn, "CustomerPurchasesMV")


def test_incremental_reports_unchanged_when_a_change_was_undone(server_db):
    server, conn = server_db
    do_refresh(server, "ProductBuyersMV", mode="full")
    with conn.cursor() as cur:
        cur.execute("UPDATE Customer SET last_name = 'Temporary' WHERE customer_id = 2")
        cur.execute("UPDATE Customer SET last_name = 'Last2' WHERE customer_id = 2")
    result = do_refresh(server, "ProductBuyersMV")
    assert result["changed"] is False and result["consumed_changes"] == 2
    assert scalar(conn, "SELECT COUNT(*) FROM ChangeLog WHERE mv_table = 'ProductBuyersMV'") == 0


def test_incremental_takes_extra_keys_from_an_etl_delta(server_db):
    server, conn = server_db
    do_refresh(server, "CustomerPurchasesMV", mode="full")
    with conn.cursor() as cur:
        cur.execute("SET @pos_bulk_load = 1")  # bypasses the ChangeLog, as the ETL does
        cur.execute("UPDATE Customer SET email = 'etl@example.com' WHERE customer_id = 4")
        cur.execute("SET @pos_bulk_load = NULL")
    assert do_refresh(server, "CustomerPurchasesMV")["changed"] is False
    result = do_refresh(server, "CustomerPurchasesMV", keys={"customer_id": [4]})
    assert result["changed"] is True and result["updated"] == 1
    assert_equal_to_view(conn, "CustomerPurchasesMV")
    with pytest.raises(ViewRefreshError, match="'product_id' is not a key column"):
        do_refresh(server, "CustomerPurchasesMV", keys={"product_id": [1]})


@settings(max_examples=25, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(changes=st.lists(CHANGE, min_size=1, max_size=8))
def test_incremental_refresh_equals_full_after_random_changes(server_db, changes):
    server, conn = server_db
    for table in MATERIALIZED_VIEWS:
        do_refresh(server, table, mode="full")
    for change in changes:
        apply_change(conn, change)
    for table in MATERIALIZED_VIEWS:
        result = do_refresh(server, table, mode="incremental")
        assert result["mode"] == "incremental"
        assert_equal_to_view(conn, table)
        assert do_refresh(server, table)["changed"] is False


def test_a_reader_never_sees_a_missing_or_empty_table_during_full_refreshes(server_db):
    server, conn = server_db
    with conn.cursor() as cur:  # a few thousand rows so each rebuild takes a while
        cur.execute("SET @pos_bulk_load = 1")
        cur.executemany("INSERT INTO Customer (customer_id, first_name, last_name, email, "
                        "address_line1, zip) VALUES (%s, 'Bulk', 'Reader', 'b@x.org', 's', "
                        "'02134')", [(i,) for i in range(1000, 4000)])
        cur.executemany("INSERT INTO `Order` (order_id, customer_id, date_placed) "
                        "VALUES (%s, %s, '2024-06-01')", [(i, i) for i in range(1000, 4000)])
        cur.executemany("INSERT INTO OrderLine VALUES (%s, %s, 1, 2.00)",
                        [(i, p) for i in range(1000, 4000) for p in (1, 2)])
        cur.execute("SET @pos_bulk_load = NULL")
    do_refresh(server, "ProductBuyersMV", mode="full")
    minimum = scalar(conn, "SELECT COUNT(*) FROM ProductBuyersMV")
    stop, seen, errors = threading.Event(), [], []

    def reader():
        reader_conn = fresh(server)
        try:
            while not stop.is_set():
                try:
                    seen.append(scalar(reader_conn, "SELECT COUNT(*) FROM ProductBuyersMV"))
                except pymysql.MySQLError as error:  # e.g. 1146 table doesn't exist
                    errors.append(error)
        finally:
            reader_conn.close()

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        swaps = 0
        for round_ in range(6):
            with conn.cursor() as cur:  # a real change, so every refresh swaps
                cur.execute("UPDATE Product SET name = %s WHERE product_id = 1",
                            (f"Swap {round_}",))
            swaps += do_refresh(server, "ProductBuyersMV", mode="full")["changed"]
            time.sleep(0.02)
    finally:
        stop.set()
        thread.join()
    assert swaps == 6
    assert errors == []
    assert len(seen) > 20 and min(seen) >= minimum
    assert_equal_to_view(conn, "ProductBuyersMV")


@pytest.mark.parametrize("table, kwargs, message", [
    ("ProductBuyersMV`; DROP TABLE Customer; --", {}, "invalid table name"),
    ("Customer", {}, "is not registered"),
    ("NoSuchMV", {}, "does not exist"),
    ("ProductBuyersMV", {"view": "NoSuchView"}, "source view pos_t_refresh.NoSuchView"),
    ("ProductBuyersMV", {"view": "DailySales"}, "lacks the column(s) product_id"),
    ("ProductBuyersMV", {"key_columns": ["order_count"]}, "'order_count' is not a column of"),
    ("ProductBuyersMV", {"mode": "partial"}, "mode must be one of"),
])
def test_bad_arguments_give_a_clear_error_and_change_nothing(server_db, table, kwargs, message):
    server, conn = server_db
    with pytest.raises(ViewRefreshError) as error:
        do_refresh(server, table, **kwargs)
    assert message in str(error.value)
    assert scalar(conn, "SELECT COUNT(*) FROM Customer") > 0


def test_a_refresh_waits_for_the_lock_of_a_running_one(server_db):
    server, _conn = server_db
    holder = fresh(server)
    try:
        assert scalar(holder, "SELECT GET_LOCK(%s, 1)",
                      (f"pos_mv_refresh:{DB}.DailySalesMV",)) == 1
        with pytest.raises(ViewRefreshError, match="still holds the lock"):
            do_refresh(server, "DailySalesMV", lock_timeout=1)
    finally:
        holder.close()
    assert do_refresh(server, "DailySalesMV")["mode"] in ("full", "incremental")


@pytest.mark.parametrize("payload", ["'; DROP TABLE Customer; --", "1' OR '1'='1", "back\\slash",
                                     "nul\x00byte", "emoji 🛒", "`Order`"])
def test_injection_payloads_given_to_the_module_are_only_data(server_db, payload):
    server, conn = server_db
    do_refresh(server, "CustomerPurchasesMV", mode="full")
    before = rows(conn, "SELECT * FROM CustomerPurchasesMV ORDER BY customer_id")
    # as key values they travel as parameters: they match no customer, nothing changes
    result = do_refresh(server, "CustomerPurchasesMV", keys={"customer_id": [payload]})
    assert result["changed"] is False and result["refreshed_keys"] == 1
    # as identifiers they are refused before any SQL is built
    for kwargs in ({"view": payload}, {"key_columns": [payload]}):
        with pytest.raises(ViewRefreshError, match="invalid"):
            do_refresh(server, "CustomerPurchasesMV", **kwargs)
    assert rows(conn, "SELECT * FROM CustomerPurchasesMV ORDER BY customer_id") == before
    assert scalar(conn, "SELECT COUNT(*) FROM Customer") > 0
    # and a customer whose name is the payload is materialized literally
    with conn.cursor() as cur:
        cur.execute("UPDATE Customer SET first_name = %s WHERE customer_id = 5", (payload,))
    do_refresh(server, "CustomerPurchasesMV")
    assert scalar(conn, "SELECT first_name FROM CustomerPurchasesMV WHERE customer_id = 5") \
        == payload


def test_leftovers_of_an_interrupted_full_refresh_are_cleaned_up(server_db):
    server, conn = server_db
    with conn.cursor() as cur:  # as if a refresh died after CREATE / after the RENAME
        cur.execute("CREATE TABLE ProductBuyersMV__shadow LIKE ProductBuyersMV")
        cur.execute("INSERT INTO ProductBuyersMV__shadow SELECT * FROM ProductBuyersMV LIMIT 1")
        cur.execute("CREATE TABLE ProductBuyersMV__old (junk INT)")
        cur.execute("UPDATE Product SET name = 'After crash' WHERE product_id = 2")
    result = do_refresh(server, "ProductBuyersMV", mode="full")
    assert result["changed"] is True
    assert_equal_to_view(conn, "ProductBuyersMV")
    assert scalar(conn, "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s "
                        "AND TABLE_NAME LIKE 'ProductBuyersMV\\_\\_%%'", (DB,)) == 0


def test_the_module_deletes_rows_in_an_incremental_refresh(mariadb_server):
    """Through Ansible, as the roles run it: the module's connection selects no database, and
    an incremental refresh that removes rows (a customer's last order deleted) still works."""
    database = "pos_t_refresh_module"
    conn = create_schema_with_orders(mariadb_server, database, stock=100000)
    login = dict(login_user="root", login_unix_socket=mariadb_server.socket,
                 database=database, name="ProductBuyersMV")
    try:
        assert run_module("mariadb_view_refresh", dict(login, mode="full"))["mode"] == "full"
        customer = scalar(conn, "SELECT MIN(customer_id) FROM `Order`")
        bought = scalar(conn, "SELECT COUNT(*) FROM ProductBuyersMV WHERE customer_id = %s",
                        (customer,))
        with conn.cursor() as cur:
            cur.execute("DELETE ol FROM OrderLine AS ol JOIN `Order` AS o USING (order_id) "
                        "WHERE o.customer_id = %s", (customer,))
            cur.execute("DELETE FROM `Order` WHERE customer_id = %s", (customer,))
        conn.commit()
        result = run_module("mariadb_view_refresh", dict(login, mode="incremental"))
        assert result["mode"] == "incremental" and result["changed"] is True
        assert bought > 0 and result["deleted"] == bought, result
        conn.commit()  # a new snapshot for the comparison
        assert scalar(conn, "SELECT COUNT(*) FROM ProductBuyersMV WHERE customer_id = %s",
                      (customer,)) == 0
        assert_equal_to_view(conn, "ProductBuyersMV")
    finally:
        conn.close()
        mariadb_server.client(f"DROP DATABASE IF EXISTS {database}")
