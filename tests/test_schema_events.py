"""files/sql/definitions/events.sql: the nightly full refresh EVENT and the procedure it calls.

Runs its own server: turning event_scheduler on must not fire events of other tests' databases.
"""

from __future__ import annotations

import time

import pytest

from tests.support.mariadb_instance import MariaDBInstance
from tests.support.schema import create_schema, rows, scalar, seed

DB = "pos_t_events"
MVS = {"ProductBuyersMV": "ProductBuyers", "CustomerPurchasesMV": "CustomerPurchases",
       "DailySalesMV": "DailySales"}


@pytest.fixture(scope="module")
def db():
    with MariaDBInstance() as server:
        create_schema(server, DB)
        conn = server.connect(database=DB)
        seed(conn)
        with conn.cursor() as cur:
            cur.execute("CALL place_order(1, '[{\"product_id\": 2, \"quantity\": 3}]', @o)")
        yield conn
        conn.close()


def test_the_event_is_defined_enabled_and_owned_by_root(db):
    assert rows(db, "SELECT STATUS, DEFINER, INTERVAL_VALUE, INTERVAL_FIELD, EVENT_DEFINITION "
                    "FROM information_schema.EVENTS WHERE EVENT_SCHEMA = %s "
                    "AND EVENT_NAME = 'refresh_materialized_views_nightly'", (DB,)) == [
        ("ENABLED", "root@localhost", "1", "DAY", "CALL refresh_all_materialized_views()")]


def test_the_event_runs_a_full_refresh_of_every_materialized_view(db):
    with db.cursor() as cur:
        cur.execute("UPDATE MaterializedView SET last_refreshed_at = NULL")
        cur.execute("ALTER EVENT refresh_materialized_views_nightly ON SCHEDULE AT "
                    "CURRENT_TIMESTAMP + INTERVAL 1 SECOND ON COMPLETION PRESERVE")
        cur.execute("SET GLOBAL event_scheduler = ON")
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and scalar(
                db, "SELECT COUNT(*) FROM MaterializedView "
                    "WHERE last_refreshed_at IS NOT NULL") < len(MVS):
            time.sleep(0.2)
    finally:
        with db.cursor() as cur:
            cur.execute("SET GLOBAL event_scheduler = OFF")
    assert rows(db, "SELECT mv_table, last_refresh_mode FROM MaterializedView "
                    "ORDER BY mv_table") == [(t, "full") for t in sorted(MVS)]
    for table, view in MVS.items():
        assert sorted(rows(db, f"SELECT * FROM {table}")) == sorted(
            rows(db, f"SELECT * FROM {view}"))
    assert scalar(db, "SELECT COUNT(*) FROM ChangeLog") == 0
