#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Ansible module: apply the POS schema files (numbered migrations, definitions, MV registry)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: mariadb_schema
short_description: Apply the POS schema files to a MariaDB database, idempotently
description:
  - Applies a directory laid out as the project's C(files/sql) to O(database) on the managed
    host, recording what it applied in the C(schema_version) table (file name and sha256).
  - Numbered migrations C(NNN_lower_case.sql) hold the tables and data changes. Each is applied
    once, in numeric order. A recorded migration whose sha256 changed is refused, and so is a new
    one that reuses a recorded number or is numbered below the last applied one; nothing is
    applied then.
  - C(definitions/views.sql), C(routines.sql), C(triggers.sql) and C(events.sql) hold the
    current definition of every view, routine, trigger and event (CREATE OR REPLACE). A file is
    applied again, in that order, whenever its sha256 differs from the recorded one, and all of
    them after any migration.
  - The C(MaterializedView) table is made to hold exactly the entries of O(materialized_views)
    (the registry C(files/sql/materialized_views.yml)); the ChangeLog rows of a removed entry are
    deleted.
  - Files are executed by the C(mariadb) command-line client on the managed host. A file that
    fails stops the run with the client's message, naming the file and the files applied before
    it; the failed file is not recorded, so the next run starts again with it.
  - Supports check mode (reports what would be applied, writes nothing).
version_added: "1.1.0"
author:
  - POS cluster maintainers
extends_documentation_fragment:
  - mariadb_pos_login
options:
  database:
    description: Database to apply the files to; it must exist.
    type: str
    default: pos
  sql_dir:
    description:
      - Directory of the SQL files on the managed host (numbered files and C(definitions/)).
    type: path
    required: true
  materialized_views:
    description:
      - The registry of materialized views, each with C(table), C(view) and C(key_columns) (the
        ChangeLog columns naming the rows to recompute, in order of preference).
    type: list
    elements: dict
    required: true
  force_definitions:
    description: Apply every definition file even when none changed (repairs a dropped object).
    type: bool
    default: false
  client:
    description:
      - Path of the C(mariadb) client. Default is the first C(mariadb) or C(mysql) on the PATH.
    type: path
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
notes:
  - Run it on the primary only; the replicas receive everything through the binary log.
  - Needs the C(mariadb) command-line client on the managed host (Debian package C(mariadb-client),
    installed with the server).
"""

EXAMPLES = r"""
- name: Apply the POS schema copied to /var/lib/mariadb-pos/sql
  mariadb_schema:
    database: pos
    sql_dir: /var/lib/mariadb-pos/sql
    materialized_views: >-
      {{ (lookup('file', 'files/sql/materialized_views.yml') | from_yaml).materialized_views }}
    login_unix_socket: /run/mysqld/mysqld.sock
"""

RETURN = r"""
database:
  description: The database the files were applied to.
  returned: always
  type: str
  sample: pos
migrations:
  description: Numbered migrations applied (in check mode, that would be applied), in order.
  returned: always
  type: list
  elements: str
  sample: [008_changelog_delta_columns.sql]
definitions:
  description: Definition files applied (in check mode, that would be applied), in order.
  returned: always
  type: list
  elements: str
  sample: [definitions/views.sql, definitions/routines.sql]
registry_changed:
  description: Whether the C(MaterializedView) table had to be changed to match the registry.
  returned: always
  type: bool
  sample: false
retired:
  description: >-
    Migrations recorded in C(schema_version) whose file is no longer in O(sql_dir) (files of an
    earlier release whose contents moved to C(definitions/)); their numbers are never reused.
  returned: always
  type: list
  elements: str
  sample: [002_views.sql]
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.mariadb_pos.db import (
    HAS_PYMYSQL,
    PYMYSQL_MISSING,
    ConnectionError_,
    connect_from_params,
    connection_argument_spec,
    connection_options,
    pymysql,
)
from ansible.module_utils.mariadb_pos.schema_files import (
    SchemaFileError,
    apply_schema,
    client_runner,
)


def main():
    argument_spec = connection_argument_spec(
        database=dict(type="str", default="pos"),
        sql_dir=dict(type="path", required=True),
        materialized_views=dict(type="list", elements="dict", required=True),
        force_definitions=dict(type="bool", default=False),
        client=dict(type="path"),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    if not HAS_PYMYSQL:
        module.fail_json(msg=PYMYSQL_MISSING)
    params = module.params
    try:
        conn = connect_from_params(params)
    except ConnectionError_ as error:
        module.fail_json(msg=str(error))
    try:
        result = apply_schema(
            conn, params["database"], params["sql_dir"], params["materialized_views"],
            client_runner(client=params["client"], **connection_options(params)),
            check_mode=module.check_mode, force_definitions=params["force_definitions"])
    except SchemaFileError as error:
        module.fail_json(msg="%s: %s" % (params["database"], error))
    except pymysql.err.MySQLError as error:
        module.fail_json(msg="%s: applying the schema failed: %s" % (params["database"], error))
    finally:
        conn.close()
    module.exit_json(**result)


if __name__ == "__main__":
    main()
