# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters that let the roles apply the modules' own rules (module_utils/mariadb_pos).

``names | mariadb_pos_identifier_problems(what, max_length)`` returns one sentence per name that
may not be written into SQL (empty list: all good), using the same check as the modules.

``files | mariadb_pos_backup_coordinates(where)`` reads a received backup's info files
({file name: text}) into its binlog coordinates and the GTID position it continues from.

``topology | mariadb_pos_seed_source(target)`` names the member a new or rebuilt replica copies
its data from (a healthy replica, else the primary), from the mariadb_topology module's result.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Controller-side plugins do not see ansible.cfg's module_utils path: import it from the repo.
_MODULE_UTILS = str(Path(__file__).resolve().parents[2] / "module_utils")
if _MODULE_UTILS not in sys.path:
    sys.path.insert(0, _MODULE_UTILS)

from ansible.errors import AnsibleFilterError  # noqa: E402
from mariadb_pos.backup import BackupError  # noqa: E402
from mariadb_pos.backup import backup_coordinates as _backup_coordinates  # noqa: E402
from mariadb_pos.identifiers import (  # noqa: E402
    MAX_IDENTIFIER_LENGTH,
    identifier_problem,
)
from mariadb_pos.topology import TopologyError  # noqa: E402
from mariadb_pos.topology import seed_source as _seed_source  # noqa: E402


def identifier_problems(names, what="name", max_length=MAX_IDENTIFIER_LENGTH):
    """One message per invalid name; ``names`` may be one string or a list."""
    if isinstance(names, str) or not hasattr(names, "__iter__"):
        names = [names]
    problems = (identifier_problem(name, what, int(max_length)) for name in names)
    return [problem for problem in problems if problem]


def backup_coordinates(files, where="the backup"):
    try:
        return _backup_coordinates(dict(files), where)
    except BackupError as error:
        raise AnsibleFilterError(str(error)) from None


def seed_source(topology, target):
    try:
        return _seed_source(topology, target)
    except TopologyError as error:
        raise AnsibleFilterError(str(error)) from None


class FilterModule:
    def filters(self):
        return {"mariadb_pos_identifier_problems": identifier_problems,
                "mariadb_pos_backup_coordinates": backup_coordinates,
                "mariadb_pos_seed_source": seed_source}
