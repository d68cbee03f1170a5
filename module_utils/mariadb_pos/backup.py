"""Backup store logic: manifests, retention, GTID arithmetic and point-in-time recovery plans.

Runs on the backup host inside the ``mariadb_backup_store`` module and directly in the tests; it
touches nothing but the store directory and ``mariadb-binlog``'s text output, so every rule here is
tested without Ansible and without a cluster.

The store holds one directory per backup, ``<store>/backups/<id>/``, with the compressed mbstream
(``backup.mbstream.zst``) and ``manifest.json``; archived binary logs live under
``<store>/binlogs/<source host>/``.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile

MANIFEST = "manifest.json"
STREAM = "backup.mbstream.zst"
MANIFEST_FORMAT = 1
STATUSES = ("running", "good", "failed")

_GTID = re.compile(r"^(\d+)-(\d+)-(\d+)$")
_TIME_FORMATS = ("%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M",
                 "%Y-%m-%d")
# mariadb-binlog's event header: "#261129  7:49:51 server id 7  end_log_pos 1043 ... GTID 0-7-5"
_EVENT_HEADER = re.compile(r"^#(\d{6})\s+(\d{1,2}:\d{2}:\d{2}) server id (\d+)\s+end_log_pos (\d+)")
_EVENT_GTID = re.compile(r"\tGTID (\d+-\d+-\d+)")
# The list wraps over "# "-prefixed lines when the state holds several servers (any switchover).
_EVENT_GTID_LIST = re.compile(r"\tGtid list \[([^\]]*)\]")


class BackupError(Exception):
    """A problem the user must fix; the message names the file or host and the cause."""


# --- GTID positions ---------------------------------------------------------------------------

def parse_gtid_list(text: str, what: str = "GTID position") -> dict[int, tuple[int, int]]:
    """'0-1-100,1-2-5' -> {0: (1, 100), 1: (2, 5)}: per replication domain, server id and seq."""
    position: dict[int, tuple[int, int]] = {}
    for part in (text or "").replace(" ", "").split(","):
        if not part:
            continue
        match = _GTID.match(part)
        if not match:
            raise BackupError("%s %r is not a MariaDB GTID list (domain-server-sequence, e.g. "
                              "0-1-1234, comma separated)" % (what, text))
        domain, server, seq = (int(g) for g in match.groups())
        if domain in position:
            raise BackupError("%s %r names domain %d twice" % (what, text, domain))
        position[domain] = (server, seq)
    return position


def parse_gtid_state(text: str, what: str = "Gtid list") -> dict[int, tuple[int, int]]:
    """A binary log's Gtid list event (the binlog state when the file began): one GTID per
    domain *and server id*, so after a switchover a domain appears once per server that wrote in
    it. As a position: per domain, the GTID with the highest sequence number (gtid_strict_mode
    keeps a domain's sequence numbers increasing across servers)."""
    position: dict[int, tuple[int, int]] = {}
    for part in (text or "").replace(" ", "").split(","):
        if part:
            position = _merge(position, parse_gtid_list(part, "%s %r" % (what, text)))
    return position


def format_gtid_list(position: dict[int, tuple[int, int]]) -> str:
    return ",".join("%d-%d-%d" % (d, s, n) for d, (s, n) in sorted(position.items()))


def gtid_reached(position: dict, target: dict) -> bool:
    """True when ``position`` includes every transaction of ``target`` (per domain seq >=)."""
    return all(position.get(domain, (0, 0))[1] >= seq for domain, (_, seq) in target.items())


def gtid_advance(position: dict, gtid: str) -> dict:
    """The position after applying one GTID 'd-s-n'."""
    domain, server, seq = (int(g) for g in gtid.split("-"))
    moved = dict(position)
    moved[domain] = (server, seq)
    return moved


# --- mariadb-backup output --------------------------------------------------------------------

def parse_binlog_info(text: str, path: str = "xtrabackup_binlog_info") -> dict:
    """The binlog coordinates mariadb-backup wrote: 'file<TAB>position<TAB>gtid'.

    One line per binary log file when mariadb-backup copied several; the last holds the position.
    """
    lines = [line for line in (text or "").splitlines() if line.strip()]
    fields = lines[-1].strip().split("\t") if lines else []
    if len(fields) < 2 or not fields[1].isdigit():
        raise BackupError("%s does not hold binary log coordinates (got %r): was the source "
                          "server running with log_bin?" % (path, (text or "").strip()))
    gtid = fields[2].strip() if len(fields) > 2 else ""
    parse_gtid_list(gtid, "GTID position in %s" % path)
    return {"binlog_file": fields[0], "binlog_position": int(fields[1]), "gtid": gtid}


_SLAVE_INFO_GTID = re.compile(r"gtid_slave_pos\s*=\s*'([^']*)'", re.IGNORECASE)
# 11.x names the files mariadb_backup_*, 10.11 xtrabackup_*.
BINLOG_INFO_FILES = ("mariadb_backup_binlog_info", "xtrabackup_binlog_info")
SLAVE_INFO_FILES = ("mariadb_backup_slave_info", "xtrabackup_slave_info")


def backup_coordinates(files: dict, where: str = "the backup") -> dict:
    """The coordinates of a backup from its info files ({file name: text}).

    ``gtid`` is the position a server restored from the backup continues from in the primary's
    stream. A backup of the primary: the GTID of its binlog info (gtid_current_pos, read while
    commits were blocked). A backup of a replica (--slave-info wrote a gtid_slave_pos, read at the
    same moment): that gtid_slave_pos, the primary's transactions the copied data holds; the binlog
    info is then the replica's own binary log (``binlog_gtid``), which also counts transactions
    the replica wrote itself.
    """
    binlog = next((name for name in BINLOG_INFO_FILES if files.get(name) is not None), None)
    if binlog is None:
        raise BackupError("%s holds neither %s: the stream is not a complete mariadb-backup"
                          % (where, " nor ".join(BINLOG_INFO_FILES)))
    coordinates = parse_binlog_info(files[binlog], "%s/%s" % (where, binlog))
    coordinates["binlog_gtid"] = coordinates["gtid"]
    coordinates["gtid_from"] = binlog
    for name in SLAVE_INFO_FILES:
        match = _SLAVE_INFO_GTID.search(files.get(name) or "")
        if match:
            parse_gtid_list(match.group(1), "gtid_slave_pos in %s/%s" % (where, name))
            coordinates["gtid"] = match.group(1)
            coordinates["gtid_from"] = name
            break
    return coordinates


def read_backup_coordinates(backup_dir: str) -> dict:
    """Coordinates of an extracted backup (see backup_coordinates)."""
    files = {}
    for name in BINLOG_INFO_FILES + SLAVE_INFO_FILES:
        path = os.path.join(backup_dir, name)
        if os.path.exists(path):
            with open(path, encoding="utf-8") as handle:
                files[name] = handle.read()
    return backup_coordinates(files, backup_dir)


# --- Time -------------------------------------------------------------------------------------

def utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC).replace(microsecond=0)


