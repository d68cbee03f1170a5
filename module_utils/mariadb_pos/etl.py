# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Idempotent, atomic load of the course's four CSV files into the POS schema.

Logic of the ``mariadb_csv_etl`` module, importable without Ansible. Like the other modules'
logic, :func:`run` receives a connection (opened with :data:`CONNECTION_OPTIONS`) and explicit
arguments; the caller opens and closes the connection.

Phases (timings and rows/s in the result's ``phases``), one method of :class:`Runner` each:

1. fingerprint -- each file is read once and its SHA-256 taken from those bytes; equal to the
   last completed run's -> nothing to do, nothing written (a no-op rerun only reads the audit
   table).
2. extract    -- the same bytes are decoded once and cleaned (etl_clean), every line accounted
   for. A rejected line whose id a previous load stored keeps the stored row (unless
   ``delete_rejected``), so nothing is deleted because a line was damaged.
   transform  -- the cleaned rows are written as tab-separated files for LOAD DATA, in a private
   staging folder (see :func:`staging_folder`).
3. stage      -- (not on a first load, when the final tables are empty: then the files are
   loaded straight into them inside the apply transaction, as an InnoDB bulk insert) the
   cleaned rows go through LOAD DATA LOCAL INFILE into per-session TEMPORARY tables
   ``<etl_database>.stg_*`` (created LIKE the final tables), plus the kept rows.
   Temporary tables are private to the run's connection -- two runs never collide -- vanish
   with the connection if the run is killed, and are not written to the ROW-format binlog.
4. diff       -- per table: rows to insert, update (byte-wise comparison) and delete.
5. guard      -- a reload that would delete more than ``max_delete_percent`` of any table's rows
   fails naming the file, the table and the count; nothing is written.
6. apply      -- ONE transaction: delete what vanished from the files, record price changes in
   PriceHistory, update what changed (an order line keeps the unit price it was loaded with),
   insert what is new, log the changes in ChangeLog for the incremental refresh of the
   materialized views (signed contributions, as the triggers log them; read first), record
   the run, its files and rejects in the audit tables, commit.
   A run killed anywhere leaves the previous data and audit intact (InnoDB rolls the
   transaction back); the next run sees the old fingerprint and redoes the load.
