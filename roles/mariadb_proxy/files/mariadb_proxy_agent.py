#!/usr/bin/python3
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""HAProxy agent of one MariaDB member (role mariadb_proxy, docs/connections.md).

HAProxy's agent-check connects to this port and sends the role it asks about, "writer" or
"reader"; the agent answers "up" when the local server can serve that role and "down #reason"
otherwise. It reads the server's state over the unix socket (@@read_only, SHOW SLAVE STATUS) on
one kept connection, at most once per --cache seconds however many proxies ask.

  writer  up when the server is writable (read_only OFF: the live primary).
  reader  up when the server is a read-only replica whose both threads run without error and
          whose Seconds_Behind_Master is known and at most --max-lag.
"""

from __future__ import annotations

import argparse
import getpass
import socketserver
import threading
import time

import pymysql


def read_state(connection) -> dict:
    """The member's role and replication state, from an open connection."""
    with connection.cursor(pymysql.cursors.DictCursor) as cursor:
        cursor.execute("SELECT @@read_only AS read_only")
        read_only = bool(cursor.fetchone()["read_only"])
        cursor.execute("SHOW SLAVE STATUS")
        row = cursor.fetchone()
    replica = None
    if row:
        replica = dict(io=row["Slave_IO_Running"], sql=row["Slave_SQL_Running"],
                       io_errno=int(row["Last_IO_Errno"] or 0),
                       sql_errno=int(row["Last_SQL_Errno"] or 0),
                       error=(row["Last_IO_Error"] or row["Last_SQL_Error"] or "").strip(),
                       lag=row["Seconds_Behind_Master"])
    return dict(read_only=read_only, replica=replica)


def decide(role: str, state: dict, max_lag: int) -> str:
    """The agent's answer for ``role`` given ``state`` (read_state's, or {"error": text})."""
    if role not in ("writer", "reader"):
        return "down #unknown check %r (writer or reader)" % role[:32]
    if "error" in state:
        return "down #" + state["error"]
    if role == "writer":
        return "down #read-only" if state["read_only"] else "up"
    replica = state["replica"]
    if not state["read_only"]:
        return "down #writable (the primary)"
    if replica is None:
        return "down #not a replica"
    if replica["io_errno"] or replica["sql_errno"]:
        return "down #replication error %d/%d: %s" % (replica["io_errno"], replica["sql_errno"],
                                                      replica["error"][:120])
    if replica["io"] != "Yes" or replica["sql"] != "Yes":
        return "down #replication stopped (IO %s, SQL %s)" % (replica["io"], replica["sql"])
    if replica["lag"] is None:
        return "down #lag unknown"
    if int(replica["lag"]) > max_lag:
        return "down #%d s behind (limit %d s)" % (int(replica["lag"]), max_lag)
    return "up"


class MemberState:
    """The local server's state, read at most every ``cache`` seconds on one connection."""

    def __init__(self, socket_path: str, user: str, cache: float) -> None:
        self.socket_path, self.user, self.cache = socket_path, user, cache
        self.lock = threading.Lock()
        self.connection = None
        self.value: dict = {}
        self.read_at = float("-inf")

    def get(self) -> dict:
        with self.lock:
            if time.monotonic() - self.read_at >= self.cache:
                self.value = self._read()
                self.read_at = time.monotonic()
            return self.value

    def _read(self) -> dict:
        try:
            if self.connection is None:
                self.connection = pymysql.connect(unix_socket=self.socket_path, user=self.user,
                                                  connect_timeout=2, read_timeout=2,
                                                  autocommit=True)
            return read_state(self.connection)
        except (pymysql.err.MySQLError, OSError) as error:
            if self.connection is not None:
                try:
                    self.connection.close()
                except (pymysql.err.MySQLError, OSError):
                    pass
            self.connection = None
            return {"error": "server not answering: %s" % error}


class AgentHandler(socketserver.StreamRequestHandler):
    timeout = 2

    def handle(self) -> None:
        try:
            role = self.rfile.readline(64).decode("ascii", "replace").strip()
        except OSError:
            return
        if not role:  # HAProxy's plain TCP check of this port: connect and close
            return
        answer = decide(role, self.server.member.get(), self.server.max_lag)
        self.wfile.write((answer + "\n").encode("ascii", "replace"))


class AgentServer(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True

    def __init__(self, address, member: MemberState, max_lag: int) -> None:
        self.member, self.max_lag = member, max_lag
        super().__init__(address, AgentHandler)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bind", required=True, help="address HAProxy reaches this member at")
    parser.add_argument("--port", type=int, default=9280)
    parser.add_argument("--socket", default="/run/mysqld/mysqld.sock")
    parser.add_argument("--user", default=getpass.getuser(),
                        help="account logging in over the socket (unix_socket authentication)")
    parser.add_argument("--max-lag", type=int, default=10)
    parser.add_argument("--cache", type=float, default=0.5)
    args = parser.parse_args(argv)
    member = MemberState(args.socket, args.user, args.cache)
    with AgentServer((args.bind, args.port), member, args.max_lag) as server:
        server.serve_forever()


if __name__ == "__main__":
    main()
