"""Replication health: the consistency check's verdict and the status report of a cluster.

Pure functions, testable without Ansible: the caller gathers the servers' answers (the
mariadb_topology module's decision, the heartbeat query, pt-table-checksum's output, the
replicas' differing chunks) and these functions turn them into what a DBA reads: a short table,
the differences named by table, chunk and member, how to repair them, and a Markdown report with
an SVG picture of the topology and lag.
"""

import re
from html import escape

_PT_ROW = re.compile(
    r"^\s*\S+\s+(?P<errors>\d+)\s+(?P<diffs>\d+)\s+(?P<rows>\d+)\s+(?P<diff_rows>-?\d+)\s+"
    r"(?P<chunks>\d+)\s+(?P<skipped>\d+)\s+(?P<time>[\d.]+)\s+(?P<table>\S+)\s*$")


class HealthError(Exception):
    """Input the report cannot use; the message names the member and the cause."""


def parse_checksum_output(text):
    """pt-table-checksum's per-table lines: {db.table: {errors, rows, chunks, skipped}}."""
    tables = {}
    for line in (text or "").splitlines():
        match = _PT_ROW.match(line)
        if match:
            tables[match.group("table")] = dict(
                errors=int(match.group("errors")), rows=int(match.group("rows")),
                chunks=int(match.group("chunks")), skipped=int(match.group("skipped")))
    return tables


def _chunk_text(row):
    bounds = ""
    if row.get("lower_boundary") is not None or row.get("upper_boundary") is not None:
        bounds = " (%s %s..%s)" % (row.get("chunk_index") or "rows", row.get("lower_boundary"),
                                    row.get("upper_boundary"))
    return "chunk %s%s: %s rows on the replica, %s on the primary" % (
        row.get("chunk"), bounds, row.get("this_cnt"), row.get("master_cnt"))


def summarize_check(primary, checksum_output, replicas, checked_at="", checksum_errors="",
                    replicate_table="pos_health.checksums"):
    """The verdict of a consistency check.

    ``replicas`` maps each replica to ``{"caught_up": bool, "diffs": [rows of the diff query],
    "error": str, "dsn": "h=ADDRESS,P=PORT"}``; ``checksum_errors`` is pt-table-checksum's
    standard error. Returns ``status`` (consistent / differences / incomplete), the
    ``differences`` (one line per table, chunk and member), how to ``repair`` them, per-table
    ``tables`` and a printable ``table``.
    """
    if not primary:
        raise HealthError("no primary: the members disagree on the topology")
    tables = parse_checksum_output(checksum_output)
    differences, incomplete = [], []
    if not tables:
        incomplete.append("pt-table-checksum checked no table: are the databases right?")
    incomplete += ["pt-table-checksum: " + line.strip()
                   for line in (checksum_errors or "").splitlines() if line.strip()]
    differing = {}  # table -> {member: [chunks]}
    for host in sorted(replicas):
        answer = replicas[host] or {}
        if answer.get("error"):
            incomplete.append("%s: %s" % (host, answer["error"]))
            continue
        if not answer.get("caught_up"):
            incomplete.append("%s did not apply the checksums in time (lagging or stopped): "
                              "its chunks were not compared" % host)
            continue
        for row in answer.get("diffs") or []:
            table = "%s.%s" % (row.get("db"), row.get("tbl"))
            differing.setdefault(table, {}).setdefault(host, []).append(row)
            differences.append("%s differs on %s from the primary %s: %s"
                               % (table, host, primary, _chunk_text(row)))
    for table, info in sorted(tables.items()):
        if info["errors"] or info["skipped"]:
            incomplete.append("%s: %d errors, %d chunks skipped by pt-table-checksum"
                              % (table, info["errors"], info["skipped"]))
    for table in differing:
        tables.setdefault(table, dict(errors=0, rows=None, chunks=None, skipped=0))
    members = sorted(replicas)
    lines = ["%-32s %8s %6s  %s" % ("table", "rows", "chunks",
                                    "  ".join("%-14s" % m for m in members))]
    for table, info in sorted(tables.items()):
        cells = []
        for member in members:
            answer = replicas[member] or {}
            if answer.get("error") or not answer.get("caught_up"):
                cells.append("%-14s" % "not compared")
            elif member in differing.get(table, {}):
                cells.append("%-14s" % ("DIFF %d chunk%s" % (
                    len(differing[table][member]),
                    "" if len(differing[table][member]) == 1 else "s")))
            else:
                cells.append("%-14s" % "same")
        lines.append("%-32s %8s %6s  %s" % (table, "-" if info["rows"] is None else info["rows"],
                                            "-" if info["chunks"] is None else info["chunks"],
                                            "  ".join(cells)))
    repair = []
    if differences:
        repair = ["How to repair (the primary %s holds the reference data):" % primary]
        for host in sorted({h for members in differing.values() for h in members}):
            dsn = (replicas[host] or {}).get("dsn") or "h=<%s>" % host
            repair.append(
                "  - %s, a few rows: on %s run pt-table-sync --print --replicate %s "
                "--sync-to-master %s,u=USER,p=PASSWORD with an account that may write the table "
                "(read the statements; then --execute instead of --print)"
                % (host, primary, replicate_table, dsn))
        repair.append("  - many rows or unsure: rebuild the replica from the primary: "
                      "ansible-playbook playbooks/rejoin.yml -e rebuild=HOST (docs/operations.md)")
        repair.append("  then run playbooks/check.yml again.")
    status = "differences" if differences else ("incomplete" if incomplete else "consistent")
    return dict(status=status, primary=primary, checked_at=checked_at, tables=tables,
                differences=differences, incomplete=incomplete, repair=repair,
                members={m: ("not compared" if (replicas[m] or {}).get("error")
                             or not (replicas[m] or {}).get("caught_up")
                             else "differs" if any(m in d for d in differing.values())
                             else "same") for m in members},
                table=lines)