def format_time(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str, what: str = "time") -> datetime.datetime:
    """'2026-11-29 07:50:00' or ISO with T and Z; always UTC."""
    cleaned = (text or "").strip().replace("UTC", "").strip()
    if cleaned.endswith("Z"):
        cleaned = cleaned[:-1]
    for fmt in _TIME_FORMATS:
        try:
            parsed = datetime.datetime.strptime(cleaned, fmt)
        except ValueError:
            continue
        return parsed.replace(tzinfo=datetime.UTC)
    raise BackupError("%s %r is not a UTC time like '2026-11-29 07:50:00'" % (what, text))


def parse_until(text: str | None) -> tuple[str, object] | None:
    """``until`` of a restore: None (everything archived), a GTID list or a UTC time."""
    if text is None or str(text).strip() in ("", "latest"):
        return None
    text = str(text).strip()
    # A date alone is midnight UTC, never the GTID of replication domain 2026.
    if re.match(r"^\d{4}-\d{2}-\d{2}([ T]|$)", text):
        return ("time", parse_time(text, "until"))
    if re.match(r"^\d+-\d+-\d+", text):
        return ("gtid", parse_gtid_list(text, "until"))
    raise BackupError("until=%r is neither a GTID position (e.g. 0-1-1234) nor a UTC time "
                      "(e.g. '2026-11-29 07:50:00')" % text)


# --- Manifests --------------------------------------------------------------------------------

def backup_id(source: str, moment: datetime.datetime) -> str:
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", source)
    return "%s-%s" % (moment.astimezone(datetime.UTC).strftime("%Y%m%dT%H%M%SZ"), safe)


def backups_dir(store: str) -> str:
    return os.path.join(store, "backups")


def sha256_file(path: str, chunk: int = 4 * 1024 * 1024) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(directory: str, manifest: dict) -> str:
    """Atomically (rename) so a crash never leaves half a manifest."""
    path = os.path.join(directory, MANIFEST)
    temporary = path + ".tmp"
    with open(temporary, "w", encoding="utf-8") as handle:
        json.dump(manifest, handle, indent=2, sort_keys=True)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    return path


