# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one loader of the POS schema (files/sql), used by the module mariadb_schema (so by
roles/pos_schema), by the tests and by the benchmarks.

Two kinds of SQL file, as Flyway's versioned and repeatable migrations:

* ``NNN_lower_case.sql`` -- numbered migrations for tables and data (CREATE/ALTER TABLE, INSERT).
  Applied once each, in numeric order, and recorded by name and sha256 in ``schema_version``.
  Never edited: a recorded file whose sha256 changed is refused, and so is a new file that reuses
  a recorded number or is numbered below the last applied one.
* ``definitions/<group>.sql`` -- the current definition of every view, routine, trigger and
  event, one file per group (CREATE OR REPLACE, DROP ... IF EXISTS for a retired object).
  Re-applied, in the order of DEFINITION_GROUPS, whenever its sha256 differs from the recorded one,
  and after any migration (a migration that rebuilds a table would drop its triggers).

and the registry of materialized views (files/sql/materialized_views.yml, handed over as a list
of ``{table, view, key_columns}``): the MaterializedView table is made to hold exactly its rows
(compared on every run, so a hand-edited row is put back), once the views it names exist.

Files are executed by the ``mariadb`` command-line client (it understands DELIMITER); every value
this module sends itself travels as a query parameter. Runs on the managed host: stdlib + PyMySQL.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile

from .identifiers import IdentifierError, check_identifier, quote_identifier
from .view_refresh import CHANGELOG_TABLE, MAX_TABLE_LENGTH, REGISTRY_TABLE

MIGRATION_RE = re.compile(r"^(\d{3})_[a-z0-9_]+\.sql$")
DEFINITIONS_DIR = "definitions"
# A view read by a routine must exist for nothing; a view read by another view must exist first;
# triggers call routines and events call routines: views, routines, triggers, events.
DEFINITION_GROUPS = ("views", "routines", "triggers", "events")
REGISTRY_FILE = "materialized_views.yml"
VERSION_TABLE = "schema_version"

VERSION_TABLE_DDL = (
    "CREATE TABLE IF NOT EXISTS %s ("
    " filename VARCHAR(255) NOT NULL,"
    " sha256 CHAR(64) NOT NULL,"
    " applied_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),"
    " CONSTRAINT schema_version_filename_pk PRIMARY KEY (filename)"
    ") ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci")


class SchemaFileError(Exception):
    """The schema cannot be applied as it stands; the message names the file and the cause."""


