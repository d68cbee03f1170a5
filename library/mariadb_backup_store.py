#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Ansible module: the catalog of a MariaDB backup store (manifests, retention, restore plans)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: mariadb_backup_store
short_description: Keep the catalog of a mariadb-backup store and plan point-in-time restores
description:
  - A backup store is a directory on the backup host holding one directory per backup under
    C(backups/) (the compressed mbstream C(backup.mbstream.zst) and C(manifest.json)) and the
    archived binary logs of the primary under C(binlogs/<host>/).
  - C(action=begin) checks that the store is writable and has room, then writes the manifest of
    a new backup with status C(running). When the newest good backup is already at the source's
    current GTID position (nothing was written since) no backup is started and the task reports
    C(changed=false), so scheduling the backup more often than writes happen costs nothing.
  - C(action=finish) records the end time, size, sha256 of the stream and the GTID position read
    from the prepared copy, and marks the backup C(good) only when it was prepared; otherwise
    C(failed) with the cause. A failed backup is never offered for a restore.
  - C(action=prune) removes backups past the retention (count and age), failed backups and
    leftovers of interrupted runs. The newest good backup is never removed.
  - C(action=plan) chooses the backup and the archived binary logs for a restore up to O(until)
    (a GTID position or a UTC time), checks the stream's sha256 against its manifest and returns
    the C(mariadb-binlog) command of the roll-forward.
  - C(action=list) returns the backups, the archive and the problems found.
version_added: "1.0.0"
author:
  - POS cluster maintainers
requirements:
  - mariadb-binlog (Debian package mariadb-client) for O(action=plan) and O(action=list)
options:
  path:
    description: The store directory on the backup host.
    type: path
    required: true
  action:
    description: What to do.
    type: str
    choices: [begin, finish, prune, plan, list]
    default: list
  source:
    description: Inventory name of the server backed up (O(action=begin)).
    type: str
  source_gtid:
    description:
      - The source's current GTID position (O(action=begin)); a good backup at exactly this
        position makes the task skip.
    type: str
  details:
    description: Facts about the source stored in the manifest (O(action=begin)).
    type: dict
    default: {}
  required_bytes:
    description: Free space the store needs for the backup and its verification copy.
    type: int
    default: 0
  stale_hours:
    description: A C(running) backup older than this is the leftover of a run that died.
    type: float
    default: 12
  backup:
    description: The backup id (O(action=finish)); for O(action=plan) a backup to restore.
    type: str
  prepared_dir:
    description: The verification copy prepared by C(mariadb-backup --prepare) (O(action=finish)).
    type: path
  prepared:
    description: Whether C(mariadb-backup --prepare) succeeded (O(action=finish)).
    type: bool
    default: false
  error:
    description: Why the backup failed, when it did (O(action=finish)).
    type: str
  keep_count:
    description: Good backups kept whatever their age (O(action=prune)).
    type: int
    default: 7
  keep_days:
    description: Good backups younger than this many days are also kept; 0 keeps by count only.
    type: float
    default: 0
  until:
    description:
      - Restore up to this GTID position (C(0-1-1234)) or UTC time (C(2026-11-29 07:50:00)),
        inclusive. Empty or C(latest) replays everything archived (O(action=plan)).
      - For O(action=list), a GTID position; C(reached) then names the archives holding it.
    type: str
  verify:
    description: Check the chosen backup's sha256 before planning (O(action=plan)).
    type: bool
    default: true
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
notes:
  - Run it on the backup host; every path is a path there.
"""

EXAMPLES = r"""
- name: Start a backup record
  mariadb_backup_store:
    path: /var/backups/mariadb
    action: begin
    source: db2
    source_gtid: 0-1-1234
  register: started

- name: Keep seven backups and everything of the last three days
  mariadb_backup_store:
    path: /var/backups/mariadb
    action: prune
    keep_count: 7
    keep_days: 3

- name: Plan a restore to just before the mistake
  mariadb_backup_store:
    path: /var/backups/mariadb
    action: plan
    until: "2026-11-29 07:50:00"
  register: plan
"""

RETURN = r"""
backup:
  description: The manifest of the backup begun, finished or chosen for the restore.
  returned: when one applies
  type: dict
skipped_backup:
  description: True when O(action=begin) found a good backup at the source's position already.
  returned: action=begin
  type: bool
backups:
  description: Manifests of the store, oldest first.
  returned: action=list, action=prune
  type: list
removed:
  description: Ids of the backups removed by retention.
  returned: action=prune
  type: list
problems:
  description: Unreadable manifests found in the store (named by file).
  returned: always
  type: list
archives:
  description: Per archived host, a summary of each binlog file (GTIDs, times, transactions).
  returned: action=list
  type: dict
archive_ends:
  description: Per archived host, the GTID position after its newest archived transaction.
  returned: action=list
  type: dict
reached:
  description: The archived hosts whose archive holds O(until).
  returned: action=list with until
  type: list
plan:
  description: C(start_gtid), C(target_gtid), C(files), C(replay_command) of the roll-forward.
  returned: action=plan
  type: dict
