#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Ansible module: decide the live topology of a MariaDB GTID cluster from its members' state."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: mariadb_topology
short_description: Decide the live primary, the replicas and errant GTIDs of a MariaDB cluster
description:
  - Reads nothing itself. The caller gathers every member's state with
    M(community.mysql.mysql_replication) (C(mode=getreplica)) and M(community.mysql.mysql_query)
    (C(read_only), C(log_bin), C(gtid_strict_mode), C(log_slave_updates), C(server_id),
    C(gtid_binlog_pos), C(gtid_binlog_state), C(gtid_slave_pos), C(gtid_current_pos)) and passes
    the registered results here. The module decides in one place which member is the primary,
    whether the members disagree, which replica is the most advanced and which GTIDs a member holds
    that the primary never saw.
  - The primary is the writable member that does not replicate. When no member is writable, it is
    the one member every replica points at (a primary that restarted read-only, or one that is
    down). When no member replicates and none is writable the cluster is new and the inventory's
    primary is used (C(bootstrap=true)).
  - Two writable members, replicas pointing at different sources, or a replica pointing at no
    member are disagreements; the module then fails (unless O(fail_on_disagreement=false)) with a
    message naming each host and what it reports. It never guesses.
  - Changes nothing; supports check mode.
version_added: "1.1.0"
author:
  - POS cluster maintainers
options:
  members:
    description:
      - One entry per cluster member, keyed by inventory hostname.
      - C(address) is the address the other members replicate from; C(variables) the registered
        result of the variables query (or its row); C(replica) the registered result of
        C(mysql_replication mode=getreplica). A member that did not answer passes the failed or
        unreachable results as they are.
    type: dict
    required: true
  inventory_primary:
    description: The inventory's primary, used only for a new cluster and named when overruled.
    type: str
  primary:
    description:
      - Relate every member to this host instead of discovering the primary (used right after a
        promotion, when replicas still point at the old primary by design).
    type: str
  lag_limit:
    description: Seconds_Behind_Master above which a replica is not healthy.
    type: int
  fail_on_disagreement:
    description: Fail when the members disagree (otherwise return C(primary=null)).
    type: bool
    default: true
  operation:
    description:
      - Check that this operation may start (every member answers and replicates healthily for a
        switchover; the primary is gone and the target is the most advanced replica for a
        failover). The module fails naming each host and cause, and the caller changes nothing.
    type: str
    choices: [switchover, failover]
  target:
    description: The requested new primary of O(operation); default the most advanced replica.
    type: str
  force:
    description: Allow a failover while the primary still answers.
    type: bool
    default: false
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
"""

EXAMPLES = r"""
- name: Decide the live topology
  mariadb_topology:
    members:
      db1:
        address: 10.0.0.11
        variables: "{{ hostvars['db1'].variables_result }}"
        replica: "{{ hostvars['db1'].replica_result }}"
    inventory_primary: "{{ groups['primary'][0] }}"
    lag_limit: 30
  delegate_to: localhost
  run_once: true
  register: topology
"""

RETURN = r"""
primary:
  description: The live primary (null when the members disagree).
  returned: always
  type: str
  sample: db2
primary_answers:
  description: Whether the primary answered.
  returned: always
  type: bool
bootstrap:
  description: No member replicates or is writable yet; the inventory's primary was used.
  returned: always
  type: bool
disagreements:
  description: What the members report that cannot all be true, one line per conflict.
  returned: always
  type: list
  elements: str
notes:
  description: Things worth one line, e.g. the inventory naming another primary than the servers.
  returned: always
  type: list
  elements: str
most_advanced:
  description: The replica of the primary that has applied the most transactions.
  returned: always
  type: str
members:
  description:
    - Per member C(role) (primary, replica, replica_elsewhere, detached, down), C(answered),
      C(error), C(read_only), C(healthy), C(replica) (source, io_running, sql_running, lag ...),
      the GTID positions, C(has_history) and C(errant) (GTID ranges the primary does not hold).
  returned: always
  type: dict
target:
  description: The new primary of O(operation) (the requested one, or the most advanced replica).
  returned: when O(operation) is given
  type: str
table:
  description: A short per-member table for the operator.
  returned: always
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.mariadb_pos.topology import (
    TopologyError,
    decide,
    operation_problems,
)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            members=dict(type="dict", required=True),
            inventory_primary=dict(type="str"),
            primary=dict(type="str"),
            lag_limit=dict(type="int"),
            fail_on_disagreement=dict(type="bool", default=True),
            operation=dict(type="str", choices=["switchover", "failover"]),
            target=dict(type="str"),
            force=dict(type="bool", default=False),
        ),
        supports_check_mode=True,
    )
    params = module.params
    try:
        topology = decide(params["members"], inventory_primary=params["inventory_primary"],
                          primary=params["primary"], lag_limit=params["lag_limit"])
    except TopologyError as error:
        module.fail_json(msg="live topology: %s" % error)
    if topology["disagreements"] and params["fail_on_disagreement"]:
        module.fail_json(
            msg="The cluster members disagree; nothing was changed. Fix the members by hand, "
                "then run again. %s" % " | ".join(topology["disagreements"]),
            **topology)
    if params["operation"] and topology["primary"]:
        problems = operation_problems(topology, params["operation"], params["target"],
                                      force=params["force"], lag_limit=params["lag_limit"])
        topology["target"] = params["target"] or topology["most_advanced"]
        if problems:
            module.fail_json(msg="%s refused, nothing was changed: %s" % (
                params["operation"].capitalize(), " ".join(problems)), **topology)
    module.exit_json(changed=False, **topology)


if __name__ == "__main__":
    main()