7. analyze    -- ANALYZE TABLE of the tables the load filled or largely rewrote (fresh optimizer
   statistics for the materialized views' refresh that follows).

The session sets ``@pos_bulk_load = 1`` so the schema's data triggers stand aside: the ETL fills
``OrderLine.unit_price`` from the product's price itself, keeps the file's quantity on hand, and
writes the PriceHistory and ChangeLog rows the triggers would have written.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import stat
import tempfile
import time

from . import etl_clean
from .db import bulk_insert_session
from .identifiers import IdentifierError, quote_identifier

ETL_VERSION = "2"  # part of the fingerprint: a change of the cleaning rules forces a reload
LOCK_NAME = "mariadb_csv_etl"
STAGING_PREFIX = "mariadb_csv_etl"
# What the ETL's connection must be opened with (db.connect(**CONNECTION_OPTIONS, ...)): the
# staging goes through LOAD DATA LOCAL INFILE.
CONNECTION_OPTIONS = {"local_infile": True}
_CHUNK = 1000

# final table, staging table, columns in file order, primary key columns
TABLES = (
    ("City", "stg_city", ("zip", "city", "state"), ("zip",)),
    ("Product", "stg_product", ("product_id", "name", "current_price", "quantity_on_hand"),
     ("product_id",)),
    ("Customer", "stg_customer", ("customer_id", "first_name", "last_name", "email",
                                  "address_line1", "address_line2", "phone", "birthdate", "zip"),
     ("customer_id",)),
    ("Order", "stg_order", ("order_id", "customer_id", "date_placed", "date_shipped"),
     ("order_id",)),
    ("OrderLine", "stg_orderline", ("order_id", "product_id", "quantity", "unit_price"),
     ("order_id", "product_id")),
)
TABLE_NAMES = tuple(table[0] for table in TABLES)
# Columns a reload never rewrites: an order line keeps the price it was sold at.
KEPT_ON_UPDATE = {"OrderLine": ("unit_price",)}
# The file each table comes from (for messages).
SOURCE_FILE = {"City": "customers.csv", "Customer": "customers.csv",
               "Product": "products.csv", "PriceHistory": "products.csv",
               "Order": "orders.csv", "OrderLine": "orderlines.csv"}
# Kept rows: table -> (staging table, primary key column, stored value returned by lookup)
KEEPABLE = {"Customer": ("stg_customer", "customer_id", "NULL"),
            "Product": ("stg_product", "product_id", "current_price"),
            "Order": ("stg_order", "order_id", "customer_id")}

AUDIT_DDL = (
    """CREATE TABLE IF NOT EXISTS {etl}.etl_run (
        run_id        BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
        target_db     VARCHAR(64)  NOT NULL,
        etl_version   VARCHAR(16)  NOT NULL,
        started_at    DATETIME(6)  NOT NULL,
        finished_at   DATETIME(6)  NOT NULL,
        rows_inserted BIGINT UNSIGNED NOT NULL,
        rows_updated  BIGINT UNSIGNED NOT NULL,
        rows_deleted  BIGINT UNSIGNED NOT NULL,
        seconds       DECIMAL(12,3) NOT NULL,
        KEY etl_run_target_db_idx (target_db, run_id)
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4""",
    """CREATE TABLE IF NOT EXISTS {etl}.etl_file (
        run_id      BIGINT UNSIGNED NOT NULL,
        file_name   VARCHAR(64)  NOT NULL,
        sha256      CHAR(64)     NOT NULL,
        bytes       BIGINT UNSIGNED NOT NULL,
        rows_read   BIGINT UNSIGNED NOT NULL,
        rows_loaded BIGINT UNSIGNED NOT NULL,
        rows_merged BIGINT UNSIGNED NOT NULL,
        rows_rejected BIGINT UNSIGNED NOT NULL,
        seconds     DECIMAL(12,3) NOT NULL,
        PRIMARY KEY (run_id, file_name),
        CONSTRAINT etl_file_run_id_fk FOREIGN KEY (run_id) REFERENCES {etl}.etl_run (run_id)
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4""",
    """CREATE TABLE IF NOT EXISTS {etl}.etl_reject (
        reject_id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
        run_id    BIGINT UNSIGNED NOT NULL,
        file_name VARCHAR(64)  NOT NULL,
        line_no   INT UNSIGNED NOT NULL,
        raw_text  MEDIUMTEXT   NOT NULL,
        reason    VARCHAR(500) NOT NULL,
        KEY etl_reject_run_id_idx (run_id, file_name, line_no),
        CONSTRAINT etl_reject_run_id_fk FOREIGN KEY (run_id) REFERENCES {etl}.etl_run (run_id)
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4""",
)


class EtlError(Exception):
    """Any failure of a run, with a message naming the file/server and the cause."""


def quote_database(name, option: str) -> str:
    """Backtick-quote a database name after the project's one identifier check."""
    try:
        return quote_identifier(name, "database name")
    except IdentifierError as error:
        raise EtlError(f"{option}: {error}") from None


def _q(table: str) -> str:
    return f"`{table}`"  # table names come from TABLES only


def _chunks(values, size=_CHUNK):
    values = list(values)
    for start in range(0, len(values), size):
        yield values[start:start + size]


# ---------------------------------------------------------------- staging folder
def _staging_root() -> str:
    """<temp dir>/mariadb_csv_etl-<uid>, mode 0700, owned by this user (created when missing)."""
    root = os.path.join(tempfile.gettempdir(), f"{STAGING_PREFIX}-{os.getuid()}")
    with contextlib.suppress(FileExistsError):
        os.mkdir(root, 0o700)
    info = os.lstat(root)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise EtlError(f"{root}: the ETL's staging folder is not a directory owned by uid "
                       f"{os.getuid()}; remove it")
    if stat.S_IMODE(info.st_mode) != 0o700:
        os.chmod(root, 0o700)
    return root


def _remove_dead_runs(root: str) -> None:
    """Remove the folders of runs that died (kill -9, power loss): their lock is free."""
    for name in os.listdir(root):
        path = os.path.join(root, name)
        try:
            handle = os.open(os.path.join(path, ".lock"), os.O_RDWR)
        except FileNotFoundError:
            # a run between creating its folder and its lock, or one that died right then
            with contextlib.suppress(OSError):
                if time.time() - os.lstat(path).st_mtime > 60:
                    shutil.rmtree(path, ignore_errors=True)
            continue
        except OSError:
            continue
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(handle)
            continue  # a live run holds it
        shutil.rmtree(path, ignore_errors=True)
        os.close(handle)


def _remove_legacy_folders() -> None:
    """Version 1 staged in <temp dir>/mariadb_csv_etl-XXXXXXXX and left it behind when killed:
    remove such folders of this user that hold nothing but its staging files."""
    base = tempfile.gettempdir()
    legacy = re.compile(rf"^{STAGING_PREFIX}-[a-z0-9_]{{8}}$")
    for name in os.listdir(base):
        path = os.path.join(base, name)
        if not legacy.match(name):
            continue
        with contextlib.suppress(OSError):
            info = os.lstat(path)
            if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
                continue
            if all(re.match(r"^(stg_[a-z]+|rejects)\.tsv$", f) for f in os.listdir(path)):
                shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def staging_folder():
    """A private folder for this run's files, removed at the end; folders of runs that died are
    removed at the start of the next run (each live run holds an flock on its .lock)."""
    root = _staging_root()
    _remove_dead_runs(root)
    _remove_legacy_folders()
    path = tempfile.mkdtemp(prefix="run-", dir=root)
    handle = os.open(os.path.join(path, ".lock"), os.O_CREAT | os.O_RDWR, 0o600)
    fcntl.flock(handle, fcntl.LOCK_EX)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
        os.close(handle)


# ---------------------------------------------------------------- TSV files for LOAD DATA
def _tsv_value(value) -> str:
    if value is None:
        return "\\N"
    text = str(value)
    if "\\" in text or "\t" in text or "\n" in text or "\r" in text or "\0" in text:
        text = (text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")
                .replace("\r", "\\r").replace("\0", "\\0"))
    return text


def write_tsv(path: str, rows) -> int:
    """Write rows for LOAD DATA (tab-separated, backslash escapes, \\N for NULL)."""
    count = 0
    with open(path, "w", encoding="utf-8", newline="\n") as handle:
        buffer = []
        for row in rows:
            buffer.append("\t".join([_tsv_value(value) for value in row]))
            count += 1
            if len(buffer) >= 50000:
                handle.write("\n".join(buffer) + "\n")
                buffer.clear()
        if buffer:
            handle.write("\n".join(buffer) + "\n")
    return count


def write_orderlines_tsv(path: str, entries) -> int:
    """Fast path: order lines are numbers and a price string, nothing to escape."""
    count = 0
    with open(path, "w", encoding="ascii", newline="\n") as handle:
        buffer = []
        for order_id, product_id, quantity, price in entries:
            buffer.append(f"{order_id}\t{product_id}\t{quantity}\t{price}\n")
            count += 1
            if len(buffer) >= 100000:
                handle.write("".join(buffer))
                buffer.clear()
        handle.write("".join(buffer))
    return count


def _spec(table: str):
    return next(spec for spec in TABLES if spec[0] == table)


def _join(pk) -> str:
    return " AND ".join(f"t.`{c}` = s.`{c}`" for c in pk)


def _compared(table: str, columns, pk):
    return [c for c in columns if c not in pk and c not in KEPT_ON_UPDATE.get(table, ())]


def _differs(table: str, columns, pk) -> str:
    """Byte-wise comparison: a case-only or trailing-space change is a change."""
    return " OR ".join(f"NOT (CAST(t.`{c}` AS BINARY) <=> CAST(s.`{c}` AS BINARY))"
                       for c in _compared(table, columns, pk))


# ---------------------------------------------------------------- the run
class Runner:
    """One run of the ETL on one connection; :meth:`run` calls the phases in order."""

    def __init__(self, conn, data_dir, *, file_names=None, database="pos",
                 etl_database="pos_etl", force=False, lock_timeout=60, reject_sample=20,
                 max_delete_percent=5, delete_rejected=False, mv_incremental_max_keys=2000,
                 check_mode=False, progress=None):
        self.data_dir = data_dir
        self.file_names = file_names or {}
        self.check_mode = check_mode
        self.progress_cb = progress
        self.db = database
        self.etl_db = etl_database
        self.qdb = quote_database(database, "database")
        self.qetl = quote_database(etl_database, "etl_database")
        self.force = bool(force)
        self.lock_timeout = int(lock_timeout)
        self.reject_sample = int(reject_sample)
        self.max_delete_percent = float(max_delete_percent)
        if not 0 <= self.max_delete_percent <= 100:
            raise EtlError("max_delete_percent must be between 0 and 100, "
                           f"got {max_delete_percent}")
        self.delete_rejected = bool(delete_rejected)
        self.mv_max_keys = int(mv_incremental_max_keys)
        unknown = set(self.file_names) - set(etl_clean.FILES)
        if unknown:
            raise EtlError("file_names: unknown keys {} ({})".format(
                ", ".join(sorted(unknown)), ", ".join(etl_clean.FILES)))
        self.given_conn = conn
        self.staging_db = self.qetl
        self.phases: list[dict] = []
        self.conn = None
        self.cursor = None

    # ---------------------------------------------------------------- helpers
    def phase(self, name: str, rows: int, started: float) -> None:
        seconds = time.monotonic() - started
        rate = int(rows / seconds) if seconds > 0 else rows
        self.phases.append({"phase": name, "rows": rows, "seconds": round(seconds, 3),
                            "rows_per_second": rate})
        if self.progress_cb:
            self.progress_cb(f"mariadb_csv_etl {name}: {rows} rows in {seconds:.3f}s "
                             f"({rate} rows/s)")

    def sql(self, statement: str, args=None):
        """Run SQL whose only interpolations are the validated database names."""
        self.cursor.execute(statement.replace("{db}", self.qdb).replace("{etl}", self.qetl)
                            .replace("{stg}", self.staging_db), args)
        return self.cursor

    def scalar(self, statement: str, args=None):
        row = self.sql(statement, args).fetchone()
        return row[0] if row else None

    def paths(self) -> dict:
        folder = self.data_dir
        names = self.file_names
        if not os.path.isdir(folder):
            raise EtlError(f"{folder}: the data folder does not exist or is not a directory")
        return {key: os.path.join(folder, names.get(key) or default_name)
                for key, (default_name, _header) in etl_clean.FILES.items()}

    # ---------------------------------------------------------------- connection
    def open(self) -> None:
        self.conn = self.given_conn
        self.conn.autocommit(True)  # explicit transaction for the apply phase only
        self.cursor = self.conn.cursor()
        self.sql("SET SESSION sql_mode = 'STRICT_ALL_TABLES,NO_ZERO_DATE,NO_ZERO_IN_DATE,"
                 "ERROR_FOR_DIVISION_BY_ZERO,NO_ENGINE_SUBSTITUTION'")
        self.sql("SET @pos_bulk_load = 1")
        timeout = self.lock_timeout
        if self.scalar("SELECT GET_LOCK(%s, %s)", (LOCK_NAME, timeout)) != 1:
            raise EtlError(f"another mariadb_csv_etl run holds the lock {LOCK_NAME!r} "
                           f"(waited {timeout}s)")
        present = {row[0] for row in self.sql(
            "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s",
            (self.db,)).fetchall()}
        missing = [name for name in (*TABLE_NAMES, "PriceHistory") if name not in present]
        if missing:
            raise EtlError(f"database {self.db} lacks the POS tables {', '.join(missing)}: "
                           "apply files/sql first (role pos_schema)")
        # The delta ChangeLog (migration 008): the reload logs signed contributions.
        self.has_changelog = {"ChangeLog", "MaterializedView"} <= present and bool(self.scalar(
            "SELECT COUNT(*) FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = %s AND "
            "TABLE_NAME = 'ChangeLog' AND COLUMN_NAME = 'delta'", (self.db,)))
        # The default database: a multi-table DELETE resolves its aliases against it.
        self.sql("USE {db}")

    def close(self) -> None:
        """Release the run's lock; the connection stays the caller's."""
        if self.conn is not None:
            with contextlib.suppress(Exception):  # the connection may already be gone
                self.sql("DO RELEASE_LOCK(%s)", (LOCK_NAME,))
            self.conn = None

    def etl_db_exists(self) -> bool:
        return bool(self.scalar("SELECT COUNT(*) FROM information_schema.SCHEMATA "
                                "WHERE SCHEMA_NAME = %s", (self.etl_db,)))

    def audit_ready(self) -> bool:
        return self.scalar("SELECT COUNT(*) FROM information_schema.TABLES WHERE "
                           "TABLE_SCHEMA = %s AND TABLE_NAME IN ('etl_run', 'etl_file', "
                           "'etl_reject')", (self.etl_db,)) == 3

    def ensure_audit(self) -> None:
        """Create the ETL database and audit tables when missing (only then: no binlog noise)."""
        if not self.etl_db_exists():
            self.sql("CREATE DATABASE IF NOT EXISTS {etl} CHARACTER SET utf8mb4")
        if not self.audit_ready():
            for ddl in AUDIT_DDL:
                self.sql(ddl)

    def last_run(self):
        """(run_id, {file name: row}) of the last completed run for this database."""
        if not self.audit_ready():
            return None, {}
        run_id = self.scalar("SELECT MAX(run_id) FROM {etl}.etl_run WHERE target_db = %s "
                             "AND etl_version = %s", (self.db, ETL_VERSION))
        if run_id is None:
            return None, {}
        rows = self.sql("SELECT file_name, sha256, rows_read, rows_loaded, rows_merged, "
                        "rows_rejected FROM {etl}.etl_file WHERE run_id = %s",
                        (run_id,)).fetchall()
        return run_id, {row[0]: row for row in rows}

    def column_limits(self) -> dict:
        rows = self.sql("SELECT TABLE_NAME, COLUMN_NAME, CHARACTER_MAXIMUM_LENGTH FROM "
                        "information_schema.COLUMNS WHERE TABLE_SCHEMA = %s AND "
                        "CHARACTER_MAXIMUM_LENGTH IS NOT NULL", (self.db,)).fetchall()
        return {(table, column): int(length) for table, column, length in rows}

    def targets_empty(self) -> bool:
        return not any(self.scalar(f"SELECT EXISTS (SELECT 1 FROM {self.qdb}.{_q(t)})")
                       for t in TABLE_NAMES)

    def stored(self, table: str, ids) -> dict:
        """{id: stored value} of the given ids of a final table (see KEEPABLE); for OrderLine
        {(order id, product id): None}."""
        found = {}
        if table == "OrderLine":
            for chunk in _chunks(sorted(ids)):
                # order_id IN (...) first: a primary-key range whatever the optimizer makes
                # of the row constructors
                rows = self.sql("SELECT order_id, product_id FROM {db}.OrderLine WHERE "
                                "order_id IN (" + ", ".join(["%s"] * len(chunk)) + ") AND "
                                "(order_id, product_id) IN ("
                                + ", ".join(["(%s, %s)"] * len(chunk)) + ")",
                                [pair[0] for pair in chunk]
                                + [value for pair in chunk for value in pair]).fetchall()
                found.update(((row[0], row[1]), None) for row in rows)
            return found
        _staging, pk, value = KEEPABLE[table]
        for chunk in _chunks(sorted(ids)):
            rows = self.sql(f"SELECT `{pk}`, {value} FROM {{db}}.{_q(table)} WHERE `{pk}` IN "
                            f"({', '.join(['%s'] * len(chunk))})", chunk).fetchall()
            found.update((row[0], None if row[1] is None else str(row[1])) for row in rows)
        if table == "Order":
            found = {key: int(value) for key, value in found.items()}
        return found

    def load_tsv(self, target: str, columns, path: str, count: int, what: str, *,
                 extra: str = "", args=()) -> None:
        """LOAD DATA LOCAL INFILE of a file this run wrote; any warning aborts the run."""
        column_list = ", ".join(f"`{c}`" for c in columns)
        self.cursor.execute(
            f"LOAD DATA LOCAL INFILE %s INTO TABLE {target} CHARACTER SET utf8mb4 "
            "FIELDS TERMINATED BY '\\t' ESCAPED BY '\\\\' LINES TERMINATED BY '\\n' "
            f"({column_list}){extra}", (path, *args))
        loaded = self.cursor.rowcount
        warnings = self.scalar("SELECT @@warning_count")
        if warnings:
            detail = "; ".join(str(w[2]) for w in self.sql("SHOW WARNINGS LIMIT 3").fetchall())
            raise EtlError(f"loading {what} raised {warnings} warnings, nothing loaded: {detail}")
        if loaded != count:
            raise EtlError(f"loading {what}: {count} rows written, {loaded} loaded; "
                           "nothing loaded")

    # ---------------------------------------------------------------- phases
    def fingerprint(self, files) -> tuple:
        """(last run id, its files) when every file equals the last completed run's."""
        started = time.monotonic()
        last_id, last_files = self.last_run()
        unchanged = bool(last_files) and all(
            source.name in last_files and last_files[source.name][1] == source.sha256
            for source in files.values())
        self.phase("fingerprint", len(files), started)
        return (last_id, last_files) if unchanged else (None, None)

    def extract(self, files, direct: bool):
        """Clean the files; rejected ids a previous load stored are looked up (not on a first
        load: nothing is stored)."""
        started = time.monotonic()
        data = etl_clean.extract(files, self.column_limits(),
                                 lookup=None if direct else self.stored,
                                 delete_rejected=self.delete_rejected)
        read = sum(s.read for s in data.stats.values())
        self.phase("extract", read, started)
        return data

    def transform(self, data: etl_clean.CleanData, workdir: str) -> dict:
        """One TSV per final table, in the table's column order: {table: (path, rows)}."""
        started = time.monotonic()
        sources = {
            "City": [data.cities[z] for z in sorted(data.cities)],
            "Product": [data.products[k] for k in sorted(data.products)],
            "Customer": [data.customers[k] for k in sorted(data.customers)],
            "Order": [data.orders[k] for k in sorted(data.orders)],
        }
        tsv = {}
        for table, staging, _columns, _pk in TABLES:
            path = os.path.join(workdir, staging + ".tsv")
            if table == "OrderLine":
                count = write_orderlines_tsv(path, (data.orderlines[k]
                                                    for k in sorted(data.orderlines)))
            else:
                count = write_tsv(path, sources[table])
            tsv[table] = (path, count)
        self.phase("transform", sum(count for _path, count in tsv.values()), started)
        return tsv

    def stage(self, tsv: dict, data: etl_clean.CleanData) -> None:
        """Per-session TEMPORARY staging tables, created LIKE the final tables, holding the
        files' rows and the kept rows (with the cities of kept customers)."""
        started = time.monotonic()
        self.staging_db = self.qetl if self.etl_db_exists() else self.qdb
        for table, staging, columns, _pk in TABLES:
            path, count = tsv[table]
            name = f"{self.staging_db}.{staging}"
            self.cursor.execute(f"DROP TEMPORARY TABLE IF EXISTS {name}")
            self.cursor.execute(f"CREATE TEMPORARY TABLE {name} LIKE {self.qdb}.{_q(table)}")
            self.load_tsv(name, columns, path, count, f"staging table for {table}")
        kept = 0
        for table, ids in data.kept.items():
            _table, staging, columns, pk = _spec(table)
            columns = ", ".join(f"`{c}`" for c in columns)
            where = "({})".format(", ".join(f"`{c}`" for c in pk))
            for chunk in _chunks(sorted(ids)):
                marks = ", ".join(["(%s)" % ", ".join(["%s"] * len(pk))] * len(chunk))
                values = [v for key in chunk for v in (key if len(pk) > 1 else (key,))]
                self.sql(f"INSERT INTO {{stg}}.{staging} ({columns}) SELECT {columns} FROM "
                         f"{{db}}.{_q(table)} WHERE {where} IN ({marks})", values)
                kept += self.cursor.rowcount
                marks = ", ".join(["%s"] * len(chunk))
                if table == "Customer":
                    self.sql("INSERT IGNORE INTO {stg}.stg_city (zip, city, state) SELECT "
                             "zip, city, state FROM {db}.City WHERE zip IN (SELECT zip FROM "
                             f"{{db}}.Customer WHERE customer_id IN ({marks}))", chunk)
        self.phase("stage", sum(count for _path, count in tsv.values()) + kept, started)

    def diff(self) -> dict:
        """Per table: rows before/after and rows to insert, update, delete."""
        started = time.monotonic()
        result = {}
        for table, staging, columns, pk in TABLES:
            target = f"{self.qdb}.{_q(table)}"
            source = f"{self.staging_db}.{staging}"
            rows_before = self.scalar(f"SELECT COUNT(*) FROM {target}")
            rows_after = self.scalar(f"SELECT COUNT(*) FROM {source}")
            if rows_before == 0:
                inserted, updated, deleted = rows_after, 0, 0
            else:
                inserted = self.scalar(f"SELECT COUNT(*) FROM {source} s LEFT JOIN {target} t "
                                       f"ON {_join(pk)} WHERE t.`{pk[0]}` IS NULL")
                deleted = self.scalar(f"SELECT COUNT(*) FROM {target} t LEFT JOIN {source} s "
                                      f"ON {_join(pk)} WHERE s.`{pk[0]}` IS NULL")
                updated = self.scalar(f"SELECT COUNT(*) FROM {source} s JOIN {target} t "
                                      f"ON {_join(pk)} WHERE {_differs(table, columns, pk)}")
            result[table] = {"rows_before": rows_before, "rows_after": rows_after,
                             "inserted": inserted, "updated": updated, "deleted": deleted}
        history_before = self.scalar("SELECT COUNT(*) FROM {db}.PriceHistory")
        history_deleted = self.scalar(
            "SELECT COUNT(*) FROM {db}.PriceHistory h LEFT JOIN {stg}.stg_product s "
            "ON h.product_id = s.product_id WHERE s.product_id IS NULL") if history_before else 0
        price_changes = self.scalar(
            "SELECT COUNT(*) FROM {db}.Product t JOIN {stg}.stg_product s "
            "ON t.product_id = s.product_id WHERE t.current_price <> s.current_price")
        result["PriceHistory"] = {"rows_before": history_before,
                                  "rows_after": history_before - history_deleted + price_changes,
                                  "inserted": price_changes, "updated": 0,
                                  "deleted": history_deleted}
        self.phase("diff", sum(r["rows_after"] for r in result.values()), started)
        return result

    # The ChangeLog rows of a reload, as the triggers (files/sql/definitions/triggers.sql) would
    # have written them for the same changes, computed from the stored rows (t, o: their order)
    # and the staged ones (s, so: their order). Signed contributions (delta = 1) for order lines
    # added, removed or with another quantity (a line keeps its unit price) and orders added or
    # removed; keys to recompute (delta = 0) where a contribution cannot say it: orders moved to
    # another customer or date (their lines are then covered by those keys), customers added,
    # removed or renamed (name, e-mail), products renamed.
    MV_CHANGE_COLUMNS = ("customer_id", "product_id", "sale_date", "delta", "order_id",
                         "d_lines", "d_orders", "d_quantity", "d_amount", "line_added_at",
                         "line_removed_at", "order_added_at", "order_removed_at")
    _SAME_ORDER = ("{a}.customer_id <=> {b}.customer_id AND {a}.date_placed <=> {b}.date_placed")
    # (table, kinds of change of it in the diff that make the query worth running, query)
    MV_CHANGE_QUERIES = (
        # order lines removed (also those of removed orders)
        ("OrderLine", ("deleted",),
         "SELECT o.customer_id, t.product_id, DATE(o.date_placed), 1, t.order_id, -1, 0, "
         "-t.quantity, -(t.quantity * t.unit_price), NULL, o.date_placed, NULL, NULL "
         "FROM {db}.OrderLine t JOIN {db}.`Order` o ON o.order_id = t.order_id "
         "LEFT JOIN {stg}.stg_orderline s "
         "ON s.order_id = t.order_id AND s.product_id = t.product_id "
         "LEFT JOIN {stg}.stg_order so ON so.order_id = t.order_id "
         "WHERE s.order_id IS NULL AND (so.order_id IS NULL OR " + _SAME_ORDER.format(a="so", b="o")
         + ")"),
        # order lines added (also those of new orders) at the staged unit price, or with another
        # quantity at the stored one (KEPT_ON_UPDATE): one pass over the staged lines
        ("OrderLine", ("inserted", "updated"),
         "SELECT so.customer_id, s.product_id, DATE(so.date_placed), 1, s.order_id, "
         "t.order_id IS NULL, 0, s.quantity - COALESCE(t.quantity, 0), IF(t.order_id IS NULL, "
         "s.quantity * s.unit_price, (s.quantity - t.quantity) * t.unit_price), "
         "IF(t.order_id IS NULL, so.date_placed, NULL), NULL, NULL, NULL "
         "FROM {stg}.stg_orderline s JOIN {stg}.stg_order so ON so.order_id = s.order_id "
         "LEFT JOIN {db}.OrderLine t ON t.order_id = s.order_id AND t.product_id = s.product_id "
         "LEFT JOIN {db}.`Order` o ON o.order_id = s.order_id "
         "WHERE (t.order_id IS NULL OR t.quantity <> s.quantity) AND (o.order_id IS NULL OR "
         + _SAME_ORDER.format(a="so", b="o") + ")"),
        # orders added / removed
        ("Order", ("inserted",),
         "SELECT s.customer_id, NULL, DATE(s.date_placed), 1, s.order_id, 0, 1, 0, 0, NULL, NULL, "
         "s.date_placed, NULL FROM {stg}.stg_order s "
         "LEFT JOIN {db}.`Order` t ON t.order_id = s.order_id WHERE t.order_id IS NULL"),
        ("Order", ("deleted",),
         "SELECT t.customer_id, NULL, DATE(t.date_placed), 1, t.order_id, 0, -1, 0, 0, NULL, NULL, "
         "NULL, t.date_placed FROM {db}.`Order` t "
         "LEFT JOIN {stg}.stg_order s ON s.order_id = t.order_id WHERE s.order_id IS NULL"),
        # orders moved to another customer or date: both keys recomputed
        ("Order", ("updated",),
         "SELECT DISTINCT k.c, NULL, k.d, 0, NULL, 0, 0, 0, 0, NULL, NULL, NULL, NULL FROM ("
         "SELECT t.customer_id AS c, DATE(t.date_placed) AS d FROM {db}.`Order` t "
         "JOIN {stg}.stg_order s ON s.order_id = t.order_id WHERE NOT ("
         + _SAME_ORDER.format(a="s", b="t") + ") UNION "
         "SELECT s.customer_id, DATE(s.date_placed) FROM {db}.`Order` t "
         "JOIN {stg}.stg_order s ON s.order_id = t.order_id WHERE NOT ("
         + _SAME_ORDER.format(a="s", b="t") + ")) k"),
        # customers added, removed, or with another name or e-mail (the views' columns)
        ("Customer", ("inserted", "updated"),
         "SELECT s.customer_id, NULL, NULL, 0, NULL, 0, 0, 0, 0, NULL, NULL, NULL, NULL "
         "FROM {stg}.stg_customer s LEFT JOIN {db}.Customer t ON t.customer_id = s.customer_id "
         "WHERE t.customer_id IS NULL OR NOT ("
         "CAST(t.first_name AS BINARY) <=> CAST(s.first_name AS BINARY) AND "
         "CAST(t.last_name AS BINARY) <=> CAST(s.last_name AS BINARY) AND "
         "CAST(t.email AS BINARY) <=> CAST(s.email AS BINARY))"),
        ("Customer", ("deleted",),
         "SELECT t.customer_id, NULL, NULL, 0, NULL, 0, 0, 0, 0, NULL, NULL, NULL, NULL "
         "FROM {db}.Customer t LEFT JOIN {stg}.stg_customer s ON s.customer_id = t.customer_id "
         "WHERE s.customer_id IS NULL"),
        # products renamed
        ("Product", ("updated",),
         "SELECT NULL, t.product_id, NULL, 0, NULL, 0, 0, 0, 0, NULL, NULL, NULL, NULL "
         "FROM {db}.Product t JOIN {stg}.stg_product s ON s.product_id = t.product_id "
         "WHERE NOT (CAST(t.name AS BINARY) <=> CAST(s.name AS BINARY))"),
    )
    # A reload changing more than this share of the order lines and orders is refreshed in full:
    # the incremental refresh costs about the same per changed row as a full one per row.
    MV_INCREMENTAL_MAX_SHARE = 0.1

    def mv_incremental(self, changes: dict) -> bool:
        """Whether the reload's changes can be logged for an incremental refresh at all: a
        schema with the delta ChangeLog, and not more than MV_INCREMENTAL_MAX_SHARE of the
        order lines and orders changed (no need to collect them then)."""
        if not self.has_changelog:
            return False
        changed = sum(changes[t][k] for t in ("Order", "OrderLine")
                      for k in ("inserted", "updated", "deleted"))
        rows = sum(max(changes[t]["rows_before"], changes[t]["rows_after"])
                   for t in ("Order", "OrderLine"))
        return changed <= self.MV_INCREMENTAL_MAX_SHARE * rows

    def mv_changes(self, changes: dict) -> int | None:
        """Collect the reload's ChangeLog rows (MV_CHANGE_QUERIES) in the temporary table
        {stg}.stg_mv_change, before the apply changes anything; their number, or None when the
        materialized views need a full refresh (more keys to recompute than
        mv_incremental_max_keys). In the apply transaction the reads of the stored rows lock
        them (REPEATABLE READ), so the contributions are those of the rows the apply changes."""
        started = time.monotonic()
        columns = ", ".join(self.MV_CHANGE_COLUMNS)
        self.sql("DROP TEMPORARY TABLE IF EXISTS {stg}.stg_mv_change")
        # The ChangeLog's own column types (a CREATE TEMPORARY TABLE does not commit).
        self.sql(f"CREATE TEMPORARY TABLE {{stg}}.stg_mv_change ENGINE=InnoDB "
                 f"SELECT {columns} FROM {{db}}.ChangeLog LIMIT 0")
        for table, kinds, query in self.MV_CHANGE_QUERIES:
            if any(changes[table][kind] for kind in kinds):
                self.sql(f"INSERT INTO {{stg}}.stg_mv_change ({columns}) " + query)
        count, keys = self.sql("SELECT COUNT(*), COALESCE(SUM(delta = 0), 0) "
                               "FROM {stg}.stg_mv_change").fetchone()
        self.phase("mv_changes", int(count), started)
        return int(count) if keys <= self.mv_max_keys else None

    def guard(self, changes: dict) -> None:
        """Refuse a reload that deletes more than max_delete_percent of any table."""
        excess = []
        for table, change in changes.items():
            before, deleted = change["rows_before"], change["deleted"]
            if before and deleted and deleted * 100 > self.max_delete_percent * before:
                excess.append(f"{deleted} of the {before} rows of {table} "
                              f"({100 * deleted / before:.1f} %, from "
                              f"{SOURCE_FILE[table]})")
        if excess:
            raise EtlError(
                "the files would delete " + "; ".join(excess) + f", more than "
                f"max_delete_percent={self.max_delete_percent:g} allows (deletes include the "
                "rows that hang off deleted ones). Nothing was written. Check the files (an "
                "upload cut short, a header-only file); if the deletes are intended, rerun with "
                "max_delete_percent: 100 (role variable pos_etl_max_delete_percent)")

    def _delete_stale(self, table: str, changes: dict) -> None:
        _table, staging, _columns, pk = _spec(table)
        if not changes[table]["deleted"]:
            return
        source = f"{self.staging_db}.{staging}"
        if table == "Product" and changes["PriceHistory"]["deleted"]:
            # a vanished product's price history goes with it (foreign key)
            self.cursor.execute(f"DELETE h FROM {self.qdb}.`PriceHistory` h LEFT JOIN {source} s "
                                "ON h.product_id = s.product_id WHERE s.product_id IS NULL")
        self.cursor.execute(f"DELETE t FROM {self.qdb}.{_q(table)} t LEFT JOIN {source} s "
                            f"ON {_join(pk)} WHERE s.`{pk[0]}` IS NULL")

    def _upsert(self, table: str, changes: dict) -> None:
        _table, staging, columns, pk = _spec(table)
        source = f"{self.staging_db}.{staging}"
        target = f"{self.qdb}.{_q(table)}"
        column_list = ", ".join(f"`{c}`" for c in columns)
        if table == "Product" and changes["PriceHistory"]["inserted"]:
            # the Product trigger's job, bypassed by @pos_bulk_load: one row per price change
            self.cursor.execute(
                f"INSERT INTO {self.qdb}.PriceHistory (product_id, old_price, new_price) "
                f"SELECT t.product_id, t.current_price, s.current_price FROM {target} t "
                f"JOIN {source} s ON t.product_id = s.product_id "
                "WHERE t.current_price <> s.current_price")
        if changes[table]["updated"]:
            assignments = ", ".join(f"t.`{c}` = s.`{c}`" for c in _compared(table, columns, pk))
            self.cursor.execute(f"UPDATE {target} t JOIN {source} s ON {_join(pk)} "
                                f"SET {assignments} WHERE {_differs(table, columns, pk)}")
        if changes[table]["inserted"]:
            selected = ", ".join(f"s.`{c}`" for c in columns)
            self.cursor.execute(f"INSERT INTO {target} ({column_list}) SELECT {selected} "
                                f"FROM {source} s LEFT JOIN {target} t ON {_join(pk)} "
                                f"WHERE t.`{pk[0]}` IS NULL")

    def apply(self, data, changes, tsv, workdir, *, direct: bool, mv_incremental: bool,
              started_wall: float) -> tuple[int, int | None]:
        """One transaction: final tables, ChangeLog rows, audit run, files and rejects -- or
        nothing. Returns the run id and the number of ChangeLog rows logged per materialized
        view (None: the views need a full refresh).

        ``direct``: the final tables are empty (first load), so the cleaned files are loaded
        straight into them; otherwise the staged difference is applied: children's stale rows
        first, then parents before children, then the parents' stale rows (foreign keys hold at
        every statement).
        """
        started = time.monotonic()
        rejects = [(stats.name, line, raw, reason) for stats in data.stats.values()
                   for line, raw, reason in stats.rejects]
        mv_changes = None
        self.conn.begin()
        try:
            if direct:
                # Empty tables and rows consistent by construction (unique keys, every reference
                # checked in Python): InnoDB's bulk insert into empty tables applies (measured:
                # 2.7 s instead of 4.0 s for 610k rows); the replicas get the same relaxed
                # flags with the row events. A duplicate key in a bulk insert surfaces only as a
                # LOAD DATA warning, which fails the run (load_tsv): on MariaDB 10.11 the bulk
                # insert would otherwise commit the table empty (tests/test_etl_atomic.py).
                with bulk_insert_session(self.cursor):
                    for table, _staging, columns, _pk in TABLES:
                        path, count = tsv[table]
                        self.load_tsv(f"{self.qdb}.{_q(table)}", columns, path, count,
                                      f"table {table}")
            else:
                if mv_incremental:  # read before anything changes
                    mv_changes = self.mv_changes(changes)
                for table in ("OrderLine", "Order"):
                    self._delete_stale(table, changes)
                for table in ("City", "Product", "Customer", "Order", "OrderLine"):
                    self._upsert(table, changes)
                for table in ("Customer", "Product", "City"):
                    self._delete_stale(table, changes)
                if mv_changes:
                    # one ChangeLog row per change and registered materialized view
                    columns = ", ".join(self.MV_CHANGE_COLUMNS)
                    selected = ", ".join(f"k.{c}" for c in self.MV_CHANGE_COLUMNS)
                    self.sql(f"INSERT INTO {{db}}.ChangeLog (mv_table, {columns}) "
                             f"SELECT m.mv_table, {selected} FROM {{db}}.MaterializedView m "
                             "CROSS JOIN {stg}.stg_mv_change k")
            totals = {k: sum(c[k] for c in changes.values())
                      for k in ("inserted", "updated", "deleted")}
            self.sql("INSERT INTO {etl}.etl_run (target_db, etl_version, started_at, "
                     "finished_at, rows_inserted, rows_updated, rows_deleted, seconds) "
                     "VALUES (%s, %s, FROM_UNIXTIME(%s), NOW(6), %s, %s, %s, %s)",
                     (self.db, ETL_VERSION, started_wall, totals["inserted"], totals["updated"],
                      totals["deleted"], round(time.time() - started_wall, 3)))
            run_id = self.cursor.lastrowid
            self.sql("INSERT INTO {etl}.etl_file (run_id, file_name, sha256, bytes, rows_read, "
                     "rows_loaded, rows_merged, rows_rejected, seconds) VALUES "
                     + ", ".join(["(%s, %s, %s, %s, %s, %s, %s, %s, %s)"] * len(data.stats)),
                     [value for s in data.stats.values()
                      for value in (run_id, s.name, s.sha256, s.size, s.read, s.loaded,
                                    s.merged, s.rejected, round(s.seconds, 3))])
            if rejects:
                path = os.path.join(workdir, "rejects.tsv")
                count = write_tsv(path, ((name, line, raw, reason[:500])
                                         for name, line, raw, reason in rejects))
                self.load_tsv(f"{self.qetl}.etl_reject",
                              ("file_name", "line_no", "raw_text", "reason"), path, count,
                              "the reject table", extra=" SET run_id = %s", args=(run_id,))
            self.conn.commit()
        except BaseException:
            with contextlib.suppress(Exception):  # connection lost: the server rolls back
                self.conn.rollback()
            raise
        self.phase("apply", sum(c["inserted"] + c["updated"] + c["deleted"]
                                for c in changes.values()) + len(rejects), started)
        return run_id, mv_changes

    def analyze(self, changes: dict) -> None:
        """Fresh optimizer statistics for the tables a load filled or largely rewrote: right
        after a bulk load into empty tables InnoDB's statistics still say "empty", and the
        materialized views' full refresh run next picked a nested-loop scan plan (measured:
        over 500 s instead of seconds for CustomerPurchasesMV at 1,000,000 lines). ANALYZE
        samples a few pages per index (milliseconds)."""
        started = time.monotonic()
        tables = [table for table in (*TABLE_NAMES, "PriceHistory")
                  if changes[table]["inserted"] + changes[table]["deleted"]
                  > 0.1 * changes[table]["rows_before"]]
        if tables:
            self.sql("ANALYZE TABLE " + ", ".join(f"{{db}}.{_q(t)}" for t in tables)).fetchall()
        self.phase("analyze", len(tables), started)

    def drop_staging(self) -> None:
        for staging in (*(spec[1] for spec in TABLES), "stg_mv_change"):
            self.sql(f"DROP TEMPORARY TABLE IF EXISTS {{stg}}.{staging}")

    # ---------------------------------------------------------------- the run
    def unchanged_result(self, last_id, last_files) -> dict:
        files = {name: {"sha256": row[1], "read": row[2], "loaded": row[3], "merged": row[4],
                        "rejected": row[5]} for name, row in last_files.items()}
        return {"changed": False, "data_changed": False, "run_id": last_id, "files": files,
                "tables": {}, "phases": self.phases, "city_conflicts": [], "rejects": [],
                "mv_refresh": "none", "mv_keys": 0,
                "msg": f"files unchanged since run {last_id}: nothing to do"}

    def run(self) -> dict:
        started_wall = time.time()
        started = time.monotonic()
        files = etl_clean.read_files(self.paths())  # read and hashed once
        self.phase("read", sum(source.size for source in files.values()), started)
        try:
            self.open()  # inside: a failed check releases the lock (the connection is the caller's)
            last_id, last_files = self.fingerprint(files)
            if last_id is not None and not self.force:
                return self.unchanged_result(last_id, last_files)
            direct = not self.check_mode and self.targets_empty()
            data = self.extract(files, direct)
            del files  # the cleaned rows are all that is needed from here on
            if not self.check_mode:
                self.ensure_audit()
            mv_keys = None
            with staging_folder() as workdir:
                tsv = self.transform(data, workdir)
                mv_incremental = False
                if direct:
                    changes = {table: {"rows_before": 0, "rows_after": tsv[table][1],
                                       "inserted": tsv[table][1], "updated": 0, "deleted": 0}
                               for table in TABLE_NAMES}
                    changes["PriceHistory"] = {"rows_before": 0, "rows_after": 0,
                                               "inserted": 0, "updated": 0, "deleted": 0}
                else:
                    self.stage(tsv, data)
                    changes = self.diff()
                    self.guard(changes)
                    mv_incremental = self.mv_incremental(changes)
                run_id = None
                if self.check_mode:
                    mv_keys = self.mv_changes(changes) if mv_incremental else None
                else:
                    run_id, mv_keys = self.apply(data, changes, tsv, workdir, direct=direct,
                                                 mv_incremental=mv_incremental,
                                                 started_wall=started_wall)
                    self.analyze(changes)
                if not direct:
                    self.drop_staging()
        finally:
            self.close()
        return self.result(data, changes, run_id, mv_keys)

    def result(self, data, changes, run_id, mv_keys) -> dict:
        totals = {k: sum(c[k] for c in changes.values()) for k in ("inserted", "updated",
                                                                    "deleted")}
        data_changed = any(totals.values())
        rejects = [(stats.name, line, raw, reason) for stats in data.stats.values()
                   for line, raw, reason in stats.rejects]
        limit = self.reject_sample
        verb = "would load" if self.check_mode else "loaded"
        if not data_changed:
            mv_refresh = "none"
        else:
            mv_refresh = "full" if mv_keys is None else "incremental"
        kept = {table: len(ids) for table, ids in data.kept.items() if ids}
        return {
            "changed": True, "data_changed": data_changed, "run_id": run_id,
            "files": {s.name: s.as_dict() for s in data.stats.values()},
            "tables": changes, "phases": self.phases, "city_conflicts": data.city_conflicts,
            "rejects": [{"file": n, "line": ln, "raw": r, "reason": why}
                        for n, ln, r, why in rejects[:limit]],
            "kept": kept, "mv_refresh": mv_refresh, "mv_keys": mv_keys or 0,
            "msg": (f"{verb}: {sum(s.read for s in data.stats.values())} rows read, "
                    f"{totals['inserted']} inserted, {totals['updated']} updated, "
                    f"{totals['deleted']} deleted, {len(rejects)} rejected"
                    + (f", {sum(kept.values())} previously loaded rows kept" if kept else "")
                    + (f", {changes['PriceHistory']['inserted']} price changes recorded"
                       if changes["PriceHistory"]["inserted"] else "")),
        }


def run(conn, data_dir, *, check_mode=False, progress=None, **options) -> dict:
    """Run the ETL on ``conn`` (opened with CONNECTION_OPTIONS; the caller closes it) for the
    files in ``data_dir``; ``options`` are the module's: file_names, database, etl_database,
    force, lock_timeout, reject_sample, max_delete_percent, delete_rejected,
    mv_incremental_max_keys. Raise EtlError with a clear message on any failure."""
    runner = Runner(conn, data_dir, check_mode=check_mode, progress=progress, **options)
    try:
        return runner.run()
    except etl_clean.EtlInputError as error:
        raise EtlError(f"{error}; nothing was loaded") from None
    except EtlError:
        raise
    except Exception as error:
        if type(error).__module__.startswith("pymysql"):
            raise EtlError(f"MariaDB error during the ETL, nothing was changed: {error}") from None
        raise


def diff_text(result: dict) -> dict:
    """Ansible diff: per-table row counts before and after."""
    before, after = [], []
    for table in (*TABLE_NAMES, "PriceHistory"):
        change = result.get("tables", {}).get(table)
        if not change:
            continue
        before.append(f"{table}: {change['rows_before']} rows\n")
        after.append(f"{table}: {change['rows_after']} rows (+{change['inserted']} inserted, "
                     f"~{change['updated']} updated, -{change['deleted']} deleted)\n")
    return {"before": "".join(before), "after": "".join(after)}
