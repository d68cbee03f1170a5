"""An application that keeps writing through a switchover or failover, for drills and benchmarks.

Commits numbered rows through whichever member accepts writes and records every acknowledged
commit, like an application behind a writer address that follows the primary: on any error it
moves on to the next member (a read-only member refuses with error 1290).
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Sequence

import pymysql

# The drill table: one row per acknowledged commit of a writer run.
CREATE_TABLE = ("CREATE TABLE IF NOT EXISTS {table} (run VARCHAR(40) NOT NULL, seq INT NOT NULL, "
                "PRIMARY KEY (run, seq)) ENGINE=InnoDB")


class Writer(threading.Thread):
    """``address(member)`` gives the member's IP address, or None while it is not running."""

    def __init__(self, run_id: str, members: Sequence[str], address: Callable[[str], str | None],
                 user: str, password: str, database: str, table: str = "drill",
                 ssl_ca: str | None = None) -> None:
        super().__init__(daemon=True)
        self.run_id, self.members, self.address = run_id, list(members), address
        self.login = dict(user=user, password=password, database=database)
        if ssl_ca:  # the members refuse unencrypted TCP: TLS, their certificates checked
            self.login["ssl"] = {"ca": ssl_ca}
        self.table = table
        self.acked: list[tuple[int, float]] = []
        self.errors = 0
        self.stop_event = threading.Event()

    def _connect(self, member: str) -> pymysql.connections.Connection:
        where = self.address(member)
        if where is None:
            raise pymysql.err.OperationalError(2003, f"{member} is not running")
        return pymysql.connect(host=where, autocommit=True, connect_timeout=2, read_timeout=5,
                               write_timeout=5, **self.login)

    def run(self) -> None:
        seq, index, conn = 0, 0, None
        statement = f"INSERT INTO {self.table} (run, seq) VALUES (%s, %s)"
        while not self.stop_event.is_set():
            try:
                if conn is None:
                    conn = self._connect(self.members[index % len(self.members)])
                with conn.cursor() as cur:
                    cur.execute(statement, (self.run_id, seq + 1))
                seq += 1
                self.acked.append((seq, time.monotonic()))
                time.sleep(0.02)
            except (pymysql.err.MySQLError, OSError):
                self.errors += 1
                if conn is not None:
                    try:
                        conn.close()
                    except (pymysql.err.MySQLError, OSError):
                        pass
                conn, index = None, index + 1
                time.sleep(0.05)

    def stop(self) -> None:
        self.stop_event.set()
        self.join(timeout=30)

    def wait_for(self, commits: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while len(self.acked) < commits:
            if time.monotonic() > deadline:
                raise AssertionError(f"the writer made {len(self.acked)} of {commits} commits "
                                     f"within {timeout} s ({self.errors} errors)")
            time.sleep(0.1)

    def window(self) -> float:
        """Longest time between two acknowledged commits: the write-unavailability window."""
        times = [t for _, t in self.acked]
        return max((b - a for a, b in itertools.pairwise(times)), default=0.0)

    def missing(self, present: set[int]) -> list[int]:
        """Acknowledged sequence numbers that are not in ``present`` (the rows a member holds)."""
        return sorted({seq for seq, _ in self.acked} - present)