def new_manifest(source: str, moment: datetime.datetime, **details) -> dict:
    """The manifest written when a backup starts (status running)."""
    return dict(format=MANIFEST_FORMAT, id=backup_id(source, moment), status="running",
                source=source, start=format_time(moment), stream=STREAM, **details)


def complete_manifest(directory: str, extracted_dir: str, end: datetime.datetime,
                      prepared: bool, error: str | None = None) -> dict:
    """Record a finished backup: coordinates, size and sha256 of the stream; good or failed.

    A backup is good only when the stream was stored whole and ``mariadb-backup --prepare``
    succeeded on it.
    """
    manifest = read_manifest(directory)
    stream = os.path.join(directory, manifest.get("stream", STREAM))
    manifest["end"] = format_time(end)
    if os.path.exists(stream):
        manifest["size"] = os.path.getsize(stream)
        manifest["sha256"] = sha256_file(stream)
    if prepared and not error:
        try:
            manifest.update(read_backup_coordinates(extracted_dir))
        except BackupError as problem:
            error = str(problem)
    if error or not prepared or not manifest.get("size"):
        manifest["status"] = "failed"
        manifest["error"] = error or "mariadb-backup --prepare did not succeed"
    else:
        manifest["status"] = "good"
        manifest["prepared"] = True
    manifest.pop("path", None)
    write_manifest(directory, manifest)
    return manifest


def validate_manifest(manifest: object, path: str) -> dict:
    if not isinstance(manifest, dict):
        raise BackupError("%s is not a JSON object" % path)
    missing = [k for k in ("format", "id", "status", "source", "start") if k not in manifest]
    if missing:
        raise BackupError("%s lacks %s" % (path, ", ".join(missing)))
    if manifest["status"] not in STATUSES:
        raise BackupError("%s: status %r is not one of %s" % (path, manifest["status"], STATUSES))
    if manifest["status"] == "good":
        for key in ("end", "sha256", "size"):
            if not manifest.get(key):
                raise BackupError("%s: a good backup must record %s" % (path, key))
        if not isinstance(manifest.get("gtid"), str):
            raise BackupError("%s: a good backup must record its GTID position" % path)
        parse_gtid_list(manifest["gtid"], "GTID position in %s" % path)
        parse_time(manifest["end"], "end time in %s" % path)
    parse_time(manifest["start"], "start time in %s" % path)
    return manifest


def read_manifest(directory: str) -> dict:
    path = os.path.join(directory, MANIFEST)
    try:
        with open(path, encoding="utf-8") as handle:
            manifest = json.load(handle)
    except FileNotFoundError:
        raise BackupError("%s is missing: not a backup of this store" % path) from None
    except ValueError as error:
        raise BackupError("%s is not valid JSON: %s" % (path, error)) from None
    return validate_manifest(manifest, path)


def list_backups(store: str) -> tuple[list[dict], list[str]]:
    """Every backup of the store, oldest first, and the problems found (unreadable manifests)."""
    root = backups_dir(store)
    found, problems = [], []
    if not os.path.isdir(root):
        return found, problems
    for name in sorted(os.listdir(root)):
        directory = os.path.join(root, name)
        if not os.path.isdir(directory):
            continue
        try:
            manifest = read_manifest(directory)
        except BackupError as error:
            problems.append(str(error))
            continue
        manifest = dict(manifest, path=directory)
        found.append(manifest)
    found.sort(key=lambda m: (m.get("end") or m["start"], m["id"]))
    return found, problems


def good_backups(backups: list[dict]) -> list[dict]:
    return [b for b in backups if b["status"] == "good"]


def verify_stream(manifest: dict) -> None:
    """The stored stream is the one the manifest describes (size and sha256)."""
    stream = os.path.join(manifest["path"], manifest.get("stream", STREAM))
    if not os.path.exists(stream):
        raise BackupError("backup %s: %s is missing" % (manifest["id"], stream))
    size = os.path.getsize(stream)
    if size != manifest["size"]:
        raise BackupError("backup %s is corrupted: %s has %d bytes, the manifest recorded %d"
                          % (manifest["id"], stream, size, manifest["size"]))
    digest = sha256_file(stream)
    if digest != manifest["sha256"]:
        raise BackupError("backup %s is corrupted: sha256 of %s is %s, the manifest recorded %s"
                          % (manifest["id"], stream, digest, manifest["sha256"]))


# --- Retention --------------------------------------------------------------------------------

