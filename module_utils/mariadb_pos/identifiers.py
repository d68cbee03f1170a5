# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one rule for the names the project's code writes into SQL text.

Database, table, view and column names cannot travel as query parameters, so every name that
reaches SQL text is checked here first and then backtick-quoted: ASCII letters, digits and ``_``,
starting with a letter, at most 64 characters (MariaDB's limit). A table that gets helper tables
named after it (``<table>__shadow`` ...) passes a smaller ``max_length``.

Used by the modules (module_utils), by the roles through the filter plugin
plugins/filter/mariadb_pos.py, and by the schema loader. Stdlib only.
"""

from __future__ import annotations

import re

MAX_IDENTIFIER_LENGTH = 64
IDENTIFIER_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


class IdentifierError(ValueError):
    """A name that may not be written into SQL; the message names it and says why."""


def identifier_problem(name, what="identifier", max_length=MAX_IDENTIFIER_LENGTH):
    """Return why ``name`` is not a valid identifier (a sentence), or None when it is."""
    if not isinstance(name, str) or not IDENTIFIER_RE.match(name):
        return ("invalid %s %r: letters, digits and _ only, starting with a letter"
                % (what, name))
    if len(name) > max_length:
        return ("invalid %s %r: %d characters, at most %d allowed"
                % (what, name, len(name), max_length))
    return None


def check_identifier(name, what="identifier", max_length=MAX_IDENTIFIER_LENGTH):
    """Return ``name`` unchanged, or raise IdentifierError saying what is wrong with it."""
    problem = identifier_problem(name, what, max_length)
    if problem:
        raise IdentifierError(problem)
    return name


def quote_identifier(name, what="identifier", max_length=MAX_IDENTIFIER_LENGTH):
    """Backtick-quote ``name`` after checking it (raises IdentifierError)."""
    return "`%s`" % check_identifier(name, what, max_length)
