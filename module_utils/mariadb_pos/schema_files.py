"""The ordered, numbered SQL files of the POS schema (files/sql/NNN_name.sql).

Used by the tests and the benchmark to apply the schema exactly as roles/pos_schema does: every
file in numeric order, each recorded by name and sha256 in ``schema_version``.
"""

from __future__ import annotations

import hashlib
import os
import re

SQL_FILE_RE = re.compile(r"^(\d{3})_[a-z0-9_]+\.sql$")


class SchemaFileError(Exception):
    """A file in the SQL directory breaks the naming rules (message names the file)."""


def sql_files(sql_dir):
    """Return [(name, path, sha256)] for files/sql/NNN_*.sql in numeric order.

    Files that look numbered but break the pattern, and duplicate numbers, are errors: a silently
    skipped migration would leave the clusters on different schemas.
    """
    found = {}
    for name in sorted(os.listdir(sql_dir)):
        path = os.path.join(sql_dir, name)
        if not name.endswith(".sql") or not os.path.isfile(path):
            continue
        match = SQL_FILE_RE.match(name)
        if not match:
            raise SchemaFileError("%s: SQL file names must look like NNN_lower_case.sql" % path)
        number = match.group(1)
        if number in found:
            raise SchemaFileError("%s: number %s is already used by %s"
                                  % (path, number, found[number][0]))
        with open(path, "rb") as handle:
            digest = hashlib.sha256(handle.read()).hexdigest()
        found[number] = (name, path, digest)
    return [found[number] for number in sorted(found)]