def expired_backups(backups: list[dict], keep_count: int, keep_days: float,
                    now: datetime.datetime, stale_hours: float = 12) -> list[dict]:
    """Backups retention removes.

    A good backup is kept while it is one of the newest ``keep_count`` good backups or younger
    than ``keep_days`` (0: count only). The newest good backup is never removed. Failed backups and
    the leftovers of interrupted runs ("running" for more than ``stale_hours``) are removed: they
    were never usable.
    """
    if keep_count < 1:
        raise BackupError("the retention count must keep at least one backup (got %d)"
                          % keep_count)
    good = sorted(good_backups(backups), key=lambda m: m["end"], reverse=True)
    keep = {m["id"] for m in good[:keep_count]}
    if keep_days and keep_days > 0:
        horizon = now - datetime.timedelta(days=keep_days)
        keep |= {m["id"] for m in good if parse_time(m["end"]) >= horizon}
    expired = [m for m in good if m["id"] not in keep]
    stale = now - datetime.timedelta(hours=stale_hours)
    expired += [m for m in backups if m["status"] == "failed"
                or (m["status"] == "running" and parse_time(m["start"]) < stale)]
    return sorted(expired, key=lambda m: m["id"])


def remove_backup(manifest: dict, store: str) -> None:
    path = os.path.realpath(manifest["path"])
    root = os.path.realpath(backups_dir(store))
    # Never follow a manifest out of the store.
    if os.path.dirname(path) != root:
        raise BackupError("refusing to remove %s: it is not a backup directory of %s"
                          % (path, root))
    shutil.rmtree(path)


# --- Archived binary logs ---------------------------------------------------------------------

def read_binlog(binlog_binary: str, path: str, may_be_truncated: bool = False) -> dict | None:
    """Summary of one archived binary log (summarize_binlog), read with ``mariadb-binlog``.

    Only the lines starting with '#' (event headers, the wrapped Gtid list) are kept while the
    output streams by: the decoded row events of a bulk load run to hundreds of MB per file.
    ``may_be_truncated``: the newest file, still being written by the archiver, whose cut tail
    makes mariadb-binlog exit non-zero after printing every complete event; None when the
    archiver has only just opened it (no complete Gtid list event yet: nothing archived in it)."""
    with tempfile.TemporaryFile() as errors:
        # argv list, no shell: the binary comes from get_bin_path, the path from the store.
        reader = subprocess.Popen([binlog_binary, "--no-defaults", path],  # noqa: S603
                                  stdout=subprocess.PIPE, stderr=errors,
                                  env={**os.environ, "TZ": "UTC"})
        headers = [raw.decode("utf-8", "replace").rstrip("\r\n")
                   for raw in reader.stdout if raw.startswith(b"#")]
        returncode = reader.wait()
        errors.seek(0)
        message = errors.read().decode("utf-8", "replace").strip()
    if returncode != 0 and not may_be_truncated:
        raise BackupError("archived binary log %s is unreadable: %s" % (path, message))
    if may_be_truncated and not any("\tGtid list [" in line for line in headers):
        return None
    return summarize_binlog("\n".join(headers), path)


def summarize_binlog(text: str, path: str) -> dict:
    """First state, GTIDs and times of one binlog file from ``mariadb-binlog`` text output."""
    start_state = None
    first_gtid = last_gtid = None
    first_time = last_time = None
    transactions = 0
    lines = iter(text.splitlines())
    for first_line in lines:
        line = first_line
        listed = "\tGtid list [" in line
        if not listed and "\tGTID " not in line:
            continue  # other events (and their times) say nothing of the GTIDs
        if listed and "]" not in line:
            for more in lines:
                line += " " + more.lstrip("# ").strip()
                if "]" in more:
                    break
        header = _EVENT_HEADER.match(line)
        if not header:
            continue
        if listed:
            if start_state is None:
                start_state = re.sub(r",\s+", ",", _EVENT_GTID_LIST.search(line).group(1))
            continue
        gtid = _EVENT_GTID.search(line)
        if gtid:
            header_time = datetime.datetime.strptime(
                header.group(1) + " " + header.group(2), "%y%m%d %H:%M:%S"
            ).replace(tzinfo=datetime.UTC)
            transactions += 1
            last_gtid = gtid.group(1)
            first_gtid = first_gtid or last_gtid
            first_time = first_time or header_time
            last_time = header_time
    if start_state is None:
        raise BackupError("%s is not a MariaDB binary log (no Gtid list event)" % path)
    return {
        "file": path,
        "start_state": start_state,
        "first_gtid": first_gtid,
        "last_gtid": last_gtid,
        "first_time": format_time(first_time) if first_time else None,
        "last_time": format_time(last_time) if last_time else None,
        "transactions": transactions,
    }


