"""The live topology of a MariaDB GTID cluster, decided from what each member reports.

Pure logic, no database connection: the playbooks read every member's state with community.mysql
(SHOW SLAVE STATUS and a few global variables) and this module decides, in one place,

* which member is the primary (the writable member that does not replicate; when none is writable,
  the one member every replica points at),
* whether the members disagree (two writable members, replicas pointing at different sources, a
  replica pointing at no member) -- then there is no primary and the caller must stop,
* which replica is the most advanced (promotion candidate), and
* which GTIDs a member holds that the primary never saw (errant transactions).

GTIDs are MariaDB's ``domain-server-seqno``. ``gtid_binlog_state`` holds the last seqno of every
(domain, server) pair in a member's binary log; ``gtid_slave_pos`` the last GTID applied per domain.
A member's history is contained in the primary's when, for every (domain, server) pair, the
primary's last seqno is at least the member's. With ``gtid_strict_mode`` seqnos only grow within a
domain, so a larger seqno of the same server cannot be missing on the primary unless it is errant.
"""

from __future__ import annotations

import re

_GTID = re.compile(r"^(\d+)-(\d+)-(\d+)$")


class TopologyError(Exception):
    """Input that cannot be read (a malformed GTID list, a member without a state)."""


def parse_gtid_list(text, what="GTID list"):
    """``'0-1-100,1-2-7'`` -> ``{(0, 1): 100, (1, 2): 7}``: the last seqno per domain, server."""
    result = {}
    for raw_item in (text or "").replace("\n", "").split(","):
        item = raw_item.strip()
        if not item:
            continue
        match = _GTID.match(item)
        if not match:
            raise TopologyError("%s %r: %r is not a GTID (domain-server-seqno)"
                                % (what, text, item))
        domain, server, seqno = (int(part) for part in match.groups())
        key = (domain, server)
        result[key] = max(seqno, result.get(key, 0))
    return result


def format_gtid_list(gtids):
    return ",".join("%d-%d-%d" % (d, s, n) for (d, s), n in sorted(gtids.items()))


def history(binlog_state="", slave_pos=""):
    """Everything a member holds: its binary log state merged with its applied position."""
    merged = dict(parse_gtid_list(binlog_state, "gtid_binlog_state"))
    for key, seqno in parse_gtid_list(slave_pos, "gtid_slave_pos").items():
        merged[key] = max(seqno, merged.get(key, 0))
    return merged


def errant_gtids(member, reference, reference_server_id=None):
    """GTID ranges of ``member`` that ``reference`` does not hold, as readable strings.

    ``member`` and ``reference`` are histories (see ``history``). A range is exact when the member's
    transactions of that server are consecutive (the usual case: writes on an isolated old primary).
    GTIDs of ``reference_server_id`` (the primary's own) can only have come from the primary: the
    members are read one after the other and a busy primary has moved on since it was read.
    """
    errant = []
    for (domain, server), seqno in sorted(member.items()):
        known = reference.get((domain, server), 0)
        if seqno <= known or server == reference_server_id:
            continue
        if known:
            first = "%d-%d-%d" % (domain, server, known + 1)
            errant.append(first if known + 1 == seqno
                          else "%s..%d-%d-%d" % (first, domain, server, seqno))
        else:
            errant.append("%d-%d-%d (and any earlier GTID of server %d in domain %d: the "
                          "primary holds none of that server's)" % (domain, server, seqno, server,
                                                                    domain))
    return errant


def position_key(position):
    """Sort key of an applied position (``gtid_slave_pos``): the total of seqnos over domains.

    All replicas of one primary apply the same stream, so within a domain a larger seqno means more
    applied; domains are independent streams and their counts add up.
    """
    by_domain = {}
    for (domain, _server), seqno in parse_gtid_list(position, "GTID position").items():
        by_domain[domain] = max(seqno, by_domain.get(domain, 0))
    return sum(by_domain.values())


def _flag(value):
    """A server variable as a bool: ``1``/``ON``/``True`` -> True."""
    if isinstance(value, bool):
        return value
    return str(value).strip().upper() in ("1", "ON", "YES", "TRUE")


