# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Refresh of the POS materialized views (tables that hold the rows of a view).

Logic of the ``mariadb_view_refresh`` module, usable without Ansible (tests, benchmark):

* full: build ``<table>__shadow`` from the view, then swap it in with ONE atomic
  ``RENAME TABLE t TO t__old, t__shadow TO t`` -- a reader never sees a missing, empty or
  half-built table. When the new contents equal the old ones (CHECKSUM TABLE) the shadow is
  dropped and nothing is swapped: changed=False.
* incremental: in ONE consistent snapshot, read the ChangeLog rows of the table (fed by the
  triggers of files/sql/definitions/triggers.sql). Rows with ``delta = 1`` carry the signed
  contribution of a change (lines, orders, quantity, amount, dates added/removed): for the
  tables in DELTA_SPECS they are summed per primary key and added to the rows
  (``col = col + delta``; a row whose count reaches 0 is deleted). Everything a contribution
  cannot give exactly is recomputed from the view as before -- for each such row the first
  registered key column that is not NULL names the rows to recompute (``WHERE key IN (...)``
  on the view). Only rows that really differ are written, and exactly the ChangeLog rows that
  were read are deleted. A table never refreshed gets a full refresh.

Runs on the managed host: stdlib + PyMySQL (Debian's 1.0.2) only. Values always travel as query
parameters; identifiers (table, view, column names) pass the project's one check
(mariadb_pos.identifiers) and are backtick-quoted. The tables refreshed are those of the registry
files/sql/materialized_views.yml, which the schema loader writes into the MaterializedView table.
"""

from __future__ import annotations

import contextlib
import time

from .db import bulk_insert_session
from .identifiers import (
    MAX_IDENTIFIER_LENGTH,
    IdentifierError,
    quote_identifier,
)

# The helper tables <table>__shadow, __old, __check, __keys must fit MariaDB's 64 characters.
MAX_TABLE_LENGTH = MAX_IDENTIFIER_LENGTH - len("__shadow")
REGISTRY_TABLE = "MaterializedView"
CHANGELOG_TABLE = "ChangeLog"
MODES = ("full", "incremental")
CHUNK = 1000


class ViewRefreshError(Exception):
    """A refresh that cannot be done; the message names the table and the cause."""


def quote(name, what="identifier", max_length=MAX_IDENTIFIER_LENGTH):
    """Backtick-quote an identifier after the project's one check (mariadb_pos.identifiers)."""
    try:
        return quote_identifier(name, what, max_length)
    except IdentifierError as error:
        raise ViewRefreshError(str(error)) from None


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
        self.q_table = "%s.%s" % (self.q_db, quote(table, "table name", MAX_TABLE_LENGTH))
        self.q_shadow = "%s.%s" % (self.q_db, quote(table + "__shadow", "table name"))
        self.q_old = "%s.%s" % (self.q_db, quote(table + "__old", "table name"))
        self.q_registry = "%s.%s" % (self.q_db, quote(REGISTRY_TABLE))
        self.q_changelog = "%s.%s" % (self.q_db, quote(CHANGELOG_TABLE))

        self.columns = _columns(cursor, database, table)
        if not self.columns:
            raise ViewRefreshError("materialized view table %s.%s does not exist (apply "
                                   "files/sql first: module mariadb_schema, role pos_schema)"
                                   % (database, table))
        self.registered = None
        if _columns(cursor, database, REGISTRY_TABLE):
            cursor.execute("SELECT source_view, key_columns, last_refresh_mode, row_count "
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


def _deferred_indexes(cursor, target):
    """[(quoted name, column list)] of the table's plain secondary indexes (non-unique B-trees
    without comment, named by the project's identifier rule), in their order: the full build
    adds them to the filled shadow table, one sorted build each, instead of a random insert per
    row and index (measured at 1,000,000 order lines: ProductBuyersMV 9.6 s + 2.0 s instead of
    17.5 s, docs/etl.md). Still so with the bulk insert (_fill_shadow): building them inside
    it cost more (9.6-10.6 instead of 4.3-5.6 server CPU s). Any other index stays in the
    shadow table while it is filled."""
    cursor.execute("SELECT INDEX_NAME, COLUMN_NAME, SUB_PART, COLLATION, NON_UNIQUE, "
                   "INDEX_TYPE, INDEX_COMMENT, IGNORED FROM information_schema.STATISTICS "
                   "WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s", (target.database, target.table))
    # The server lists the indexes in the table's order (the order SHOW CREATE TABLE shows),
    # each by SEQ_IN_INDEX. Indexes added back come last: only the trailing run of deferrable
    # ones keeps that order. The shadow's definition is compared with the table's afterwards.
    indexes = {}  # name -> column parts, or None when the index stays in place
    for name, column, sub_part, collation, non_unique, kind, comment, ignored in (
            cursor.fetchall()):
        try:
            part = quote(column, "column name")
            quote(name, "index name")
        except ViewRefreshError:
            part = None
        if part is None or not (non_unique and kind == "BTREE" and not comment
                                and ignored == "NO"):
            indexes[name] = None
            continue
        if sub_part:
            part += "(%d)" % int(sub_part)
        if collation == "D":
            part += " DESC"
        if name not in indexes or indexes[name] is not None:
            indexes.setdefault(name, []).append(part)
    deferred = []
    for name, parts in reversed(indexes.items()):
        if parts is None:
            break
        deferred.insert(0, (quote(name, "index name"), ", ".join(parts)))
    return deferred


def _check_same_definition(cursor, target):
    """The shadow table, its indexes added back, must be defined exactly like the table."""
    definitions = []
    for qualified in (target.q_table, target.q_shadow):
        cursor.execute("SHOW CREATE TABLE %s" % qualified)
        definitions.append(cursor.fetchone()[1].split("\n", 1)[1])
    if definitions[0] != definitions[1]:
        cursor.execute("DROP TABLE %s" % target.q_shadow)
        raise ViewRefreshError("the full refresh of %s.%s built a table defined otherwise "
                               "(its secondary indexes added back differ); nothing was changed"
                               % (target.database, target.table))


def _fill_shadow(conn, cursor, target):
    """Fill the new, empty shadow table from the view in one transaction; returns the number
    of rows the INSERT reported.

    With both checks off, InnoDB (MariaDB >= 10.7) inserts into an empty table in bulk: one
    undo record for the table, the rows sorted by primary key and written page by page at the
    end. So no ORDER BY: sorting the view's wide rows made the server copy them into an
    on-disk temporary table first (ProductBuyersMV at 1,000,000 order lines, CPU s: 4.3-4.5
    without it, 5.0-5.6 with it, 5.7-6.1 with it and the checks on; docs/etl.md). The row
    events in the binary log are the same. The caller
    must compare the rows stored with the rows reported: MariaDB 10.11 empties the table
    without any error when the bulk insert meets a duplicate primary key."""
    with bulk_insert_session(cursor):
        cursor.execute("INSERT INTO %s (%s) SELECT %s FROM %s" % (
            target.q_shadow, target.q_columns, target.q_columns, target.q_view))
        rows = cursor.rowcount
        conn.commit()
    return rows


def _full(conn, cursor, target, check_mode):
    changes = _consumed_changes(cursor, target)
    conn.commit()  # the rebuild reads (READ COMMITTED) everything committed before this point
    before = _count(cursor, target.q_table)
    if check_mode:
        # A temporary table is not written to the binary log (binlog_format=ROW).
        q_tmp = "%s.%s" % (target.q_db, quote(target.table + "__check", "table name"))
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
    indexes = _deferred_indexes(cursor, target)
    if indexes:
        cursor.execute("ALTER TABLE %s %s" % (target.q_shadow, ", ".join(
            "DROP INDEX %s" % name for name, _columns in indexes)))
    rows = _fill_shadow(conn, cursor, target)
    if indexes:
        cursor.execute("ALTER TABLE %s %s" % (target.q_shadow, ", ".join(
            "ADD INDEX %s (%s)" % (name, columns) for name, columns in indexes)))
        _check_same_definition(cursor, target)
    stored = _count(cursor, target.q_shadow)
    if stored != rows:
        cursor.execute("DROP TABLE %s" % target.q_shadow)
        raise ViewRefreshError(
            "the full refresh of %s.%s wrote %d rows from the view %s but the new table holds "
            "%d (rows with the same primary key (%s) in the view?); nothing was changed"
            % (target.database, target.table, rows, target.view, stored,
               ", ".join(target.primary_key)))
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
    if "delta" in target.changelog_columns:
        # Rows committed while the view was read may or may not be in the new table: adding
        # them as deltas could count them twice, recomputing their keys is right either way.
        cursor.execute("UPDATE %s SET delta = 0 WHERE mv_table = %%s AND delta = 1"
                       % target.q_changelog, (target.table,))
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


def _load_keys(cursor, target, pks):
    """Primary keys into a session temporary table (not written to the binary log in ROW
    format) to join with: the optimizer looks each one up by the primary key."""
    q_keys = "%s.%s" % (target.q_db, quote(target.table + "__keys", "table name"))
    cursor.execute("DROP TEMPORARY TABLE IF EXISTS %s" % q_keys)
    # CREATE TEMPORARY TABLE does not end the transaction (ALTER TABLE would: no snapshot).
    using = ", ".join(quote(c) for c in target.primary_key)
    cursor.execute("CREATE TEMPORARY TABLE %s (PRIMARY KEY (%s)) ENGINE=MEMORY "
                   "SELECT %s FROM %s LIMIT 0" % (q_keys, using, using, target.q_table))
    placeholders = ", ".join(["%s"] * len(target.primary_key))
    for chunk in _chunks(pks):
        cursor.executemany("INSERT INTO %s VALUES (%s)" % (q_keys, placeholders), chunk)
    return q_keys, using


def _fetch_by_pk(cursor, target, pks, table_rows=None):
    """Rows of the table with the given primary keys: {pk: row}."""
    found = {}
    if not pks:
        return found
    pk_positions = [target.columns.index(c) for c in target.primary_key]
    if table_rows is not None and len(pks) * 4 >= table_rows:
        # A large share of a small table (e.g. most days of DailySalesMV): one scan is cheaper.
        wanted = set(pks)
        cursor.execute("SELECT %s FROM %s" % (target.q_columns, target.q_table))
        for row in cursor.fetchall():
            pk = tuple(row[i] for i in pk_positions)
            if pk in wanted:
                found[pk] = tuple(row)
        return found
    q_keys, using = _load_keys(cursor, target, pks)
    columns = ", ".join("t.%s" % quote(c) for c in target.columns)
    cursor.execute("SELECT STRAIGHT_JOIN %s FROM %s AS k JOIN %s AS t FORCE INDEX (PRIMARY) "
                   "USING (%s)"
                   % (columns, q_keys, target.q_table, using))
    for row in cursor.fetchall():
        found[tuple(row[i] for i in pk_positions)] = tuple(row)
    cursor.execute("DROP TEMPORARY TABLE %s" % q_keys)
    return found


def _delete_by_pk(cursor, target, pks):
    if not pks:
        return
    q_keys, _using = _load_keys(cursor, target, pks)
    # The table is named database-qualified and without an alias: MariaDB resolves an alias in
    # a multi-table DELETE's list in the default database, which a module's connection has not
    # selected (error 1046, "No database selected").
    on = " AND ".join("%s.%s = k.%s" % (target.q_table, quote(c), quote(c))
                      for c in target.primary_key)
    cursor.execute("DELETE %s FROM %s AS k STRAIGHT_JOIN %s FORCE INDEX (PRIMARY) ON %s"
                   % (target.q_table, q_keys, target.q_table, on))
    cursor.execute("DROP TEMPORARY TABLE %s" % q_keys)


# Additive maintenance of the registered materialized views from the delta ChangeLog rows
# (written by files/sql/definitions/triggers.sql). Each key is a table of the registry
# files/sql/materialized_views.yml; _delta_spec fails a refresh whose spec does not match it.
# MV column <- summed ChangeLog column; first/last columns kept with LEAST/GREATEST of the added
# dates (a removed date at or beyond the stored bound recomputes the key); the row is deleted
# when its count column reaches 0.
DELTA_SPECS = {
    "ProductBuyersMV": dict(
        view="ProductBuyers", key=("product_id", "customer_id"),
        add=(("order_count", "d_lines"), ("total_quantity", "d_quantity"),
             ("total_spent", "d_amount")),
        first=(("first_ordered_at", "line_added_at", "line_removed_at"),),
        last=(("last_ordered_at", "line_added_at", "line_removed_at"),),
        count="order_count"),
    "CustomerPurchasesMV": dict(
        view="CustomerPurchases", key=("customer_id",),
        add=(("order_count", "d_orders"), ("item_count", "d_quantity"),
             ("total_spent", "d_amount")),
        first=(("first_order_at", "order_added_at", "order_removed_at"),),
        last=(("last_order_at", "order_added_at", "order_removed_at"),),
        count=None),
    # order_count counts the orders WITH lines: worked out per order (see _orders_with_lines).
    "DailySalesMV": dict(
        view="DailySales", key=("sale_date",),
        add=(("order_count", None), ("item_count", "d_quantity"), ("revenue", "d_amount")),
        first=(), last=(), count="order_count", orders_with_lines="order_count"),
}


def _delta_spec(target):
    """The DELTA_SPECS entry of this table checked against the registry and the tables, or None
    for a table without one (then every key is recomputed). A spec that does not match fails
    loudly: a silent fallback would turn every incremental refresh into a slow one."""
    spec = DELTA_SPECS.get(target.table)
    if spec is None:
        return None
    where = "DELTA_SPECS[%r] (module_utils/mariadb_pos/view_refresh.py)" % target.table
    problems = []
    if spec["view"] != target.view:
        problems.append("is for the view %s but %s.%s is refreshed from %s (registry: "
                        "files/sql/materialized_views.yml)" % (spec["view"], target.database,
                                                               target.table, target.view))
    if list(spec["key"]) != list(target.primary_key):
        problems.append("has the key (%s) but the primary key of %s is (%s)"
                        % (", ".join(spec["key"]), target.table, ", ".join(target.primary_key)))
    sources = [src for _col, src in spec["add"] if src is not None]
    sources += [c for entry in spec["first"] + spec["last"] for c in entry[1:]]
    sources += ["delta", *spec["key"]]
    if spec.get("orders_with_lines"):
        sources += ["order_id", "d_lines"]
    missing = sorted(set(sources) - target.changelog_columns)
    if missing:
        problems.append("needs the %s column(s) %s (numbered migrations not applied?)"
                        % (CHANGELOG_TABLE, ", ".join(missing)))
    columns = [col for col, _src in spec["add"]] + [e[0] for e in spec["first"] + spec["last"]]
    missing = [c for c in columns if c not in target.columns]
    if missing:
        problems.append("names the column(s) %s that %s lacks" % (", ".join(missing),
                                                                 target.table))
    recompute_by = [k for k in target.key_columns if k in spec["key"]]
    if not recompute_by:
        problems.append("shares no column with the registered key_columns (%s)"
                        % ", ".join(target.key_columns))
    if problems:
        raise ViewRefreshError("%s %s: fix the spec or the registry so that they agree, or run "
                               "mode=full" % (where, "; ".join(problems)))
    derived = set(spec["key"]) | set(columns)
    return dict(spec, recompute_by=recompute_by[0],
                insertable=derived >= set(target.columns))


def _merge(a, b, pick):
    return b if a is None else a if b is None else pick(a, b)


def _read_changelog(cursor, target, spec):
    """The table's ChangeLog rows, summed in one GROUP BY: the keys to recompute
    {column: {values}}, the summed contributions per primary key {pk: (adds, firsts, lasts)},
    and (count, lowest change_id, highest change_id)."""
    keys, deltas = {}, {}
    if not target.changelog_columns:
        return keys, deltas, (0, None, None)
    group = list(target.key_columns)
    if spec is not None:
        group = ["delta"] + group + [k for k in spec["key"] if k not in group]
    # Same snapshot: the count and id range of exactly the rows summed below.
    cursor.execute("SELECT COUNT(*), MIN(change_id), MAX(change_id) FROM %s WHERE mv_table = %%s"
                   % target.q_changelog, (target.table,))
    count, low, high = cursor.fetchone()
    summary = (int(count), low, high)
    if not count:
        return keys, deltas, summary
    select = [quote(c) for c in group]
    if spec is not None:
        select += ["SUM(%s)" % quote(src) if src else "0" for _col, src in spec["add"]]
        for _col, added, removed in spec["first"]:
            select += ["MIN(%s)" % quote(added), "MIN(%s)" % quote(removed)]
        for _col, added, removed in spec["last"]:
            select += ["MAX(%s)" % quote(added), "MAX(%s)" % quote(removed)]
        if spec.get("orders_with_lines"):
            select.append("MAX(`d_lines` <> 0)")  # some order gained or lost lines
    cursor.execute("SELECT %s FROM %s WHERE mv_table = %%s GROUP BY %s" % (
        ", ".join(select), target.q_changelog, ", ".join(quote(c) for c in group)),
        (target.table,))
    n_group = len(group)
    line_changes = False
    for row in cursor.fetchall():
        values = dict(zip(group, row[:n_group], strict=True))
        if spec is None or not values["delta"]:
            for column in target.key_columns:
                if values[column] is not None:
                    keys.setdefault(column, set()).add(values[column])
                    break
            continue
        rest = row[n_group:]
        if spec.get("orders_with_lines") and rest[-1]:
            line_changes = True
        n_add = len(spec["add"])
        adds = [v or 0 for v in rest[:n_add]]
        dates = rest[n_add:]
        n_first = len(spec["first"])
        firsts = [tuple(dates[2 * i:2 * i + 2]) for i in range(n_first)]
        lasts = [tuple(dates[2 * n_first + 2 * i:2 * n_first + 2 * i + 2])
                 for i in range(len(spec["last"]))]
        pk = tuple(values[k] for k in spec["key"])
        if any(v is None for v in pk):
            # e.g. an order without lines for ProductBuyersMV: it must carry nothing.
            if any(adds) or any(d is not None for pair in firsts + lasts for d in pair):
                raise ViewRefreshError(
                    "ChangeLog of %s.%s has a delta without its key %s: run mode=full"
                    % (target.database, target.table, ", ".join(spec["key"])))
            continue
        if pk in deltas:  # same key, other values of a column outside the key
            o_adds, o_firsts, o_lasts = deltas[pk]
            adds = [x + y for x, y in zip(o_adds, adds, strict=True)]
            firsts = [(_merge(a1, a2, min), _merge(r1, r2, min))
                      for (a1, r1), (a2, r2) in zip(o_firsts, firsts, strict=True)]
            lasts = [(_merge(a1, a2, max), _merge(r1, r2, max))
                     for (a1, r1), (a2, r2) in zip(o_lasts, lasts, strict=True)]
        deltas[pk] = (adds, firsts, lasts)
    if line_changes:
        _orders_with_lines(cursor, target, spec, keys, deltas)
    return keys, deltas, summary


def _orders_with_lines(cursor, target, spec, keys, deltas):
    """Add to the count column (spec["orders_with_lines"]) of each day the orders that gained
    their first line (+1) or lost their last one (-1) since the last refresh: per order, the
    lines it has now (this snapshot) minus the lines the ChangeLog added gives the lines it had.
    Runs only when some order's number of lines changed (not for quantity changes)."""
    key = quote(spec["key"][0])
    cursor.execute("SELECT %s, order_id, SUM(d_lines) FROM %s WHERE mv_table = %%s AND delta = 1 "
                   "AND d_lines <> 0 GROUP BY %s, order_id HAVING SUM(d_lines) <> 0"
                   % (key, target.q_changelog, key), (target.table,))
    changed = cursor.fetchall()
    now = {}
    for chunk in _chunks(sorted({row[1] for row in changed})):
        cursor.execute("SELECT o.order_id, DATE(o.date_placed), (SELECT COUNT(*) FROM %s.OrderLine "
                       "AS ol WHERE ol.order_id = o.order_id) FROM %s.`Order` AS o "
                       "WHERE o.order_id IN (%s)" % (target.q_db, target.q_db,
                                                     ", ".join(["%s"] * len(chunk))), chunk)
        for order_id, day, lines in cursor.fetchall():
            now[order_id] = (day, int(lines))
    position = [c for c, _src in spec["add"]].index(spec["orders_with_lines"])
    for day, order_id, added in changed:
        current_day, lines = now.get(order_id, (None, 0))
        lines_now = lines if current_day == day else 0
        lines_before = lines_now - int(added)
        if lines_before < 0 or (day,) not in deltas:  # moved or renumbered order: recompute
            keys.setdefault(spec["key"][0], set()).add(day)
            continue
        deltas[(day,)][0][position] += (lines_now > 0) - (lines_before > 0)


def _typed(old, value):
    return int(value) if isinstance(old, int) else value


def _apply_delta(target, spec, old, delta):
    """New row for one key: ('keep'|'upsert'|'delete'|'recompute', row)."""
    adds, firsts, lasts = delta
    pos = target.columns.index
    if old is None:
        if not any(adds):
            return "keep", None  # added and removed again before this refresh
        count = adds[[c for c, _s in spec["add"]].index(spec["count"])] if spec["count"] else 1
        if not spec["insertable"] or count <= 0 or any(
                r is not None for _a, r in firsts + lasts):
            return "recompute", None
        row = [None] * len(target.columns)  # the caller fills in the key
        for (column, _src), value in zip(spec["add"], adds, strict=True):
            row[pos(column)] = value
        for (column, _a, _r), (added, _removed) in zip(spec["first"], firsts, strict=True):
            row[pos(column)] = added
        for (column, _a, _r), (added, _removed) in zip(spec["last"], lasts, strict=True):
            row[pos(column)] = added
        return "insert", row
    row = list(old)
    for (column, _src), value in zip(spec["add"], adds, strict=True):
        row[pos(column)] = _typed(old[pos(column)], old[pos(column)] + value)
    if spec["count"]:
        count = row[pos(spec["count"])]
        if count == 0:
            if all(row[pos(c)] == 0 for c, _s in spec["add"]):
                return "delete", None
            return "recompute", None
        if count < 0:
            return "recompute", None
    for (column, _a, _r), (added, removed) in zip(spec["first"], firsts, strict=True):
        current = old[pos(column)]
        if removed is not None and (current is None or removed <= current):
            return "recompute", None
        row[pos(column)] = min(v for v in (current, added) if v is not None) if (
            current is not None or added is not None) else None
    for (column, _a, _r), (added, removed) in zip(spec["last"], lasts, strict=True):
        current = old[pos(column)]
        if removed is not None and (current is None or removed >= current):
            return "recompute", None
        row[pos(column)] = max(v for v in (current, added) if v is not None) if (
            current is not None or added is not None) else None
    row = tuple(row)
    return ("keep", None) if row == old else ("upsert", row)


def _consume(cursor, target, summary, by_id):
    """Delete exactly the ChangeLog rows this refresh read; False if the range held others."""
    count, low, high = summary
    if not count:
        return True
    if by_id:
        cursor.execute("SELECT change_id FROM %s WHERE mv_table = %%s" % target.q_changelog,
                       (target.table,))
        _delete_changes(cursor, target, [row[0] for row in cursor.fetchall()])
        return True
    # One range delete; it must remove exactly the rows counted in the snapshot (a row committed
    # since then inside the range makes the count differ: the caller retries by id).
    cursor.execute("DELETE FROM %s WHERE mv_table = %%s AND change_id BETWEEN %%s AND %%s"
                   % target.q_changelog, (target.table, low, high))
    return cursor.rowcount == count


def _incremental(conn, cursor, target, check_mode, extra_keys):
    if not target.primary_key:
        raise ViewRefreshError("%s.%s has no primary key: incremental refresh needs one"
                               % (target.database, target.table))
    if not target.key_columns:
        raise ViewRefreshError("no key columns for %s.%s: register them in %s or give "
                               "key_columns" % (target.database, target.table, REGISTRY_TABLE))
    for column in extra_keys or {}:
        if column not in target.key_columns:
            raise ViewRefreshError("keys: %r is not a key column of %s.%s (key columns: %s)"
                                   % (column, target.database, target.table,
                                      ", ".join(target.key_columns)))
    spec = _delta_spec(target)
    for attempt in (0, 1):
        result = _incremental_once(conn, cursor, target, spec, check_mode, extra_keys,
                                   by_id=attempt == 1)
        if result is not None:
            return result
    raise ViewRefreshError("could not consume the ChangeLog of %s.%s" % (target.database,
                                                                         target.table))


def _incremental_once(conn, cursor, target, spec, check_mode, extra_keys, by_id):
    # ONE consistent snapshot for the ChangeLog, the base tables and the table: the deltas read
    # are exactly the changes the recomputed keys see (non-locking reads, writers not blocked).
    conn.commit()
    cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
    cursor.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT")
    keys, deltas, summary = _read_changelog(cursor, target, spec)
    for column, values in (extra_keys or {}).items():
        keys.setdefault(column, set()).update(v for v in values if v is not None)

    writes, deletes, delta_keys = {}, set(), 0
    old_rows = {}
    if deltas:
        delta_keys = len(deltas)
        old_rows = _fetch_by_pk(cursor, target, list(deltas),
                                table_rows=target.registered[3] if target.registered else None)
        pos_by = spec["key"].index(spec["recompute_by"])
        outcomes = {}
        for pk, delta in deltas.items():
            action, row = _apply_delta(target, spec, old_rows.get(pk), delta)
            if action == "recompute":
                keys.setdefault(spec["recompute_by"], set()).add(pk[pos_by])
            elif action == "insert":
                for column, value in zip(spec["key"], pk, strict=True):
                    row[target.columns.index(column)] = value
                outcomes[pk] = ("upsert", tuple(row))
            elif action != "keep":
                outcomes[pk] = (action, row)
        for pk, (action, row) in outcomes.items():
            if any(pk[spec["key"].index(c)] in values for c, values in keys.items()
                   if c in spec["key"]):
                continue  # recomputed from the view below
            if action == "delete":
                deletes.add(pk)
            else:
                writes[pk] = row

    new = _fetch_by_keys(cursor, target.q_view, target, keys)
    old = _fetch_by_keys(cursor, target.q_table, target, keys)
    deletes.update(pk for pk in old if pk not in new)
    writes.update((pk, row) for pk, row in new.items() if old.get(pk) != row)
    old.update(old_rows)
    inserted = sum(1 for pk in writes if pk not in old)
    updated = len(writes) - inserted
    changed = bool(deletes or writes)
    result = dict(changed=changed, inserted=inserted, updated=updated, deleted=len(deletes),
                  consumed_changes=summary[0], delta_keys=delta_keys,
                  recomputed_keys=sum(len(v) for v in keys.values()))
    result["refreshed_keys"] = result["delta_keys"] + result["recomputed_keys"]
    # The registry's row count is kept by every refresh (the only writers of the table).
    before = target.registered[3] if target.registered is not None else None
    if before is None:
        before = _count(cursor, target.q_table)
    rows = int(before) + inserted - len(deletes)
    result["rows"] = rows
    if check_mode:
        conn.rollback()
        return result
    _delete_by_pk(cursor, target, sorted(deletes, key=repr))
    if writes:
        placeholders = ", ".join(["%s"] * len(target.columns))
        others = [c for c in target.columns if c not in target.primary_key] or target.columns
        update = ", ".join("%s = VALUES(%s)" % (quote(c), quote(c)) for c in others)
        for chunk in _chunks(list(writes.values())):
            cursor.executemany("INSERT INTO %s (%s) VALUES (%s) ON DUPLICATE KEY UPDATE %s"
                               % (target.q_table, target.q_columns, placeholders, update),
                               chunk)
    if not _consume(cursor, target, summary, by_id):
        conn.rollback()
        return None
    if changed or summary[0]:
        _record(cursor, target, "incremental", rows)
    conn.commit()
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