def archive_end_state(summaries: list[dict]) -> dict:
    """GTID position after the last archived transaction."""
    if not summaries:
        return {}
    state = parse_gtid_state(summaries[0]["start_state"])
    for summary in summaries:
        state = _merge(state, parse_gtid_state(summary["start_state"]))
        if summary["last_gtid"]:
            state = gtid_advance(state, summary["last_gtid"])
    return state


def _merge(left: dict, right: dict) -> dict:
    merged = dict(left)
    for domain, (server, seq) in right.items():
        if merged.get(domain, (0, 0))[1] < seq:
            merged[domain] = (server, seq)
    return merged


def plan_restore(backups: list[dict], summaries: list[dict], until: str | None,
                 backup: str | None = None) -> dict:
    """Which good backup to restore and which archived binlogs to replay up to ``until``.

    ``summaries`` describe one source's archived binlog files in order. Raises BackupError when
    the target lies before the oldest usable backup, after the newest archived transaction, or
    when the archive has a gap after the backup's position.
    """
    good = sorted(good_backups(backups), key=lambda m: m["end"])
    if backup:
        good = [m for m in good if m["id"] == backup]
        if not good:
            known = ", ".join(m["id"] for m in good_backups(backups)) or "none"
            raise BackupError("there is no good backup named %r (good backups: %s)"
                              % (backup, known))
    if not good:
        raise BackupError("the store holds no good backup to restore")
    target = parse_until(until)

    if target is None:
        chosen = good[-1]
    elif target[0] == "gtid":
        usable = [m for m in good if gtid_reached(target[1], parse_gtid_list(m["gtid"]))]
        if not usable:
            raise BackupError("until=%s is before the oldest usable backup %s (GTID %s)"
                              % (until, good[0]["id"], good[0]["gtid"]))
        chosen = usable[-1]
    else:
        usable = [m for m in good if parse_time(m["end"]) <= target[1]]
        if not usable:
            raise BackupError("until=%s is before the end of the oldest usable backup %s (%s)"
                              % (until, good[0]["id"], good[0]["end"]))
        chosen = usable[-1]

    start = parse_gtid_list(chosen["gtid"])
    plan = {"backup": chosen, "start_gtid": chosen["gtid"], "files": [], "stop": None,
            "until": until, "target_gtid": chosen["gtid"]}
    end_state = archive_end_state(summaries)

    if target is None and (not summaries or gtid_reached(start, end_state)):
        return plan  # nothing archived after the backup: restore the backup alone
    if target is not None and target[0] == "gtid" and gtid_reached(start, target[1]):
        return plan  # the backup is exactly at the target: nothing to replay
    if not summaries:
        raise BackupError("until=%s needs archived binary logs, but the archive is empty"
                          % until)

    # The first file to read is the last one that starts at or before the backup's position.
    first = None
    for index, summary in enumerate(summaries):
        if gtid_reached(start, parse_gtid_state(summary["start_state"])):
            first = index
    if first is None:
        raise BackupError("the binlog archive starts at %s (%s), after backup %s's position %s: "
                          "transactions in between are missing"
                          % (summaries[0]["start_state"] or "the beginning", summaries[0]["file"],
                             chosen["id"], chosen["gtid"]))
    last_time = max((s["last_time"] for s in summaries if s["last_time"]), default=None)

    if target is not None and target[0] == "gtid":
        if not gtid_reached(end_state, target[1]):
            raise BackupError("until=%s is after the newest archived transaction (%s in %s)"
                              % (until, format_gtid_list(end_state), summaries[-1]["file"]))
        plan["stop"] = ["--stop-position=%s" % format_gtid_list(target[1])]
        plan["target_gtid"] = format_gtid_list(_merge(start, target[1]))
    elif target is not None:
        if last_time is None or parse_time(last_time) < target[1]:
            raise BackupError("until=%s is after the newest archived transaction (%s)"
                              % (until, last_time or "none archived"))
        plan["stop"] = ["--stop-datetime=%s" % target[1].strftime("%Y-%m-%d %H:%M:%S")]
        plan["target_gtid"] = None  # known after the replay
    else:
        plan["target_gtid"] = format_gtid_list(end_state)
    plan["files"] = [s["file"] for s in summaries[first:]]
    plan["last_archived_gtid"] = format_gtid_list(end_state)
    plan["last_archived_time"] = last_time
    return plan


def replay_command(plan: dict, binlog_binary: str = "mariadb-binlog") -> list[str]:
    """The mariadb-binlog argv whose output, piped into the client, rolls the restore forward."""
    if not plan["files"]:
        return []
    start = ["--start-position=%s" % plan["start_gtid"]] if plan["start_gtid"] else []
    return [binlog_binary, *start, *(plan["stop"] or []), *plan["files"]]