def _int_or_none(value):
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def normalize_member(host, raw):
    """One member's gathered results -> a flat state dict.

    ``raw`` holds ``address``, ``variables`` (the registered result of the variables query, or its
    row) and ``replica`` (the registered result of mysql_replication mode=getreplica).
    """
    raw = raw or {}
    variables = raw.get("variables") or {}
    replica = raw.get("replica") or {}
    if "query_result" in variables:
        rows = variables.get("query_result") or [[]]
        variables = rows[0][0] if rows and rows[0] else {}
    elif variables.get("failed") or variables.get("unreachable"):
        variables = {}
    state = dict(host=host, address=raw.get("address") or None, answered=False,
                 error=raw.get("error") or "", replica=None)
    if not variables or "read_only" not in variables:
        for result in (raw.get("variables") or {}, replica):
            if result.get("unreachable"):
                state["error"] = state["error"] or "unreachable: %s" % result.get("msg", "")
            elif result.get("module_stderr") or result.get("msg"):
                state["error"] = state["error"] or str(result.get("module_stderr")
                                                       or result.get("msg"))
        state["error"] = " ".join((state["error"] or "did not answer").split())[:300]
        return state
    state.update(
        answered=True,
        read_only=_flag(variables.get("read_only")),
        log_bin=_flag(variables.get("log_bin")),
        gtid_strict_mode=_flag(variables.get("gtid_strict_mode")),
        log_slave_updates=_flag(variables.get("log_slave_updates")),
        server_id=_int_or_none(variables.get("server_id")),
        gtid_binlog_pos=variables.get("gtid_binlog_pos") or "",
        gtid_binlog_state=variables.get("gtid_binlog_state") or "",
        gtid_slave_pos=variables.get("gtid_slave_pos") or "",
        gtid_current_pos=variables.get("gtid_current_pos") or "",
    )
    state["history"] = history(state["gtid_binlog_state"], state["gtid_slave_pos"])
    if replica.get("Is_Replica"):
        state["replica"] = dict(
            source_address=replica.get("Master_Host") or "",
            source_server_id=_int_or_none(replica.get("Master_Server_Id")) or None,
            io_running=replica.get("Slave_IO_Running") == "Yes",
            sql_running=replica.get("Slave_SQL_Running") == "Yes",
            using_gtid=replica.get("Using_Gtid") or "",
            io_pos=replica.get("Gtid_IO_Pos") or "",
            lag=_int_or_none(replica.get("Seconds_Behind_Master")),
            last_io_error=replica.get("Last_IO_Error") or "",
            last_sql_error=replica.get("Last_SQL_Error") or "",
        )
    return state


def _resolve_sources(members, disagreements):
    """Set ``replica.source`` (a member name) from the source's address or server_id."""
    by_address = {m["address"]: h for h, m in members.items() if m.get("address")}
    by_server_id = {m["server_id"]: h for h, m in members.items() if m.get("server_id")}
    silent = [h for h, m in members.items() if not m["answered"]]
    for host, member in members.items():
        replica = member.get("replica")
        if not replica:
            continue
        source = (by_address.get(replica["source_address"])
                  or by_server_id.get(replica["source_server_id"]))
        if source is None and len(silent) == 1 and silent[0] != host and not members[silent[0]].get(
                "address"):
            # The one member that does not answer (its address unknown: no facts) is the only
            # member the source can be; said in the notes so the DBA can check it.
            source = silent[0]
            replica["source_inferred"] = True
        if source is None:
            disagreements.append("%s replicates from %s, which is no member of the cluster"
                                 % (host, replica["source_address"] or "an unknown source"))
        replica["source"] = source


def _describe(member):
    if not member["answered"]:
        return "does not answer (%s)" % member["error"]
    text = "read_only=%s" % ("ON" if member["read_only"] else "OFF")
    replica = member.get("replica")
    if replica:
        text += ", replicates from %s (IO %s, SQL %s)" % (
            replica.get("source") or replica["source_address"],
            "Yes" if replica["io_running"] else "No", "Yes" if replica["sql_running"] else "No")
    else:
        text += ", does not replicate"
    return text


def _replicating(member):
    replica = member.get("replica")
    return bool(replica and (replica["io_running"] or replica["sql_running"]))