def _sha256(path):
    with open(path, "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()


def migration_files(sql_dir):
    """[(name, path, sha256)] of sql_dir/NNN_*.sql in numeric order.

    A file that looks numbered but breaks the pattern, and a duplicate number, are errors: a
    silently skipped migration would leave the clusters on different schemas.
    """
    if not os.path.isdir(sql_dir):
        raise SchemaFileError("%s: no such directory (the SQL files of the schema)" % sql_dir)
    found = {}
    for name in sorted(os.listdir(sql_dir)):
        path = os.path.join(sql_dir, name)
        if not name.endswith(".sql") or not os.path.isfile(path):
            continue
        match = MIGRATION_RE.match(name)
        if not match:
            raise SchemaFileError("%s: numbered SQL files are named NNN_lower_case.sql" % path)
        number = match.group(1)
        if number in found:
            raise SchemaFileError("%s: number %s is already used by %s"
                                  % (path, number, found[number][0]))
        found[number] = (name, path, _sha256(path))
    if not found:
        raise SchemaFileError("%s holds no numbered SQL file (NNN_lower_case.sql)" % sql_dir)
    return [found[number] for number in sorted(found)]


def definition_files(sql_dir):
    """[(recorded name, path, sha256)] of sql_dir/definitions/<group>.sql, in apply order.

    Every group has its file, and nothing else is there: a file the loader would not run must not
    look as if it were part of the schema.
    """
    directory = os.path.join(sql_dir, DEFINITIONS_DIR)
    expected = ["%s.sql" % group for group in DEFINITION_GROUPS]
    present = sorted(os.listdir(directory)) if os.path.isdir(directory) else []
    unknown = [name for name in present if name not in expected]
    if unknown:
        raise SchemaFileError("%s: unknown file(s) %s; the definition files are %s"
                              % (directory, ", ".join(unknown), ", ".join(expected)))
    missing = [name for name in expected if name not in present]
    if missing:
        raise SchemaFileError("%s: missing %s" % (directory, ", ".join(missing)))
    return [("%s/%s" % (DEFINITIONS_DIR, name), os.path.join(directory, name),
             _sha256(os.path.join(directory, name))) for name in expected]


def registry_entries(materialized_views):
    """The registry as validated (table, view, "key,columns") tuples, in the given order."""
    if not isinstance(materialized_views, list) or not materialized_views:
        raise SchemaFileError("%s: materialized_views must be a non-empty list" % REGISTRY_FILE)
    entries, seen = [], set()
    for position, entry in enumerate(materialized_views, 1):
        where = "%s: entry %d" % (REGISTRY_FILE, position)
        if not isinstance(entry, dict) or set(entry) != {"table", "view", "key_columns"}:
            raise SchemaFileError("%s: needs exactly the keys table, view, key_columns; got %r"
                                  % (where, entry))
        keys = entry["key_columns"]
        try:
            table = check_identifier(entry["table"], "table", MAX_TABLE_LENGTH)
            view = check_identifier(entry["view"], "view")
            if not isinstance(keys, list) or not keys:
                raise IdentifierError("key_columns must be a non-empty list")
            for key in keys:
                check_identifier(key, "key column")
        except IdentifierError as error:
            raise SchemaFileError("%s: %s" % (where, error)) from None
        if table in seen:
            raise SchemaFileError("%s: table %s is listed twice" % (where, table))
        seen.add(table)
        entries.append((table, view, ",".join(keys)))
    return entries


def load_registry_file(sql_dir):
    """Read files/sql/materialized_views.yml (control node and tests only: needs PyYAML)."""
    import yaml

    path = os.path.join(sql_dir, REGISTRY_FILE)
    with open(path, encoding="utf-8") as handle:
        data = yaml.safe_load(handle)
    if not isinstance(data, dict) or "materialized_views" not in data:
        raise SchemaFileError("%s: expected a mapping with the key materialized_views" % path)
    registry_entries(data["materialized_views"])
    return data["materialized_views"]


def plan(migrations, definitions, recorded, force_definitions=False):
    """What to apply: (pending migrations, definition files to apply), from the recorded
    {filename: sha256}; raises SchemaFileError for an edited or misnumbered migration."""
    recorded_migrations = {name: digest for name, digest in recorded.items()
                           if MIGRATION_RE.match(name)}
    edited = [name for name, _path, digest in migrations
              if name in recorded_migrations and recorded_migrations[name] != digest]
    if edited:
        raise SchemaFileError(
            "%s changed after being applied (sha256 differs from the one in %s): never edit an "
            "applied migration, add a new numbered one instead" % (", ".join(edited),
                                                                  VERSION_TABLE))
    by_number = {name[:3]: name for name in recorded_migrations}
    pending = [item for item in migrations if item[0] not in recorded_migrations]
    for name, _path, _digest in pending:
        if name[:3] in by_number:
            raise SchemaFileError("%s: number %s was used by %s, already applied: give the new "
                                  "migration the next free number" % (name, name[:3],
                                                                      by_number[name[:3]]))
        if by_number and name[:3] < max(by_number):
            raise SchemaFileError("%s: numbered below %s, already applied: migrations apply in "
                                  "order, give it the next free number"
                                  % (name, by_number[max(by_number)]))
    redo = force_definitions or bool(pending)
    changed_definitions = [item for item in definitions
                           if redo or recorded.get(item[0]) != item[2]]
    return pending, changed_definitions


def client_runner(login_user="root", login_password="", login_host="localhost",
                  login_port=3306, login_unix_socket=None, connect_timeout=30, client=None,
                  **_ignored):
    """A function run(path, database) that executes one SQL file with the mariadb client and
    raises SchemaFileError with the client's message when it fails."""
    binary = client or shutil.which("mariadb") or shutil.which("mysql")
    if not binary:
        raise SchemaFileError("the mariadb command-line client is required on the database host "
                              "(Debian package mariadb-client)")
    where = []
    if login_unix_socket and login_host in ("localhost", "", None):
        where.append("--socket=%s" % login_unix_socket)
    else:
        where += ["--host=%s" % login_host, "--port=%d" % int(login_port)]

    def run(path, database):
        with tempfile.NamedTemporaryFile("w", prefix="mariadb-pos-", suffix=".cnf") as options:
            # The password goes in a 0600 option file, never on the command line.
            options.write("[client]\npassword=%s\n" % (login_password or ""))
            options.flush()
            command = [binary, "--defaults-extra-file=%s" % options.name,
                       "--user=%s" % login_user, "--connect-timeout=%d" % int(connect_timeout),
                       "--default-character-set=utf8mb4", "--batch", *where, database]
            with open(path, "rb") as sql:
                # The command is a fixed binary and checked options (no shell).
                done = subprocess.run(command, stdin=sql, capture_output=True,  # noqa: S603
                                      check=False)
        if done.returncode != 0:
            message = done.stderr.decode("utf-8", "replace").strip() or "exit %d" % (
                done.returncode)
            raise SchemaFileError("%s: %s" % (os.path.basename(path), message))
    return run


def _recorded(cursor, q_version):
    cursor.execute("SELECT filename, sha256 FROM %s" % q_version)
    return dict(cursor.fetchall())


def _table_exists(cursor, database, table):
    cursor.execute("SELECT COUNT(*) FROM information_schema.TABLES "
                   "WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s", (database, table))
    return cursor.fetchone()[0] > 0


def _columns(cursor, database, table):
    cursor.execute("SELECT COLUMN_NAME FROM information_schema.COLUMNS "
                   "WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s", (database, table))
    return {row[0] for row in cursor.fetchall()}


def _sync_registry(conn, database, entries, check_mode):
    """Make the MaterializedView table hold exactly ``entries``; True when it had to change."""
    q_db = quote_identifier(database, "database")
    q_registry = "%s.%s" % (q_db, quote_identifier(REGISTRY_TABLE))
    q_changelog = "%s.%s" % (q_db, quote_identifier(CHANGELOG_TABLE))
    with conn.cursor() as cursor:
        if not _table_exists(cursor, database, REGISTRY_TABLE):
            if check_mode:
                return True  # a migration not yet applied creates it
            raise SchemaFileError("%s: table %s.%s does not exist (a numbered migration creates "
                                  "it)" % (REGISTRY_FILE, database, REGISTRY_TABLE))
        changelog = _columns(cursor, database, CHANGELOG_TABLE)
        for table, view, keys in entries:
            columns = _columns(cursor, database, table)
            problems = []
            if not columns:
                problems.append("table %s.%s does not exist" % (database, table))
            if not _columns(cursor, database, view):
                problems.append("view %s.%s does not exist" % (database, view))
            for key in keys.split(","):
                if columns and key not in columns:
                    problems.append("key column %s is not a column of %s" % (key, table))
                if changelog and key not in changelog:
                    problems.append("key column %s is not a column of %s" % (key,
                                                                             CHANGELOG_TABLE))
            if problems and not check_mode:
                raise SchemaFileError("%s: %s: %s" % (REGISTRY_FILE, table, "; ".join(problems)))
        cursor.execute("SELECT mv_table, source_view, key_columns FROM %s" % q_registry)
        current = {row[0]: tuple(row) for row in cursor.fetchall()}
        wanted = {entry[0]: entry for entry in entries}
        stale = sorted(set(current) - set(wanted))
        changed = bool(stale) or any(current.get(t) != e for t, e in wanted.items())
        if not changed or check_mode:
            return changed
        for table, view, keys in entries:
            if current.get(table) != (table, view, keys):
                cursor.execute("INSERT INTO %s (mv_table, source_view, key_columns) "
                               "VALUES (%%s, %%s, %%s) ON DUPLICATE KEY UPDATE "
                               "source_view = VALUES(source_view), "
                               "key_columns = VALUES(key_columns)" % q_registry,
                               (table, view, keys))
        if stale:
            marks = ", ".join(["%s"] * len(stale))
            cursor.execute("DELETE FROM %s WHERE mv_table IN (%s)" % (q_changelog, marks), stale)
            cursor.execute("DELETE FROM %s WHERE mv_table IN (%s)" % (q_registry, marks), stale)
    conn.commit()
    return True


def apply_schema(conn, database, sql_dir, materialized_views, run_file, check_mode=False,
                 force_definitions=False):
    """Bring ``database`` to the schema of ``sql_dir``; returns a dict for the module's result.

    ``conn`` is a PyMySQL connection (used for schema_version and the registry); ``run_file(path,
    database)`` executes one SQL file (see :func:`client_runner`). Nothing is written in check
    mode. A file that fails stops the run: the message names it and the files applied before it
    (those are recorded; the failed one is not, so the next run starts again with it).
    """
    try:
        q_db = quote_identifier(database, "database")
    except IdentifierError as error:
        raise SchemaFileError(str(error)) from None
    migrations = migration_files(sql_dir)
    definitions = definition_files(sql_dir)
    entries = registry_entries(materialized_views)
    q_version = "%s.%s" % (q_db, quote_identifier(VERSION_TABLE))
    with conn.cursor() as cursor:
        cursor.execute("SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = %s",
                       (database,))
        if not cursor.fetchone()[0] and not check_mode:
            raise SchemaFileError("database %s does not exist" % database)
        if _table_exists(cursor, database, VERSION_TABLE):
            recorded = _recorded(cursor, q_version)
        elif check_mode:
            recorded = {}
        else:
            cursor.execute(VERSION_TABLE_DDL % q_version)
            recorded = {}
    conn.commit()
    pending, changed_definitions = plan(migrations, definitions, recorded, force_definitions)
    result = dict(database=database, migrations=[m[0] for m in pending],
                  definitions=[d[0] for d in changed_definitions], registry_changed=False,
                  retired=sorted(name for name in recorded if MIGRATION_RE.match(name)
                                 and name not in {m[0] for m in migrations}))
    applied = []

    def run(name, path, digest, replace):
        try:
            run_file(path, database)
        except SchemaFileError as error:
            raise SchemaFileError("%s (applied before it in this run: %s; %s is not recorded, "
                                  "the next run starts again with it)"
                                  % (error, ", ".join(applied) or "nothing", name)) from None
        with conn.cursor() as cursor:
            cursor.execute("INSERT INTO %s (filename, sha256) VALUES (%%s, %%s)%s" % (
                q_version, " ON DUPLICATE KEY UPDATE sha256 = VALUES(sha256), "
                "applied_at = CURRENT_TIMESTAMP(6)" if replace else ""), (name, digest))
        conn.commit()
        applied.append(name)

    if check_mode:
        result["registry_changed"] = _sync_registry(conn, database, entries, True)
    else:
        for name, path, digest in pending:
            run(name, path, digest, replace=False)
        for name, path, digest in changed_definitions:
            run(name, path, digest, replace=True)
        result["registry_changed"] = _sync_registry(conn, database, entries, False)
    result["changed"] = bool(pending or changed_definitions or result["registry_changed"])
    return result
