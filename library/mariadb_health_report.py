#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Ansible module: the verdict of a consistency check, or the status report of a cluster."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: mariadb_health_report
short_description: Sum up a MariaDB cluster's consistency check or write its status report
description:
  - Reads nothing from the servers itself. The caller gathers the answers (the decision of
    M(mariadb_topology), each member's heartbeat lag, pt-table-checksum's output and the chunks
    each replica reports different) and passes them here.
  - O(kind=check) returns the verdict of a consistency check (C(consistent), C(differences),
    C(incomplete)), the differences named by table, chunk and member, and how to repair them;
    it writes the verdict as JSON to O(report_dir)/last_check.json for the status report.
  - O(kind=status) returns one row per member (role, read_only, GTID positions, heartbeat lag,
    thread states, last errors, TLS, last check) and writes O(report_dir)/status.md with a
    picture O(report_dir)/topology.svg.
  - Files are written only when their content changes (C(changed)); check mode writes nothing.
version_added: "1.2.0"
author:
  - POS cluster maintainers
options:
  kind:
    description: What to sum up.
    type: str
    required: true
    choices: [check, status]
  topology:
    description: The registered result of M(mariadb_topology).
    type: dict
    required: true
  replicas:
    description:
      - O(kind=check) only. Per replica C(caught_up) (it applied the last checksum), C(diffs)
        (rows of the differing-chunks query) and C(error).
    type: dict
    default: {}
  checksum_output:
    description: O(kind=check) only. pt-table-checksum's standard output.
    type: str
    default: ""
  checksum_errors:
    description:
      - O(kind=check) only. pt-table-checksum's standard error (each line makes the check
        incomplete).
    type: str
    default: ""
  replicate_table:
    description: O(kind=check) only. pt-table-checksum's C(--replicate) table (repair hint).
    type: str
    default: pos_health.checksums
  extras:
    description:
      - O(kind=status) only. Per member C(lag) (heartbeat seconds, null when none) and
        C(tls).
    type: dict
    default: {}
  max_lag:
    description: Heartbeat lag in seconds above which a member is reported lagging.
    type: float
  cluster:
    description: Name of the cluster in the report's title.
    type: str
    default: cluster
  report_dir:
    description:
      - Directory (on the host running the module) of last_check.json, status.md and
        topology.svg.
    type: path
    required: true
  timestamp:
    description: Time of the check or report, as printed (e.g. C(ansible_date_time.iso8601)).
    type: str
    default: ""
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
"""

EXAMPLES = r"""
- name: Sum up the consistency check
  mariadb_health_report:
    kind: check
    topology: "{{ mariadb_replication_topology }}"
    checksum_output: "{{ hostvars[primary].checksum_run.stdout }}"
    replicas:
      db2: {caught_up: true, diffs: []}
    report_dir: reports
  delegate_to: localhost

- name: Write the status report
  mariadb_health_report:
    kind: status
    topology: "{{ mariadb_replication_topology }}"
    extras:
      db1: {lag: 0.4, tls: TLSv1.3}
    max_lag: 5
    report_dir: reports
  delegate_to: localhost
"""

RETURN = r"""
status:
  description: O(kind=check) verdict, C(consistent), C(differences) or C(incomplete).
  returned: kind=check
  type: str
differences:
  description: One line per table, chunk and member whose data differs from the primary's.
  returned: kind=check
  type: list
  elements: str
incomplete:
  description: What could not be compared, and why (a lagging replica, pt-table-checksum errors).
  returned: kind=check
  type: list
  elements: str
repair:
  description: How to repair the differences (empty when there are none).
  returned: kind=check
  type: list
  elements: str
rows:
  description:
    - O(kind=status) one dict per member (member, role, read_only, lag, threads, tls, check,
      healthy, problems).
  returned: kind=status
  type: list
  elements: dict
healthy:
  description: O(kind=status) every member healthy.
  returned: kind=status
  type: bool
table:
  description: The printable table.
  returned: always
  type: list
  elements: str
files:
  description: The files written (or that would be).
  returned: always
  type: list
  elements: str
"""

import json
import os

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.mariadb_pos.health import (
    HealthError,
    status_markdown,
    status_rows,
    status_svg,
    status_table,
    summarize_check,
)


def _write(module, path, content):
    """Write ``content`` to ``path`` when it differs; return whether it did (or would)."""
    try:
        with open(path, encoding="utf-8") as handle:
            if handle.read() == content:
                return False
    except FileNotFoundError:
        pass
    except OSError as error:
        module.fail_json(msg="cannot read %s: %s" % (path, error))
    if module.check_mode:
        return True
    try:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        with open(path + ".tmp", "w", encoding="utf-8") as handle:
            handle.write(content)
        os.replace(path + ".tmp", path)
    except OSError as error:
        module.fail_json(msg="cannot write %s: %s" % (path, error))
    return True


def _last_check(module, report_dir):
    path = os.path.join(report_dir, "last_check.json")
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        module.fail_json(msg="%s is unreadable (%s): remove it or run playbooks/check.yml again"
                         % (path, error))


def main():
    module = AnsibleModule(
        argument_spec=dict(
            kind=dict(type="str", required=True, choices=["check", "status"]),
            topology=dict(type="dict", required=True),
            replicas=dict(type="dict", default={}),
            checksum_output=dict(type="str", default=""),
            checksum_errors=dict(type="str", default=""),
            replicate_table=dict(type="str", default="pos_health.checksums"),
            extras=dict(type="dict", default={}),
            max_lag=dict(type="float"),
            cluster=dict(type="str", default="cluster"),
            report_dir=dict(type="path", required=True),
            timestamp=dict(type="str", default=""),
        ),
        supports_check_mode=True,
    )
    params = module.params
    report_dir = params["report_dir"]
    if params["kind"] == "check":
        try:
            result = summarize_check(params["topology"].get("primary"), params["checksum_output"],
                                     params["replicas"], checked_at=params["timestamp"],
                                     checksum_errors=params["checksum_errors"],
                                     replicate_table=params["replicate_table"])
        except HealthError as error:
            module.fail_json(msg="consistency check: %s" % error)
        path = os.path.join(report_dir, "last_check.json")
        # The verdict without its time: an unchanged verdict is no change.
        previous = _last_check(module, report_dir) or {}
        same = {k: v for k, v in previous.items() if k != "checked_at"} == {
            k: v for k, v in result.items() if k != "checked_at"}
        changed = False if same else _write(module, path, json.dumps(result, indent=2) + "\n")
        module.exit_json(changed=changed, files=[path], **result)

    last_check = _last_check(module, report_dir)
    rows = status_rows(params["topology"], params["extras"], last_check, params["max_lag"])
    files = {os.path.join(report_dir, "topology.svg"): status_svg(rows, params["max_lag"]),
             os.path.join(report_dir, "status.md"): status_markdown(
                 params["cluster"], rows, last_check, params["timestamp"])}
    changed = False
    for path, content in files.items():
        changed = _write(module, path, content) or changed
    module.exit_json(changed=changed, rows=rows, table=status_table(rows),
                     healthy=all(r["healthy"] for r in rows), files=sorted(files))


if __name__ == "__main__":
    main()
