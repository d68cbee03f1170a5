# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Connection options shared by the project's modules, in the style of community.mysql.

A module builds its argument spec from :func:`connection_argument_spec` (documented once, in the
doc fragment plugins/doc_fragments/mariadb_pos_login.py: ``extends_documentation_fragment:
[mariadb_pos_login]``) and opens its connection with :func:`connect_from_params`; the logic in
module_utils then receives that connection and explicit arguments.

Runs on the managed host (Debian's python3-pymysql, 1.0.2 on Debian 12) and in the tests.
"""

from __future__ import annotations

import contextlib
import copy

try:
    import pymysql
    HAS_PYMYSQL = True
except ImportError:  # reported by the module wrapper with a clear message
    pymysql = None
    HAS_PYMYSQL = False

# The login options; plugins/doc_fragments/mariadb_pos_login.py documents exactly these
# (tests/test_module_docs.py checks that they agree).
CONNECTION_ARGUMENT_SPEC = dict(
    login_user=dict(type="str", default="root"),
    login_password=dict(type="str", no_log=True, default=""),
    login_host=dict(type="str", default="localhost"),
    login_port=dict(type="int", default=3306),
    login_unix_socket=dict(type="str", default="/run/mysqld/mysqld.sock"),
    connect_timeout=dict(type="int", default=30),
)

PYMYSQL_MISSING = ("the PyMySQL library is required on the managed host "
                   "(Debian package python3-pymysql)")


def connection_argument_spec(**module_options):
    """A module's whole argument spec: its own options plus the login options (a fresh copy)."""
    spec = copy.deepcopy(CONNECTION_ARGUMENT_SPEC)
    overlap = set(spec) & set(module_options)
    if overlap:
        raise ValueError("options %s are login options already" % ", ".join(sorted(overlap)))
    spec.update(module_options)
    return spec


def connection_options(params):
    """The login options out of a module's params, as keyword arguments of :func:`connect`."""
    return {name: params[name] for name in CONNECTION_ARGUMENT_SPEC}


class ConnectionError_(Exception):
    """Raised with a message naming the server and the cause."""


def describe_server(login_host="localhost", login_port=3306, login_unix_socket=None, **_rest):
    """Where :func:`connect` connects to, for messages."""
    if login_unix_socket and login_host in ("localhost", "", None):
        return "socket %s" % login_unix_socket
    return "%s:%s" % (login_host, login_port)


def connect(login_user="root", login_password="", login_host="localhost", login_port=3306,
            login_unix_socket=None, connect_timeout=30, database=None, **extra):
    """Open a PyMySQL connection: over the socket when one is given and the host is local."""
    if not HAS_PYMYSQL:
        raise ConnectionError_(PYMYSQL_MISSING)
    options = dict(user=login_user, password=login_password or "", database=database,
                   charset="utf8mb4", connect_timeout=connect_timeout, autocommit=False, **extra)
    if login_unix_socket and login_host in ("localhost", "", None):
        options["unix_socket"] = login_unix_socket
    else:
        options["host"] = login_host
        options["port"] = login_port
    where = describe_server(login_host, login_port, login_unix_socket)
    try:
        return pymysql.connect(**options)
    except pymysql.err.MySQLError as error:
        raise ConnectionError_("cannot connect to MariaDB at %s as %s: %s"
                               % (where, login_user, error)) from error


def connect_from_params(params, **extra):
    """:func:`connect` with the login options of a module's params."""
    return connect(**connection_options(params), **extra)


@contextlib.contextmanager
def bulk_insert_session(cursor):
    """unique_checks and foreign_key_checks off (session variables: no privilege needed) for
    the statements inside, then back to the session's own values, also after an error. An
    INSERT or LOAD DATA into an empty InnoDB table then takes the bulk path (MariaDB >= 10.7):
    one undo record, rows sorted and written page by page. On 10.11 a duplicate key there
    leaves the table empty without an error: callers check what was stored."""
    cursor.execute("SELECT @@SESSION.unique_checks, @@SESSION.foreign_key_checks")
    saved = cursor.fetchone()
    cursor.execute("SET SESSION unique_checks = 0, foreign_key_checks = 0")
    restore = "SET SESSION unique_checks = %s, foreign_key_checks = %s"
    try:
        yield
    except Exception:
        with contextlib.suppress(Exception):  # never mask the original error
            cursor.execute(restore, saved)
        raise
    cursor.execute(restore, saved)
