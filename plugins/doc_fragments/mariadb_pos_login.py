# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The login options of the project's modules, documented once.

A module says ``extends_documentation_fragment: [mariadb_pos_login]`` and builds its argument spec
with module_utils/mariadb_pos/db.py's ``connection_argument_spec()``; ansible.cfg's
doc_fragment_plugins points here.
"""

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  login_user:
    description: Account to connect as.
    type: str
    default: root
  login_password:
    description:
      - Password of O(login_user). Not needed for C(root) over the unix socket (C(unix_socket)
        authentication, Debian's default).
    type: str
    default: ""
  login_host:
    description:
      - Server to connect to. With C(localhost) (or an empty value) the module connects through
        O(login_unix_socket); any other host is reached over TCP on O(login_port).
    type: str
    default: localhost
  login_port:
    description: TCP port of the server, used when O(login_host) is not C(localhost).
    type: int
    default: 3306
  login_unix_socket:
    description: Unix socket of the server, used when O(login_host) is C(localhost).
    type: str
    default: /run/mysqld/mysqld.sock
  connect_timeout:
    description: Seconds to wait for the connection.
    type: int
    default: 30
requirements:
  - PyMySQL on the managed host (Debian package python3-pymysql)
"""
