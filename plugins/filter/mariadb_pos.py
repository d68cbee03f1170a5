# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters that let the roles apply the modules' own rules (module_utils/mariadb_pos).

``names | mariadb_pos_identifier_problems(what, max_length)`` returns one sentence per name that
may not be written into SQL (empty list: all good), using the same check as the modules.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Controller-side plugins do not see ansible.cfg's module_utils path: import it from the repo.
_MODULE_UTILS = str(Path(__file__).resolve().parents[2] / "module_utils")
if _MODULE_UTILS not in sys.path:
    sys.path.insert(0, _MODULE_UTILS)

from mariadb_pos.identifiers import (  # noqa: E402
    MAX_IDENTIFIER_LENGTH,
    identifier_problem,
)


def identifier_problems(names, what="name", max_length=MAX_IDENTIFIER_LENGTH):
    """One message per invalid name; ``names`` may be one string or a list."""
    if isinstance(names, str) or not hasattr(names, "__iter__"):
        names = [names]
    problems = (identifier_problem(name, what, int(max_length)) for name in names)
    return [problem for problem in problems if problem]


class FilterModule:
    def filters(self):
        return {"mariadb_pos_identifier_problems": identifier_problems}
