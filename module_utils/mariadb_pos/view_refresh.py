"""Refresh of the POS materialized views (tables that hold the rows of a view).

Logic of the ``mariadb_view_refresh`` module, usable without Ansible (tests, benchmark):

* full: build ``<table>__shadow`` from the view, then swap it in with ONE atomic
  ``RENAME TABLE t TO t__old, t__shadow TO t`` -- a reader never sees a missing, empty or
  half-built table. When the new contents equal the old ones (CHECKSUM TABLE) the shadow is
  dropped and nothing is swapped: changed=False.
* incremental: read the ChangeLog rows of the table (fed by the triggers of files/sql/004), and
  for each row the first registered key column that is not NULL names the rows to recompute
  (``WHERE key IN (...)`` on the view); only rows that really differ are written, and the
  ChangeLog rows that were read are deleted. A table never refreshed gets a full refresh.

Runs on the managed host: stdlib + PyMySQL (Debian's 1.0.2) only. Values always travel as query
parameters; identifiers (table, view, column names) are checked against a strict pattern and
backtick-quoted.
"""

from __future__ import annotations

import contextlib
import re
import time

IDENTIFIER_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,47}$")  # leaves room for "__shadow"
REGISTRY_TABLE = "MaterializedView"
CHANGELOG_TABLE = "ChangeLog"
MODES = ("full", "incremental")
CHUNK = 1000


class ViewRefreshError(Exception):
    """A refresh that cannot be done; the message names the table and the cause."""


def quote(name, what="identifier"):
    """Backtick-quote an identifier after checking it against IDENTIFIER_RE."""
    if not isinstance(name, str) or not IDENTIFIER_RE.match(name):
        raise ViewRefreshError("invalid %s %r: letters, digits and _ only, starting with a "
                               "letter, at most 48 characters" % (what, name))
    return "`%s`" % name


def _chunks(values, size=CHUNK):
    values = list(values)
    for start in range(0, len(values), size):
        yield values[start:start + size]


def _columns(cursor, database, table):
    cursor.execute("SELECT COLUMN_NAME FROM information_schema.COLUMNS "
                   "WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s ORDER BY ORDINAL_POSITION",
                   (database, table))
    return [row[0] for row in cursor.fetchall()]


def _primary_key(cursor, database, table):
    cursor.execute("SELECT COLUMN_NAME FROM information_schema.STATISTICS "
                   "WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s AND INDEX_NAME = 'PRIMARY' "
                   "ORDER BY SEQ_IN_INDEX", (database, table))
    return [row[0] for row in cursor.fetchall()]


def _checksum(cursor, qualified):
    cursor.execute("CHECKSUM TABLE %s EXTENDED" % qualified)
    return cursor.fetchone()[1]


def _count(cursor, qualified):
    cursor.execute("SELECT COUNT(*) FROM %s" % qualified)
    return int(cursor.fetchone()[0])


class _Target:
    """Names and metadata of one materialized view, all validated."""

    def __init__(self, cursor, database, table, view, key_columns):
        self.database = database
        self.table = table
        self.q_db = quote(database, "database name")
        self.q_table = "%s.%s" % (self.q_db, quote(table, "table name"))
        self.q_shadow = "%s.%s" % (self.q_db, quote(table + "__shadow", "table name"))
        self.q_old = "%s.%s" % (self.q_db, quote(table + "__old", "table name"))
        self.q_registry = "%s.%s" % (self.q_db, quote(REGISTRY_TABLE))
        self.q_changelog = "%s.%s" % (self.q_db, quote(CHANGELOG_TABLE))

        self.columns = _columns(cursor, database, table)
        if not self.columns:
            raise ViewRefreshError("materialized view table %s.%s does not exist (apply "
                                   "files/sql first)" % (database, table))
        self.registered = None
        if _columns(cursor, database, REGISTRY_TABLE):
            cursor.execute("SELECT source_view, key_columns, last_refresh_mode "
                           "FROM %s WHERE mv_table = %%s" % self.q_registry, (table,))
            self.registered = cursor.fetchone()
        if view is None:
            if self.registered is None:
                raise ViewRefreshError("%s.%s is not registered in %s.%s: give the source view"
                                       % (database, table, database, REGISTRY_TABLE))
            view = self.registered[0]
        self.view = view
        self.q_view = "%s.%s" % (self.q_db, quote(view, "view name"))
        view_columns = set(_columns(cursor, database, view))
        if not view_columns:
            raise ViewRefreshError("source view %s.%s of %s does not exist"
                                   % (database, view, table))
        missing = [c for c in self.columns if c not in view_columns]
        if missing:
            raise ViewRefreshError("view %s.%s lacks the column(s) %s of table %s"
                                   % (database, view, ", ".join(missing), table))
        self.q_columns = ", ".join(quote(c, "column name") for c in self.columns)
        self.primary_key = _primary_key(cursor, database, table)

        if key_columns is None and self.registered is not None:
            key_columns = [k.strip() for k in self.registered[1].split(",") if k.strip()]
        self.key_columns = list(key_columns or [])
        self.changelog_columns = set(_columns(cursor, database, CHANGELOG_TABLE))
        for key in self.key_columns:
            quote(key, "key column")
            if key not in self.columns:
                raise ViewRefreshError("key column %r is not a column of %s.%s"
                                       % (key, database, table))
            if key not in self.changelog_columns:
                raise ViewRefreshError("key column %r is not a column of %s.%s"
                                       % (key, database, CHANGELOG_TABLE))