# ---------------------------------------------------------------- status report


def _lag_text(lag):
    return "-" if lag is None else "%.1f s" % lag


def status_rows(topology, extras, last_check=None, max_lag=None):
    """One row per member: topology decision + heartbeat lag, TLS and the last check's result.

    ``extras`` maps each member to ``{"lag": seconds or None, "tls": str}``.
    """
    rows = []
    last_members = (last_check or {}).get("members") or {}
    for host, member in sorted((topology.get("members") or {}).items()):
        extra = extras.get(host) or {}
        replica = member.get("replica") or {}
        lag = extra.get("lag")
        problems = []
        if not member.get("answered"):
            problems.append("does not answer: %s" % (member.get("error") or "unknown"))
        if member.get("errant"):
            problems.append("errant GTIDs " + ", ".join(member["errant"]))
        if replica:
            if not replica.get("io_running"):
                problems.append("IO thread not running")
            if not replica.get("sql_running"):
                problems.append("SQL thread not running")
            for key in ("last_io_error", "last_sql_error"):
                if replica.get(key):
                    problems.append(replica[key][:160])
        if member.get("answered") and lag is None:
            problems.append("no heartbeat")
        elif max_lag is not None and lag is not None and lag > max_lag:
            problems.append("heartbeat %.1f s old (limit %s s)" % (lag, max_lag))
        if member.get("role") not in ("primary", "replica"):
            problems.append("role " + str(member.get("role")))
        if host == topology.get("primary") and member.get("answered") and member.get("read_only"):
            problems.append("primary is read-only")
        check = ("primary (reference)" if host == (last_check or {}).get("primary")
                 else last_members.get(host, "never checked"))
        if check == "differs":
            problems.append("data differs (last check)")
        rows.append(dict(
            member=host, role=member.get("role"),
            read_only=None if not member.get("answered") else bool(member.get("read_only")),
            gtid_binlog_pos=member.get("gtid_binlog_pos") or "",
            gtid_slave_pos=member.get("gtid_slave_pos") or "",
            lag=lag,
            threads=("%s/%s" % ("Yes" if replica.get("io_running") else "No",
                                "Yes" if replica.get("sql_running") else "No")
                     if replica else "-"),
            errors=" | ".join(filter(None, [replica.get("last_io_error"),
                                            replica.get("last_sql_error")])),
            tls=extra.get("tls") or "-",
            check=check,
            healthy=not problems,
            problems=problems))
    return rows


_COLUMNS = [("member", 14), ("role", 9), ("ro", 3), ("gtid_binlog_pos", 22), ("gtid_slave_pos", 22),
            ("lag", 8), ("io/sql", 7), ("tls", 26), ("last check", 19), ("health", 0)]


