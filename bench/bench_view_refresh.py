"""Benchmark: incremental vs full refresh of the materialized views, in one run on one server.

    .venv/bin/python bench/bench_view_refresh.py [--orders 250000] [--lines-per-order 4]
                                                 [--changed 0.01] [--seed 7]

Starts a throw-away MariaDB (tests/support/mariadb_instance.py: binlog ROW, GTID), applies
files/sql (with the loader roles/pos_schema uses), bulk-loads (as the ETL does,
@pos_bulk_load = 1) orders * lines-per-order order lines (default 1,000,000) over 50,000
customers, 1,000 products and three years, then for each materialized view:

* full         -- mariadb_view_refresh full refresh (shadow table + atomic RENAME) of the data;
* incremental  -- after changing 1 % of the orders (the quantity of every line of each, through
                  the triggers, which feed the ChangeLog with the signed contribution of each
                  change, files/sql/definitions/triggers.sql), the incremental refresh (adds
                  the summed deltas per key);

in two scenarios: the changed orders drawn at random from all orders, and the most recent 1 %
(the usual shape: recent orders get shipped, corrected, cancelled). After each incremental
refresh the table is checked equal to its view. Prints a JSON report; the figures are recorded
in docs/schema.md. Target: incremental <= 10 % of full.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "module_utils"))

from mariadb_pos.view_refresh import refresh  # noqa: E402

from tests.support.mariadb_instance import MariaDBInstance  # noqa: E402
from tests.support.schema import MATERIALIZED_VIEWS, apply_schema_files  # noqa: E402

DB = "pos"
MVS = tuple(MATERIALIZED_VIEWS)  # the registry, files/sql/materialized_views.yml
CUSTOMERS, PRODUCTS = 50_000, 1_000


def load(server, orders, per_order):
    conn = server.connect(database=DB)
    with conn.cursor() as cur:
        cur.execute("SET @pos_bulk_load = 1")
        cur.execute("INSERT INTO City VALUES ('02134', 'Boston', 'MA')")
        cur.execute("INSERT INTO Customer (customer_id, first_name, last_name, email, "
                    "address_line1, zip) SELECT seq, CONCAT('F', seq), CONCAT('L', seq), "
                    "CONCAT('c', seq, '@example.com'), 'street', '02134' "
                    "FROM seq_1_to_%s" % CUSTOMERS)
        cur.execute("INSERT INTO Product SELECT seq, CONCAT('Product ', seq), "
                    "1 + seq %% 97 + (seq %% 100) / 100, 100000000 FROM seq_1_to_%s" % PRODUCTS)
        cur.execute("INSERT INTO `Order` (order_id, customer_id, date_placed) "
                    "SELECT seq, 1 + (seq * 7919) %% %s, "
                    "'2022-01-01' + INTERVAL (seq * 378) SECOND FROM seq_1_to_%s"
                    % (CUSTOMERS, orders))
        cur.execute("INSERT INTO OrderLine SELECT o.seq, 1 + (o.seq * 7 + k.seq * 251) %% %s, "
                    "1 + (o.seq + k.seq) %% 5, 1 + o.seq %% 50 FROM seq_1_to_%s AS o "
                    "JOIN seq_0_to_%s AS k" % (PRODUCTS, orders, per_order - 1))
        cur.execute("SELECT COUNT(*) FROM OrderLine")
        lines = cur.fetchone()[0]
        cur.execute("SET @pos_bulk_load = NULL")
        for table in ("Customer", "Product", "`Order`", "OrderLine"):
            cur.execute("ANALYZE TABLE %s" % table)
            cur.fetchall()
    conn.close()
    return lines


def timed_refresh(server, table, mode):
    conn = server.connect(database=DB)
    try:
        started = time.perf_counter()
        result = refresh(conn, DB, table, mode=mode)
        result["wall"] = time.perf_counter() - started
        return result
    finally:
        conn.close()


def change_orders(server, order_ids):
    conn = server.connect(database=DB)
    started = time.perf_counter()
    with conn.cursor() as cur:
        for start in range(0, len(order_ids), 500):
            chunk = order_ids[start:start + 500]
            cur.execute("UPDATE OrderLine SET quantity = quantity + 1 WHERE order_id IN (%s)"
                        % ", ".join(["%s"] * len(chunk)), chunk)
    elapsed = time.perf_counter() - started
    conn.close()
    return elapsed


def check_equal(server, table):
    """Full refresh in check mode: changed=False means the table equals its view."""
    conn = server.connect(database=DB)
    try:
        return not refresh(conn, DB, table, mode="full", check_mode=True)["changed"]
    finally:
        conn.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=250_000)
    parser.add_argument("--lines-per-order", type=int, default=4)
    parser.add_argument("--changed", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    rnd = random.Random(args.seed)
    report = {"orders": args.orders, "changed_fraction": args.changed}
    server = MariaDBInstance()
    # Its own tmpdir: internal temporary tables must not share /tmp with other jobs.
    server.extra_options = ("--innodb-buffer-pool-size=1G", f"--tmpdir={server.basedir}")
    with server:
        server.client(f"CREATE DATABASE {DB}")
        apply_schema_files(server, DB)  # the loader of roles/pos_schema
        started = time.perf_counter()
        report["order_lines"] = load(server, args.orders, args.lines_per_order)
        report["load_seconds"] = round(time.perf_counter() - started, 2)
        full = {}
        for table in MVS:
            timed_refresh(server, table, "full")  # first build (never refreshed)
            # the measured full refresh: a real change so the swap happens
            change_orders(server, [1])
            result = timed_refresh(server, table, "full")
            full[table] = {"seconds": round(result["wall"], 3), "rows": result["rows"]}
        report["full"] = full
        count = max(1, int(args.orders * args.changed))
        scenarios = {"random_1pct": sorted(rnd.sample(range(1, args.orders + 1), count)),
                     "recent_1pct": list(range(args.orders - count + 1, args.orders + 1))}
        for name, order_ids in scenarios.items():
            for table in MVS:  # start from up-to-date tables
                timed_refresh(server, table, "incremental")
            changes = change_orders(server, order_ids)
            results = {}
            for table in MVS:
                result = timed_refresh(server, table, "incremental")
                assert result["mode"] == "incremental", result
                results[table] = {
                    "seconds": round(result["wall"], 3),
                    "ratio_to_full": round(result["wall"] / full[table]["seconds"], 4),
                    "refreshed_keys": result["refreshed_keys"],
                    "delta_keys": result.get("delta_keys", 0),
                    "recomputed_keys": result.get("recomputed_keys", 0),
                    "consumed_changes": result["consumed_changes"],
                    "rows_written": result["inserted"] + result["updated"] + result["deleted"],
                    "equal_to_view": check_equal(server, table)}
            total_inc = sum(r["seconds"] for r in results.values())
            total_full = sum(f["seconds"] for f in full.values())
            report[name] = {"changed_orders": len(order_ids),
                            "change_seconds": round(changes, 2), "views": results,
                            "total_incremental_seconds": round(total_inc, 3),
                            "total_full_seconds": round(total_full, 3),
                            "total_ratio": round(total_inc / total_full, 4)}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