def _consumed_changes(cursor, target, key_columns=()):
    """ChangeLog rows of this table: [(change_id, key values...)] (committed ones only)."""
    if not target.changelog_columns:
        return []
    select = ", ".join(["change_id"] + [quote(k) for k in key_columns])
    cursor.execute("SELECT %s FROM %s WHERE mv_table = %%s ORDER BY change_id"
                   % (select, target.q_changelog), (target.table,))
    return list(cursor.fetchall())


def _delete_changes(cursor, target, change_ids):
    for chunk in _chunks(change_ids):
        cursor.execute("DELETE FROM %s WHERE change_id IN (%s)"
                       % (target.q_changelog, ", ".join(["%s"] * len(chunk))), chunk)


def _record(cursor, target, mode, rows):
    if target.registered is None:
        return
    cursor.execute("UPDATE %s SET last_refresh_mode = %%s, last_refreshed_at = NOW(6), "
                   "row_count = %%s WHERE mv_table = %%s" % target.q_registry,
                   (mode, rows, target.table))


def _full(conn, cursor, target, check_mode):
    changes = _consumed_changes(cursor, target)
    conn.commit()  # the rebuild reads (READ COMMITTED) everything committed before this point
    before = _count(cursor, target.q_table)
    if check_mode:
        # A temporary table is not written to the binary log (binlog_format=ROW).
        q_tmp = quote(target.table + "__check", "table name")
        cursor.execute("DROP TEMPORARY TABLE IF EXISTS %s" % q_tmp)
        cursor.execute("CREATE TEMPORARY TABLE %s LIKE %s" % (q_tmp, target.q_table))
        cursor.execute("INSERT INTO %s (%s) SELECT %s FROM %s"
                       % (q_tmp, target.q_columns, target.q_columns, target.q_view))
        rows = cursor.rowcount
        changed = _checksum(cursor, q_tmp) != _checksum(cursor, target.q_table) or rows != before
        cursor.execute("DROP TEMPORARY TABLE %s" % q_tmp)
        conn.commit()
        return dict(changed=changed, rows=rows, rows_before=before,
                    consumed_changes=len(changes))
    cursor.execute("DROP TABLE IF EXISTS %s, %s" % (target.q_shadow, target.q_old))
    cursor.execute("CREATE TABLE %s LIKE %s" % (target.q_shadow, target.q_table))
    cursor.execute("INSERT INTO %s (%s) SELECT %s FROM %s"
                   % (target.q_shadow, target.q_columns, target.q_columns, target.q_view))
    rows = cursor.rowcount
    conn.commit()
    changed = rows != before or _checksum(cursor, target.q_shadow) != _checksum(
        cursor, target.q_table)
    if changed:
        # One statement, atomic: readers block briefly on the metadata lock, then see the new
        # table; never a missing one.
        cursor.execute("RENAME TABLE %s TO %s, %s TO %s" % (
            target.q_table, target.q_old, target.q_shadow, target.q_table))
        cursor.execute("DROP TABLE %s" % target.q_old)
    else:
        cursor.execute("DROP TABLE %s" % target.q_shadow)
    _delete_changes(cursor, target, [row[0] for row in changes])
    if changed or changes or (target.registered is not None and target.registered[2] is None):
        _record(cursor, target, "full", rows)
    conn.commit()
    return dict(changed=changed, rows=rows, rows_before=before, consumed_changes=len(changes))


def _fetch_by_keys(cursor, qualified, target, keys):
    """Rows of ``qualified`` whose key column is in the given values, by primary key."""
    found = {}
    pk_positions = [target.columns.index(c) for c in target.primary_key]
    for column, values in keys.items():
        for chunk in _chunks(sorted(values, key=repr)):
            cursor.execute("SELECT %s FROM %s WHERE %s IN (%s)" % (
                target.q_columns, qualified, quote(column), ", ".join(["%s"] * len(chunk))),
                chunk)
            for row in cursor.fetchall():
                found[tuple(row[i] for i in pk_positions)] = tuple(row)
    return found


