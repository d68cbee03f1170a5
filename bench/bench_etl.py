"""Benchmark of the CSV ETL (mariadb_csv_etl) against plain loaders, in one run on one server.

    .venv/bin/python bench/bench_etl.py [--orderlines 1000000] [--seed 7] [--repeat 1]

Generates the four files (tests/support/pos_csv_generator.py), starts a throw-away MariaDB
(tests/support/mariadb_instance.py: binlog ROW, GTID) and times, each on a fresh database:

* etl        -- the whole ETL (mariadb_pos.etl.run, as the module runs it): extract, clean, load,
                audit; triggers present;
* raw_load   -- LOAD DATA LOCAL INFILE of the same files straight into the final schema
                (files/sql applied by the project's schema loader: the same tables and triggers
                as the ETL, triggers bypassed with @pos_bulk_load = 1 like the ETL's,
                foreign_key_checks=0, no cleaning: dirty rows are truncated or dropped by the
                server, duplicates ignored);
* raw_load_base_tables -- the same into files/sql/001 only (no triggers at all), for reference;
* executemany -- csv.reader + PyMySQL executemany (INSERT IGNORE, batches of 10,000), same
                schema and session as raw_load;
* to_sql     -- pandas.read_csv + DataFrame.to_sql (SQLAlchemy + PyMySQL, method="multi",
                chunksize 10,000), same schema and session as raw_load;
* noop_rerun -- the ETL again with unchanged files;
* partial_reload -- the ETL with 1 % of the order-line lines removed (quantities lowered, pairs
                deleted): the materialized views are then refreshed as the ETL advises
                (incremental from the keys it logged in ChangeLog, or full beyond
                mv_incremental_max_keys) and, for comparison, in full;
* reload_other_files -- the ETL with another data set (seed + 1: nearly every row changes),
                then the refresh it advises (full: more keys than mv_incremental_max_keys).

For the load/reload and the refresh after it the report also gives the CPU seconds of this process
(the ETL and the refresh run in it) and of the server: on cores shared with other jobs the
wall-clock times swing far more than these.

``--etl-only`` skips the plain loaders (for before/after comparisons of the ETL alone).

executemany and to_sql only load (no cleaning); pandas and SQLAlchemy come from
requirements-bench.txt. Prints a JSON report; the figures are recorded in docs/etl.md.
Targets: etl <= 1.5 x raw_load, etl at least 1.5 x faster than executemany and to_sql,
noop_rerun < 1 s.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "module_utils"))

from mariadb_pos.view_refresh import refresh  # noqa: E402

from tests.support.etl_target import run_etl  # noqa: E402
from tests.support.mariadb_instance import MariaDBInstance  # noqa: E402
from tests.support.pos_csv_generator import generate  # noqa: E402
from tests.support.schema import REGISTRY, apply_schema_files  # noqa: E402
from tests.support.schema import SQL_DIR as SQL  # noqa: E402

# file -> (table, column list for LOAD DATA, SET clause, insert columns, row mapper)
RAW = {
    "customers.csv": ("Customer",
                      "(customer_id, first_name, last_name, @ct, @st, zip, address_line1, "
                      "address_line2, email, @bd)", "",
                      "customer_id, first_name, last_name, zip, address_line1, address_line2, "
                      "email", lambda r: (r[0], r[1], r[2], r[5][:5], r[6], r[7], r[8])),
    "products.csv": ("Product", "(product_id, name, @price, @qty)",
                     " SET current_price = 0, quantity_on_hand = 0",
                     "product_id, name, current_price, quantity_on_hand",
                     lambda r: (r[0], r[1], 0, 0)),
    "orders.csv": ("`Order`", "(order_id, customer_id, date_placed, @shipped)", "",
                   "order_id, customer_id, date_placed", lambda r: (r[0], r[1], r[2])),
    "orderlines.csv": ("OrderLine", "(order_id, product_id)", " SET quantity = 1, unit_price = 0",
                       "order_id, product_id, quantity, unit_price",
                       lambda r: (r[0], r[1], 1, 0)),
}


def fresh(server, name: str, full_schema: bool) -> None:
    server.client(f"DROP DATABASE IF EXISTS {name}; DROP DATABASE IF EXISTS {name}_etl; "
                  f"CREATE DATABASE {name}; CREATE DATABASE {name}_etl")
    if full_schema:
        apply_schema_files(server, name)
    else:
        server.client(file=SQL / "001_base_tables.sql", database=name)


def relaxed(conn) -> None:
    """No cleaning, no checks: the plain loaders' session (triggers bypassed like the ETL's)."""
    with conn.cursor() as cursor:
        cursor.execute("SET SESSION foreign_key_checks = 0")
        cursor.execute("SET SESSION sql_mode = ''")
        cursor.execute("SET @pos_bulk_load = 1")


def cpu_seconds(server) -> float:
    """CPU seconds spent so far by this process (the ETL and the refresh run in it) and the
    server: other jobs on the shared cores stretch wall-clock times far more than these."""
    with open(f"/proc/{server.process.pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return time.process_time() + (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bench_etl(server, data: Path, name: str) -> tuple[float, dict, float]:
    fresh(server, name, True)
    params = dict(data_dir=str(data), database=name, etl_database=name + "_etl",
                  login_unix_socket=server.socket)
    cpu = cpu_seconds(server)
    started = time.perf_counter()
    result = run_etl(params)
    return time.perf_counter() - started, result, cpu_seconds(server) - cpu


def bench_raw(server, data: Path, name: str, full_schema: bool = True) -> float:
    fresh(server, name, full_schema)
    conn = server.connect(database=name, local_infile=True)
    conn.autocommit(False)
    relaxed(conn)
    started = time.perf_counter()
    with conn.cursor() as cursor:
        for file, (table, columns, setter, _cols, _map) in RAW.items():
            cursor.execute(f"LOAD DATA LOCAL INFILE %s INTO TABLE {table} CHARACTER SET utf8mb4 "
                           "FIELDS TERMINATED BY ',' OPTIONALLY ENCLOSED BY '\"' "
                           f"LINES TERMINATED BY '\\n' IGNORE 1 LINES {columns}{setter}",
                           (str(data / file),))
    conn.commit()
    elapsed = time.perf_counter() - started
    conn.close()
    return elapsed


def _rows(path: Path):
    with open(path, encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle)
        next(reader)
        yield from reader


def bench_executemany(server, data: Path, name: str) -> float:
    fresh(server, name, True)
    conn = server.connect(database=name)
    conn.autocommit(False)
    relaxed(conn)
    started = time.perf_counter()
    with conn.cursor() as cursor:
        for file, (table, _columns, _setter, cols, mapper) in RAW.items():
            width = len(cols.split(","))
            sql = f"INSERT IGNORE INTO {table} ({cols}) VALUES ({', '.join(['%s'] * width)})"
            batch = []
            for row in _rows(data / file):
                if (len(row) < 10 and file == "customers.csv") or len(row) < 2:
                    continue
                batch.append(mapper(row))
                if len(batch) >= 10000:
                    cursor.executemany(sql, batch)
                    batch.clear()
            if batch:
                cursor.executemany(sql, batch)
    conn.commit()
    elapsed = time.perf_counter() - started
    conn.close()
    return elapsed


def bench_to_sql(server, data: Path, name: str) -> float | None:
    try:
        import pandas
        import sqlalchemy
    except ImportError:
        return None
    fresh(server, name, True)
    engine = sqlalchemy.create_engine(
        f"mysql+pymysql://root@localhost/{name}?unix_socket={server.socket}&charset=utf8mb4")
    started = time.perf_counter()
    with engine.begin() as conn:
        conn.exec_driver_sql("SET SESSION foreign_key_checks = 0")
        conn.exec_driver_sql("SET SESSION sql_mode = ''")
        conn.exec_driver_sql("SET @pos_bulk_load = 1")
        for file, (table, _columns, _setter, cols, _mapper) in RAW.items():
            frame = pandas.read_csv(data / file, dtype=str, encoding="utf-8-sig",
                                    on_bad_lines="skip", keep_default_na=False)
            names = [c.strip() for c in cols.split(",")]
            if file == "customers.csv":
                frame = frame[["ID", "FN", "LN", "ZP", "S1", "S2", "EM"]]
                frame.columns = ["customer_id", "first_name", "last_name", "zip",
                                 "address_line1", "address_line2", "email"]
                frame["zip"] = frame["zip"].str[:5]
            elif file == "products.csv":
                frame = frame[["ID", "Name"]]
                frame.columns = ["product_id", "name"]
                frame["current_price"] = 0
                frame["quantity_on_hand"] = 0
            elif file == "orders.csv":
                frame = frame[["OID", "CID", "Ordered"]]
                frame.columns = ["order_id", "customer_id", "date_placed"]
            else:
                frame.columns = ["order_id", "product_id"]
                frame["quantity"] = 1
                frame["unit_price"] = 0
            frame = frame[names].drop_duplicates(subset=names[:2] if file == "orderlines.csv"
                                                 else names[:1])
            frame.to_sql(table.strip("`"), conn, if_exists="append", index=False,
                         method="multi", chunksize=10000)
    elapsed = time.perf_counter() - started
    engine.dispose()
    return elapsed


def refresh_all(server, database: str, mode: str) -> tuple[float, dict, float]:
    """Refresh every registered materialized view: seconds in all, {table: seconds}, and the
    CPU seconds of this process and the server."""
    conn = server.connect()
    try:
        per_view = {}
        cpu = cpu_seconds(server)
        for entry in REGISTRY:
            started = time.perf_counter()
            refresh(conn, database, entry["table"], mode=mode)
            per_view[entry["table"]] = round(time.perf_counter() - started, 2)
        return sum(per_view.values()), per_view, cpu_seconds(server) - cpu
    finally:
        conn.close()


def timed_etl(server, params: dict) -> tuple[float, dict, float]:
    """One ETL run: seconds, result, CPU seconds of this process and the server."""
    cpu = cpu_seconds(server)
    started = time.perf_counter()
    result = run_etl(params)
    return time.perf_counter() - started, result, cpu_seconds(server) - cpu


def partial_copy(data: Path, out: Path) -> Path:
    """The same files with every 100th order-line line removed."""
    out.mkdir(parents=True, exist_ok=True)
    for name in ("customers.csv", "products.csv", "orders.csv"):
        (out / name).write_bytes((data / name).read_bytes())
    lines = (data / "orderlines.csv").read_text().splitlines(keepends=True)
    (out / "orderlines.csv").write_text(lines[0] + "".join(
        line for number, line in enumerate(lines[1:]) if number % 100 != 99))
    return out


def binlog_bytes(server) -> int:
    conn = server.connect()
    with conn.cursor() as cursor:
        cursor.execute("SHOW BINARY LOGS")
        total = sum(row[1] for row in cursor.fetchall())
    conn.close()
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--orderlines", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, default=None, help="keep the generated files here")
    parser.add_argument("--etl-only", action="store_true", help="skip the plain loaders")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench-etl-"))
    data = args.out or workdir / "data"
    manifest = generate(data, args.orderlines, args.seed)
    read = sum(f["read"] for f in manifest["files"].values())
    with MariaDBInstance() as server:
        binlog_before = binlog_bytes(server)
        etl_seconds, result, etl_cpu = bench_etl(server, data, "bench_etl")
        first_binlog = binlog_bytes(server) - binlog_before
        started = time.perf_counter()
        rerun = run_etl(dict(data_dir=str(data), database="bench_etl",
                             etl_database="bench_etl_etl", login_unix_socket=server.socket))
        noop = time.perf_counter() - started
        assert not rerun["changed"]
        mv_first, mv_first_views, mv_first_cpu = refresh_all(server, "bench_etl", "full")
        params = dict(data_dir=str(partial_copy(data, workdir / "partial")),
                      database="bench_etl", etl_database="bench_etl_etl",
                      login_unix_socket=server.socket)
        partial_seconds, partial, partial_cpu = timed_etl(server, params)
        mv_partial, mv_partial_views, mv_partial_cpu = refresh_all(server, "bench_etl",
                                                                   partial["mv_refresh"])
        mv_partial_full, mv_partial_full_views, mv_partial_full_cpu = refresh_all(
            server, "bench_etl", "full")
        other = workdir / "other"
        generate(other, args.orderlines, args.seed + 1)
        params = dict(data_dir=str(other), database="bench_etl", etl_database="bench_etl_etl",
                      login_unix_socket=server.socket, max_delete_percent=100,
                      delete_rejected=True)
        started = time.perf_counter()
        preview = run_etl(params, check_mode=True)
        check_changed = time.perf_counter() - started
        binlog_before = binlog_bytes(server)
        reload_seconds, reload, reload_cpu = timed_etl(server, params)
        reload_binlog = binlog_bytes(server) - binlog_before
        assert preview["tables"] == reload["tables"]
        mv_reload, mv_reload_views, mv_reload_cpu = refresh_all(server, "bench_etl",
                                                                reload["mv_refresh"])
        raw = raw_base = many = to_sql = None
        if not args.etl_only:
            raw = bench_raw(server, data, "bench_raw")
            raw_base = bench_raw(server, data, "bench_raw_base", full_schema=False)
            many = bench_executemany(server, data, "bench_many")
            to_sql = bench_to_sql(server, data, "bench_pandas")
    def rounded(value, digits=2):
        return None if value is None else round(value, digits)

    def ratio(a, b):
        return None if a is None or b is None else round(a / b, 2)

    report = dict(
        orderlines=args.orderlines, rows_read=read, tables=manifest["tables"],
        seconds=dict(etl=round(etl_seconds, 2), raw_load=rounded(raw),
                     raw_load_base_tables=rounded(raw_base), executemany=rounded(many),
                     to_sql=rounded(to_sql), noop_rerun=round(noop, 3),
                     check_mode_changed_files=round(check_changed, 2),
                     reload_other_files=round(reload_seconds, 2),
                     partial_reload=round(partial_seconds, 2)),
        mv_refresh=dict(
            after_first_load=dict(mode="full", seconds=round(mv_first, 2),
                                  per_view=mv_first_views,
                                  over_load=ratio(mv_first, etl_seconds),
                                  cpu_seconds=round(mv_first_cpu, 2),
                                  load_cpu_seconds=round(etl_cpu, 2),
                                  cpu_over_load=ratio(mv_first_cpu, etl_cpu)),
            after_partial_reload=dict(mode=partial["mv_refresh"], keys=partial["mv_keys"],
                                      seconds=round(mv_partial, 2), per_view=mv_partial_views,
                                      full_seconds=round(mv_partial_full, 2),
                                      full_per_view=mv_partial_full_views,
                                      over_reload=ratio(mv_partial, partial_seconds),
                                      cpu_seconds=round(mv_partial_cpu, 2),
                                      full_cpu_seconds=round(mv_partial_full_cpu, 2),
                                      reload_cpu_seconds=round(partial_cpu, 2),
                                      cpu_over_reload=ratio(mv_partial_cpu, partial_cpu)),
            after_reload_other_files=dict(mode=reload["mv_refresh"],
                                          seconds=round(mv_reload, 2),
                                          per_view=mv_reload_views,
                                          over_reload=ratio(mv_reload, reload_seconds),
                                          cpu_seconds=round(mv_reload_cpu, 2),
                                          reload_cpu_seconds=round(reload_cpu, 2),
                                          cpu_over_reload=ratio(mv_reload_cpu, reload_cpu))),
        partial_reload=dict(tables=partial["tables"], phases=partial["phases"]),
        reload=dict(binlog_mb=round(reload_binlog / 1e6, 1), tables=reload["tables"],
                    phases=reload["phases"]),
        etl_rows_per_second=int(read / etl_seconds),
        etl_phases=result["phases"], etl_binlog_mb=round(first_binlog / 1e6, 1),
        ratios=dict(etl_over_raw_load=ratio(etl_seconds, raw),
                    etl_over_raw_load_base_tables=ratio(etl_seconds, raw_base),
                    executemany_over_etl=ratio(many, etl_seconds),
                    to_sql_over_etl=ratio(to_sql, etl_seconds)),
    )
    if not args.etl_only:
        report["targets_met"] = dict(
            etl_le_1_5x_raw=report["ratios"]["etl_over_raw_load"] <= 1.5,
            etl_1_5x_faster_than_executemany=report["ratios"]["executemany_over_etl"] >= 1.5,
            etl_1_5x_faster_than_to_sql=(report["ratios"]["to_sql_over_etl"] or 0) >= 1.5,
            noop_under_1s=noop < 1.0)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