def _cells(row):
    ro = "-" if row["read_only"] is None else ("ON" if row["read_only"] else "OFF")
    return [row["member"], row["role"] or "-", ro, row["gtid_binlog_pos"] or "-",
            row["gtid_slave_pos"] or "-", _lag_text(row["lag"]), row["threads"], row["tls"],
            row["check"], "OK" if row["healthy"] else "; ".join(row["problems"])]


def status_table(rows):
    """The printable table, one line per member."""
    def line(cells):
        return " ".join(("%-*s" % (width, cell)) if width else str(cell)
                        for (_, width), cell in zip(_COLUMNS, cells, strict=True)).rstrip()
    return [line([name for name, _ in _COLUMNS])] + [line(_cells(r)) for r in rows]


def status_markdown(cluster, rows, last_check=None, generated_at="", svg_name="topology.svg"):
    """A small Markdown report: the picture, the table, the last check."""
    header = [name for name, _ in _COLUMNS]
    out = ["# Cluster %s: replication status" % cluster, "",
           "Generated %s." % generated_at if generated_at else "", "",
           "![topology and lag](%s)" % svg_name, "",
           "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        out.append("| " + " | ".join(str(c).replace("|", "\\|") for c in _cells(row)) + " |")
    out += ["", "## Last consistency check", ""]
    if last_check:
        out.append("%s at %s against primary %s." % (last_check.get("status"),
                                                      last_check.get("checked_at") or "?",
                                                      last_check.get("primary")))
        out += ["", "```", *last_check.get("table", []), "```"]
        out += ["- " + d for d in last_check.get("differences", []) + last_check.get(
            "incomplete", [])]
    else:
        out.append("No check has run yet: `ansible-playbook playbooks/check.yml`.")
    return "\n".join(out) + "\n"


def status_svg(rows, max_lag=None):
    """The topology as a picture: the primary on top, an arrow to each replica, labelled with its
    heartbeat lag; green healthy, red not, grey down."""
    primary = [r for r in rows if r["role"] == "primary"]
    others = [r for r in rows if r["role"] != "primary"]
    width = max(240 * max(len(others), 1), 320)
    height = 260

    def box(row, x, y):
        color = ("#9e9e9e" if row["read_only"] is None
                 else "#2e7d32" if row["healthy"] else "#c62828")
        label = escape("%s (%s)" % (row["member"], row["role"]))
        detail = escape("lag %s, ro %s" % (_lag_text(row["lag"]),
                                           "-" if row["read_only"] is None
                                           else ("ON" if row["read_only"] else "OFF")))
        return ('<rect x="%d" y="%d" width="200" height="56" rx="8" fill="%s"/>'
                '<text x="%d" y="%d" fill="white" font-size="14" text-anchor="middle">%s</text>'
                '<text x="%d" y="%d" fill="white" font-size="12" text-anchor="middle">%s</text>'
                % (x, y, color, x + 100, y + 23, label, x + 100, y + 43, detail))

    parts = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" '
             'font-family="sans-serif">' % (width, height),
             '<defs><marker id="a" markerWidth="10" markerHeight="10" refX="9" refY="3" '
             'orient="auto"><path d="M0,0 L9,3 L0,6 z" fill="#555"/></marker></defs>']
    top_x = width // 2 - 100
    if primary:
        parts.append(box(primary[0], top_x, 16))
    for index, row in enumerate(others):
        x = 20 + index * 240
        if primary:
            dashed = ' stroke-dasharray="6,4"' if row["threads"] != "Yes/Yes" else ""
            parts.append('<line x1="%d" y1="72" x2="%d" y2="176" stroke="#555" stroke-width="2"'
                         '%s marker-end="url(#a)"/>' % (top_x + 100, x + 100, dashed))
            parts.append('<text x="%d" y="130" font-size="12" text-anchor="middle">%s</text>'
                         % ((top_x + x) // 2 + 100, escape(_lag_text(row["lag"]))))
        parts.append(box(row, x, 180))
    if max_lag is not None:
        parts.append('<text x="8" y="%d" font-size="11" fill="#555">heartbeat lag limit %s s'
                     '</text>' % (height - 6, escape(str(max_lag))))
    parts.append("</svg>")
    return "\n".join(parts) + "\n"