def _incremental(conn, cursor, target, check_mode, extra_keys):
    if not target.primary_key:
        raise ViewRefreshError("%s.%s has no primary key: incremental refresh needs one"
                               % (target.database, target.table))
    if not target.key_columns:
        raise ViewRefreshError("no key columns for %s.%s: register them in %s or give "
                               "key_columns" % (target.database, target.table, REGISTRY_TABLE))
    changes = _consumed_changes(cursor, target, target.key_columns)
    keys = {}
    for row in changes:
        for column, value in zip(target.key_columns, row[1:], strict=True):
            if value is not None:
                keys.setdefault(column, set()).add(value)
                break
    for column, values in (extra_keys or {}).items():
        if column not in target.key_columns:
            raise ViewRefreshError("keys: %r is not a key column of %s.%s (key columns: %s)"
                                   % (column, target.database, target.table,
                                      ", ".join(target.key_columns)))
        keys.setdefault(column, set()).update(v for v in values if v is not None)

    new = _fetch_by_keys(cursor, target.q_view, target, keys)
    old = _fetch_by_keys(cursor, target.q_table, target, keys)
    deleted = [pk for pk in old if pk not in new]
    inserted = [row for pk, row in new.items() if pk not in old]
    updated = [row for pk, row in new.items() if pk in old and old[pk] != row]
    changed = bool(deleted or inserted or updated)
    result = dict(changed=changed, inserted=len(inserted), updated=len(updated),
                  deleted=len(deleted), consumed_changes=len(changes),
                  refreshed_keys=sum(len(v) for v in keys.values()))
    if check_mode:
        conn.rollback()
        result["rows"] = _count(cursor, target.q_table) + len(inserted) - len(deleted)
        return result
    where = " AND ".join("%s = %%s" % quote(c) for c in target.primary_key)
    for chunk in _chunks(deleted):
        cursor.executemany("DELETE FROM %s WHERE %s" % (target.q_table, where), chunk)
    placeholders = ", ".join(["%s"] * len(target.columns))
    for chunk in _chunks(inserted + updated):
        cursor.executemany("REPLACE INTO %s (%s) VALUES (%s)"
                           % (target.q_table, target.q_columns, placeholders), chunk)
    _delete_changes(cursor, target, [row[0] for row in changes])
    rows = _count(cursor, target.q_table)
    if changed or changes:
        _record(cursor, target, "incremental", rows)
    conn.commit()
    result["rows"] = rows
    return result


def refresh(conn, database, table, mode="incremental", view=None, key_columns=None,
            keys=None, check_mode=False, lock_timeout=60):
    """Refresh ``database.table`` from its view; returns a dict for the module's result.

    ``keys`` (optional) adds keys to recompute, e.g. an ETL's delta: {"customer_id": [1, 2]}.
    Keys: changed, mode, rows, duration, view, and per mode inserted/updated/deleted or
    rows_before, consumed_changes.
    """
    if mode not in MODES:
        raise ViewRefreshError("mode must be one of %s, got %r" % (", ".join(MODES), mode))
    started = time.monotonic()
    conn.autocommit(False)
    cursor = conn.cursor()
    # Consistent, non-locking reads of the base tables: writers are never blocked.
    cursor.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
    target = _Target(cursor, database, table, view, key_columns)
    lock_name = "pos_mv_refresh:%s.%s" % (database, table)
    cursor.execute("SELECT GET_LOCK(%s, %s)", (lock_name, lock_timeout))
    if cursor.fetchone()[0] != 1:
        raise ViewRefreshError("another refresh of %s.%s still holds the lock %r after %ss"
                               % (database, table, lock_name, lock_timeout))
    try:
        if mode == "incremental" and (target.registered is None
                                      or target.registered[2] is None):
            mode = "full"  # never refreshed, or not fed by the ChangeLog: build it whole
        if mode == "full":
            result = _full(conn, cursor, target, check_mode)
        else:
            result = _incremental(conn, cursor, target, check_mode, keys)
    except Exception:
        conn.rollback()
        raise
    finally:
        # A lost connection releases the lock by itself; never mask the original error.
        with contextlib.suppress(Exception):
            cursor.execute("DO RELEASE_LOCK(%s)", (lock_name,))
    result.update(mode=mode, view=target.view, table=table, database=database,
                  duration=round(time.monotonic() - started, 6))
    return result