def decide(raw_members, inventory_primary=None, primary=None, lag_limit=None):
    """The live topology of ``raw_members`` ({host: gathered results}), see the module docstring.

    ``primary`` skips the discovery and relates every member to the named host (used right after a
    promotion, when the servers are between two consistent states by design).
    """
    if not raw_members:
        raise TopologyError("no members given")
    members = {host: normalize_member(host, raw) for host, raw in raw_members.items()}
    disagreements, notes = [], []
    _resolve_sources(members, disagreements)
    answering = [h for h, m in members.items() if m["answered"]]
    writable = [h for h in answering if not members[h]["read_only"]]
    sources = sorted({m["replica"]["source"] for m in members.values()
                      if m.get("replica") and m["replica"].get("source")})
    bootstrap = False
    primary_given = primary is not None

    if primary_given:
        if primary not in members:
            raise TopologyError("%s is not a member (members: %s)"
                                % (primary, ", ".join(sorted(members))))
    elif len(writable) > 1:
        disagreements.append("more than one member is writable: " + "; ".join(
            "%s: %s" % (h, _describe(members[h])) for h in writable))
    elif writable:
        primary = writable[0]
        if _replicating(members[primary]):
            disagreements.append("%s is writable but also replicates: %s"
                                 % (primary, _describe(members[primary])))
    elif len(sources) == 1:
        primary = sources[0]
        if _replicating(members[primary]):
            disagreements.append("every member is read-only and the replicas' source %s "
                                 "replicates itself: %s" % (primary, _describe(members[primary])))
        elif members[primary]["answered"]:
            notes.append("%s is the replicas' source but read-only: it is the primary and gets "
                         "its writes back" % primary)
    elif not sources:
        bootstrap = True
        primary = inventory_primary
        if primary not in members:
            raise TopologyError("no member replicates or is writable (a new cluster), and the "
                                "inventory's primary %r is not among the members %s"
                                % (primary, ", ".join(sorted(members))))
    forced = primary_given
    if not forced and not bootstrap and not disagreements and any(s != primary for s in sources):
        disagreements.append("the replicas point at different sources: " + "; ".join(
            "%s replicates from %s" % (h, m["replica"].get("source")
                                       or m["replica"]["source_address"])
            for h, m in members.items() if m.get("replica"))
            + (" (and %s is writable)" % primary if writable else ""))
    if disagreements:
        primary = None

    table, result_members = [], {}
    primary_member = members.get(primary) if primary else None
    for host, member in members.items():
        role = _role(host, member, primary)
        info = dict(role=role, answered=member["answered"], error=member["error"],
                    address=member.get("address"))
        if member["answered"]:
            info.update(read_only=member["read_only"], log_bin=member["log_bin"],
                        gtid_strict_mode=member["gtid_strict_mode"],
                        log_slave_updates=member["log_slave_updates"],
                        server_id=member["server_id"],
                        gtid_binlog_pos=member["gtid_binlog_pos"],
                        gtid_slave_pos=member["gtid_slave_pos"],
                        gtid_current_pos=member["gtid_current_pos"],
                        has_history=bool(member["history"]))
            replica = member.get("replica")
            info["replica"] = replica
            info["healthy"] = (role == "primary" and not member["read_only"]) or bool(
                role == "replica" and replica["io_running"] and replica["sql_running"]
                and (lag_limit is None or (replica["lag"] is not None
                                           and replica["lag"] <= lag_limit)))
            errant = []
            if primary_member and primary_member["answered"] and host != primary:
                errant = errant_gtids(member["history"], primary_member["history"],
                                      primary_member["server_id"])
            info["errant"] = errant
        result_members[host] = info
        table.append(_table_row(host, info))

    most_advanced = None
    candidates = [h for h, i in result_members.items()
                  if i["role"] == "replica" and i["answered"]]
    if candidates:
        most_advanced = max(candidates,
                            key=lambda h: position_key(result_members[h]["gtid_slave_pos"]))
    if primary and inventory_primary and primary != inventory_primary and not bootstrap:
        notes.append("the inventory names %s as the primary; the servers say %s is: following "
                     "the servers" % (inventory_primary, primary))
    return dict(
        primary=primary,
        primary_answers=bool(primary_member and primary_member["answered"]),
        bootstrap=bootstrap,
        disagreements=disagreements,
        notes=notes,
        most_advanced=most_advanced,
        members=result_members,
        table=[_TABLE_HEADER, *table],
    )


def seed_source(topology, target):
    """The member a new or rebuilt replica ``target`` copies its data from (a backup stream).

    The healthy replica of the primary that has applied the most (no errant transactions, not the
    target itself; ties by name), so the primary never carries the copy; the primary when no
    replica is healthy (a new cluster, or every replica down or lagging).
    """
    members = topology["members"]
    candidates = sorted(
        host for host, info in members.items()
        if host != target and info["role"] == "replica" and info["answered"]
        and info.get("healthy") and not info.get("errant"))
    if candidates:
        # max() keeps the first of equals: the sorted names break ties.
        return max(candidates, key=lambda host: position_key(members[host]["gtid_slave_pos"]))
    primary = topology["primary"]
    if not primary or not members.get(primary, {}).get("answered"):
        raise TopologyError("no member can seed %s: no healthy replica of the primary and the "
                            "primary %s does not answer" % (target, primary or "(none)"))
    return primary


def _role(host, member, primary):
    if host == primary:
        return "primary"
    if not member["answered"]:
        return "down"
    replica = member.get("replica")
    if replica and replica.get("source") == primary and primary is not None:
        return "replica"
    if replica:
        return "replica_elsewhere"
    return "detached"


