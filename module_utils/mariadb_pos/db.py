"""Connection options shared by the project's modules, in the style of community.mysql.

Runs on the managed host (Debian's python3-pymysql, 1.0.2 on Debian 12) and in the tests.
"""

from __future__ import annotations

try:
    import pymysql
    HAS_PYMYSQL = True
except ImportError:  # reported by the module wrapper with a clear message
    pymysql = None
    HAS_PYMYSQL = False

# Ansible argument_spec fragment; the module DOCUMENTATION repeats these options.
CONNECTION_ARGUMENT_SPEC = dict(
    login_user=dict(type="str", default="root"),
    login_password=dict(type="str", no_log=True, default=""),
    login_host=dict(type="str", default="localhost"),
    login_port=dict(type="int", default=3306),
    login_unix_socket=dict(type="str", default="/run/mysqld/mysqld.sock"),
    connect_timeout=dict(type="int", default=30),
)


class ConnectionError_(Exception):
    """Raised with a message naming the server and the cause."""


def connect(login_user="root", login_password="", login_host="localhost", login_port=3306,
            login_unix_socket=None, connect_timeout=30, database=None, **extra):
    """Open a PyMySQL connection: over the socket when one is given and the host is local."""
    if not HAS_PYMYSQL:
        raise ConnectionError_("the PyMySQL library is required on the managed host "
                               "(Debian package python3-pymysql)")
    options = dict(user=login_user, password=login_password or "", database=database,
                   charset="utf8mb4", connect_timeout=connect_timeout, autocommit=False, **extra)
    if login_unix_socket and login_host in ("localhost", "", None):
        options["unix_socket"] = login_unix_socket
        where = "socket %s" % login_unix_socket
    else:
        options["host"] = login_host
        options["port"] = login_port
        where = "%s:%s" % (login_host, login_port)
    try:
        return pymysql.connect(**options)
    except pymysql.err.MySQLError as error:
        raise ConnectionError_("cannot connect to MariaDB at %s as %s: %s"
                               % (where, login_user, error)) from error
