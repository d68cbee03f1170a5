"""The extra inventory of the grown cluster, for the playbooks the tests and drills run.

The scenario's inventory lists the late replicas in their own group (side_effect.yml joins them):
a playbook that runs the replication role on that inventory alone would treat them as removed
members and drop their replication accounts. Every playbook run after the side effect therefore
adds this file: the late replicas as replicas, and any extra groups (the backup host) or host
variables a test needs.
"""

from __future__ import annotations


def grown_cluster_inventory(late_replicas, groups=None, host_vars=""):
    """YAML text: ``late_replicas`` in mariadb/replicas, ``groups`` ({group: [host, ...]}) added
    under all, ``host_vars`` (YAML lines at the indentation of all.hosts' entries) as given."""
    text = "all:\n"
    if host_vars:
        text += "  hosts:\n" + host_vars
    children = "".join(f"    {group}:\n      hosts:\n"
                       + "".join(f"        {host}: {{}}\n" for host in hosts)
                       for group, hosts in (groups or {}).items() if hosts)
    if late_replicas:
        children += ("    mariadb:\n      children:\n        replicas:\n          hosts:\n"
                     + "".join(f"            {name}: {{}}\n" for name in late_replicas))
    if children:
        text += "  children:\n" + children
    return text if text != "all:\n" else "all: {}\n"