"""

import os
import shutil

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.mariadb_pos import backup as store


def _summaries(module, archive_dir):
    binlog = module.get_bin_path("mariadb-binlog", required=True)
    names = sorted(n for n in os.listdir(archive_dir)
                   if n.rsplit(".", 1)[-1].isdigit() and os.path.isfile(
                       os.path.join(archive_dir, n)))
    found = []
    for name in names:
        summary = store.read_binlog(binlog, os.path.join(archive_dir, name),
                                    may_be_truncated=name == names[-1])
        if summary is not None:  # None: the archiver has only just opened the newest file
            found.append(summary)
    return found


def _archives(module, path):
    """Archive directories (one per source host), the most recently written first."""
    root = os.path.join(path, "binlogs")
    if not os.path.isdir(root):
        return []
    dirs = [os.path.join(root, d) for d in os.listdir(root)
            if os.path.isdir(os.path.join(root, d))]
    return sorted(dirs, key=os.path.getmtime, reverse=True)


def _plan(module, params, backups):
    archives = _archives(module, params["path"])
    errors = []
    for archive in archives or [None]:
        summaries = _summaries(module, archive) if archive else []
        try:
            plan = store.plan_restore(backups, summaries, params["until"], params["backup"])
        except store.BackupError as error:
            errors.append(str(error))
            continue
        plan["archive"] = archive
        break
    else:
        raise store.BackupError(errors[0])
    if params["verify"]:
        store.verify_stream(plan["backup"])
    plan["replay_command"] = store.replay_command(plan, module.get_bin_path("mariadb-binlog")
                                                  or "mariadb-binlog")
    return plan


def _begin(module, params, backups):
    path = params["path"]
    if not params["source"]:
        module.fail_json(msg="action=begin needs source")
    good = store.good_backups(backups)
    if params["source_gtid"] is not None and good and good[-1]["gtid"] == params["source_gtid"]:
        return dict(changed=False, skipped_backup=True, backup=good[-1])
    now = store.utc_now()
    running = [b for b in backups if b["status"] == "running"
               and (now - store.parse_time(b["start"])).total_seconds() < params["stale_hours"]
               * 3600]
    if running:
        raise store.BackupError("backup %s (from %s, started %s) is still running in %s; wait for "
                                "it or, if its run died, remove that directory"
                                % (running[0]["id"], running[0]["source"], running[0]["start"],
                                   running[0]["path"]))
    root = store.backups_dir(path)
    manifest = store.new_manifest(params["source"], now, **(params["details"] or {}))
    directory = os.path.join(root, manifest["id"])
    if module.check_mode:
        return dict(changed=True, skipped_backup=False, backup=dict(manifest, path=directory))
    try:
        os.makedirs(root, mode=0o700, exist_ok=True)
        probe = os.path.join(root, ".write-test")
        with open(probe, "w") as handle:
            handle.write("ok")
        os.remove(probe)
    except OSError as error:
        raise store.BackupError("the backup store %s is not writable: %s" % (root, error)) from None
    free = shutil.disk_usage(root).free
    if free < params["required_bytes"]:
        raise store.BackupError("the backup store %s has %d MiB free; this backup needs about "
                                "%d MiB (stream and verification copy)"
                                % (root, free // 2**20, params["required_bytes"] // 2**20))
    os.makedirs(directory, mode=0o700)
    store.write_manifest(directory, manifest)
    return dict(changed=True, skipped_backup=False, backup=dict(manifest, path=directory))


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type="path", required=True),
            action=dict(type="str", default="list",
                        choices=["begin", "finish", "prune", "plan", "list"]),
            source=dict(type="str"),
            source_gtid=dict(type="str"),
            details=dict(type="dict", default={}),
            required_bytes=dict(type="int", default=0),
            stale_hours=dict(type="float", default=12),
            backup=dict(type="str"),
            prepared_dir=dict(type="path"),
            prepared=dict(type="bool", default=False),
            error=dict(type="str"),
            keep_count=dict(type="int", default=7),
            keep_days=dict(type="float", default=0),
            until=dict(type="str"),
            verify=dict(type="bool", default=True),
        ),
        supports_check_mode=True,
    )
    params = module.params
    action = params["action"]
    try:
        backups, problems = store.list_backups(params["path"])
        result = dict(changed=False, problems=problems)
        if action == "begin":
            result.update(_begin(module, params, backups))
        elif action == "finish":
            matching = [b for b in backups if b["id"] == params["backup"]]
            if not matching:
                raise store.BackupError("backup %r is not in %s" % (params["backup"],
                                                                     params["path"]))
            if module.check_mode:
                result.update(changed=True, backup=matching[0])
            else:
                manifest = store.complete_manifest(matching[0]["path"], params["prepared_dir"],
                                                   store.utc_now(), params["prepared"],
                                                   params["error"])
                result.update(changed=True, backup=dict(manifest, path=matching[0]["path"]))
        elif action == "prune":
            expired = store.expired_backups(backups, params["keep_count"], params["keep_days"],
                                            store.utc_now(), params["stale_hours"])
            if not module.check_mode:
                for manifest in expired:
                    store.remove_backup(manifest, params["path"])
            removed = [m["id"] for m in expired]
            result.update(changed=bool(removed), removed=removed,
                          backups=[b for b in backups if b["id"] not in removed])
        elif action == "plan":
            result["plan"] = _plan(module, params, backups)
            result["backup"] = result["plan"]["backup"]
        else:
            result["backups"] = backups
            result["archives"] = {os.path.basename(a): _summaries(module, a)
                                  for a in _archives(module, params["path"])}
            ends = {name: store.archive_end_state(files)
                    for name, files in result["archives"].items()}
            result["archive_ends"] = {name: store.format_gtid_list(end)
                                      for name, end in ends.items()}
            if params["until"]:
                wanted = store.parse_gtid_list(params["until"], "until")
                result["reached"] = sorted(name for name, end in ends.items()
                                           if store.gtid_reached(end, wanted))
    except store.BackupError as error:
        module.fail_json(msg=str(error))
    except OSError as error:
        module.fail_json(msg="backup store %s: %s" % (params["path"], error))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