_TABLE_HEADER = "%-16s %-17s %-9s %-16s %-7s %-5s %s" % (
    "member", "role", "read_only", "source", "io/sql", "lag", "gtid_current_pos / note")


def _table_row(host, info):
    if not info["answered"]:
        return "%-16s %-17s %s" % (host, info["role"], "does not answer: " + info["error"][:120])
    replica = info.get("replica") or {}
    io_sql = ("%s/%s" % ("Yes" if replica["io_running"] else "No",
                         "Yes" if replica["sql_running"] else "No")) if replica else "-"
    lag = replica.get("lag") if replica else None
    note = info["gtid_current_pos"] or "(empty)"
    if info.get("errant"):
        note += "  ERRANT " + ", ".join(info["errant"])
    return "%-16s %-17s %-9s %-16s %-7s %-5s %s" % (
        host, info["role"], "ON" if info["read_only"] else "OFF",
        (replica.get("source") or replica.get("source_address") or "-") if replica else "-",
        io_sql, "-" if lag is None else lag, note)


def _replica_health(host, info, primary, lag_limit):
    replica = info.get("replica") or {}
    if info["role"] != "replica":
        return "%s does not replicate from %s (%s): rejoin it first (playbooks/rejoin.yml)." % (
            host, primary, info["role"])
    if info["healthy"]:
        return None
    return ("%s is not a healthy replica of %s (IO thread %s, SQL thread %s, lag %s s, "
            "limit %s s)%s." % (
        host, primary, "Yes" if replica.get("io_running") else "No",
        "Yes" if replica.get("sql_running") else "No",
        "unknown" if replica.get("lag") is None else replica.get("lag"), lag_limit,
        (": " + (replica.get("last_sql_error") or replica.get("last_io_error")))
        if replica.get("last_sql_error") or replica.get("last_io_error") else ""))


def operation_problems(topology, operation, target, force=False, lag_limit=None):
    """Why ``operation`` (switchover or failover) to ``target`` must not start; [] when it may.

    ``target`` is the requested new primary (None: the most advanced replica).
    """
    members, primary = topology["members"], topology["primary"]
    names = ", ".join(members)
    if target is not None and target not in members:
        return ["new_primary=%s is not a member (members: %s)." % (target, names)]
    if operation == "failover":
        # The relay logs are applied before the promotion: what counts is what was received.
        received = [h for h, m in members.items() if m["role"] == "replica" and m["answered"]]
        topology["most_advanced"] = max(received, key=lambda h: position_key(
            members[h]["replica"]["io_pos"] or members[h]["gtid_slave_pos"]), default=None)
    target = target or topology["most_advanced"]
    if target is None:
        return ["no replica of %s answers: there is no member to promote." % primary]
    if target == primary:
        return []
    problems = []
    info = members[target]
    if not info["answered"]:
        return ["new_primary=%s does not answer (%s)." % (target, info["error"])]
    if operation == "switchover":
        for host, member in members.items():
            if not member["answered"]:
                problems.append("%s does not answer (%s); a switchover needs every member (use "
                                "playbooks/failover.yml when the primary is gone)."
                                % (host, member["error"]))
            elif host != primary:
                problem = _replica_health(host, member, primary, lag_limit)
                if problem:
                    problems.append(problem)
    else:
        if topology["primary_answers"] and not force:
            problems.append(
                "the primary %s answers (%s): a failover is for a primary that is gone. For "
                "planned maintenance use playbooks/switchover.yml; to fail over anyway pass "
                "-e force=true." % (primary, "read_only=ON" if members[primary]["read_only"]
                                    else "writable"))
        if info["role"] != "replica":
            problems.append("new_primary=%s does not replicate from %s (%s)."
                            % (target, primary, info["role"]))
        best = topology["most_advanced"]

        def received(host):
            return members[host]["replica"]["io_pos"] or members[host]["gtid_slave_pos"]

        if best and best != target and info["role"] == "replica" and \
                position_key(received(best)) > position_key(received(target)):
            problems.append("new_primary=%s has received %s but %s has received more (%s): "
                            "promote %s." % (target, received(target), best, received(best),
                                             best))
    for host, member in members.items():
        if member["answered"] and member["role"] in ("primary", "replica"):
            for setting in ("gtid_strict_mode", "log_slave_updates"):
                if not member[setting]:
                    problems.append("%s: %s is OFF." % (host, setting))
    if not info["log_bin"]:
        problems.append("new_primary=%s: the binary log is OFF." % target)
    return problems
