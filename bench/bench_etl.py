"""Benchmark of the CSV ETL (mariadb_csv_etl) against plain loaders, in one run on one server.

    .venv/bin/python bench/bench_etl.py [--orderlines 1000000] [--seed 7] [--repeat 1]

Generates the four files (tests/support/pos_csv_generator.py), starts a throw-away MariaDB
(tests/support/mariadb_instance.py: binlog ROW, GTID) and times, each on a fresh database:

* etl        -- the whole ETL (mariadb_pos.etl.run): extract, clean, load, audit; triggers present;
* raw_load   -- LOAD DATA LOCAL INFILE of the same files straight into the final schema
                (files/sql/*.sql: the same tables and triggers as the ETL, triggers bypassed with
                @pos_bulk_load = 1 like the ETL's, foreign_key_checks=0, no cleaning: dirty rows
                are truncated or dropped by the server, duplicates ignored);
* raw_load_base_tables -- the same into files/sql/001 only (no triggers at all), for reference;
* executemany -- csv.reader + PyMySQL executemany (INSERT IGNORE, batches of 10,000), same
                schema and session as raw_load;
* to_sql     -- pandas.read_csv + DataFrame.to_sql (SQLAlchemy + PyMySQL, method="multi",
                chunksize 10,000), same schema and session as raw_load;
* noop_rerun -- the ETL again with unchanged files.

executemany and to_sql only load (no cleaning); pandas and SQLAlchemy come from
requirements-bench.txt. Prints a JSON report; the figures are recorded in docs/etl.md.
Targets: etl <= 1.5 x raw_load, etl at least 1.5 x faster than executemany and to_sql,
noop_rerun < 1 s.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "module_utils"))

from mariadb_pos import etl  # noqa: E402

from tests.support.mariadb_instance import MariaDBInstance  # noqa: E402
from tests.support.pos_csv_generator import generate  # noqa: E402

SQL = REPO / "files" / "sql"

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
    for path in sorted(SQL.glob("[0-9]*.sql")):
        if full_schema or path.name.startswith("001"):
            server.client(file=path, database=name)


def relaxed(conn) -> None:
    """No cleaning, no checks: the plain loaders' session (triggers bypassed like the ETL's)."""
    with conn.cursor() as cursor:
        cursor.execute("SET SESSION foreign_key_checks = 0")
        cursor.execute("SET SESSION sql_mode = ''")
        cursor.execute("SET @pos_bulk_load = 1")


def bench_etl(server, data: Path, name: str) -> tuple[float, dict]:
    fresh(server, name, True)
    params = dict(data_dir=str(data), database=name, etl_database=name + "_etl",
                  login_unix_socket=server.socket)
    started = time.perf_counter()
    result = etl.run(params)
    return time.perf_counter() - started, result


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
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench-etl-"))
    data = args.out or workdir / "data"
    manifest = generate(data, args.orderlines, args.seed)
    read = sum(f["read"] for f in manifest["files"].values())
    with MariaDBInstance() as server:
        binlog_before = binlog_bytes(server)
        etl_seconds, result = bench_etl(server, data, "bench_etl")
        first_binlog = binlog_bytes(server) - binlog_before
        started = time.perf_counter()
        rerun = etl.run(dict(data_dir=str(data), database="bench_etl",
                             etl_database="bench_etl_etl", login_unix_socket=server.socket))
        noop = time.perf_counter() - started
        assert not rerun["changed"]
        other = workdir / "other"
        generate(other, args.orderlines, args.seed + 1)
        params = dict(data_dir=str(other), database="bench_etl", etl_database="bench_etl_etl",
                      login_unix_socket=server.socket)
        started = time.perf_counter()
        preview = etl.run(params, check_mode=True)
        check_changed = time.perf_counter() - started
        binlog_before = binlog_bytes(server)
        started = time.perf_counter()
        reload = etl.run(params)
        reload_seconds = time.perf_counter() - started
        reload_binlog = binlog_bytes(server) - binlog_before
        assert preview["tables"] == reload["tables"]
        raw = bench_raw(server, data, "bench_raw")
        raw_base = bench_raw(server, data, "bench_raw_base", full_schema=False)
        many = bench_executemany(server, data, "bench_many")
        to_sql = bench_to_sql(server, data, "bench_pandas")
    report = dict(
        orderlines=args.orderlines, rows_read=read, tables=manifest["tables"],
        seconds=dict(etl=round(etl_seconds, 2), raw_load=round(raw, 2),
                     raw_load_base_tables=round(raw_base, 2),
                     executemany=round(many, 2),
                     to_sql=round(to_sql, 2) if to_sql is not None else None,
                     noop_rerun=round(noop, 3), check_mode_changed_files=round(check_changed, 2),
                     reload_other_files=round(reload_seconds, 2)),
        reload=dict(binlog_mb=round(reload_binlog / 1e6, 1), tables=reload["tables"],
                    phases=reload["phases"]),
        etl_rows_per_second=int(read / etl_seconds),
        etl_phases=result["phases"], etl_binlog_mb=round(first_binlog / 1e6, 1),
        ratios=dict(etl_over_raw_load=round(etl_seconds / raw, 2),
                    etl_over_raw_load_base_tables=round(etl_seconds / raw_base, 2),
                    executemany_over_etl=round(many / etl_seconds, 2),
                    to_sql_over_etl=round(to_sql / etl_seconds, 2) if to_sql else None),
    )
    report["targets_met"] = dict(
        etl_le_1_5x_raw=report["ratios"]["etl_over_raw_load"] <= 1.5,
        etl_1_5x_faster_than_executemany=report["ratios"]["executemany_over_etl"] >= 1.5,
        etl_1_5x_faster_than_to_sql=(report["ratios"]["to_sql_over_etl"] or 0) >= 1.5,
        noop_under_1s=noop < 1.0)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
