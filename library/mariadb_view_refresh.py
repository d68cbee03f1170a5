#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Ansible module: refresh a materialized view (table) of the POS database."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: mariadb_view_refresh
short_description: Refresh a materialized view (a table holding a view's rows) in MariaDB
description:
  - MariaDB has no materialized views; the POS schema emulates them as tables such as
    C(ProductBuyersMV), registered in the C(MaterializedView) table with their source view.
  - C(mode=full) builds C(<name>__shadow) from the view and swaps it in with one atomic
    C(RENAME TABLE), so a reader never sees a missing, empty or half-built table. When the
    contents did not change (same rows, C(CHECKSUM TABLE)) nothing is swapped and the task
    reports C(changed=false).
  - C(mode=incremental) reads, in one consistent snapshot, the C(ChangeLog) rows the schema's
    triggers wrote since the last refresh. For the tables of the POS schema (C(ProductBuyersMV),
    C(CustomerPurchasesMV), C(DailySalesMV)) the order and order-line triggers log the signed
    contribution of each change (C(files/sql/007)); the module adds the summed contributions to
    the rows of their keys (a row whose count reaches 0 is deleted). Keys a contribution cannot
    update exactly (names, a removed first/last date, a key new to the table, C(ChangeLog) rows
    without a contribution) and any O(keys) given (an ETL's delta) are recomputed from the view.
    Only the rows that differ are written. A table that was never refreshed gets a full refresh.
  - Refreshes of the same table are serialized with C(GET_LOCK).
  - Supports check mode (nothing is written; a full check uses a temporary table, which is not
    written to the binary log) and diff mode (row counts before and after).
version_added: "1.0.0"
author:
  - POS cluster maintainers
extends_documentation_fragment:
  - mariadb_pos_login
options:
  name:
    description: The materialized view table, for example C(ProductBuyersMV).
    type: str
    required: true
    aliases: [table]
  database:
    description: Database holding the table, its view and the C(ChangeLog).
    type: str
    default: pos
  mode:
    description: C(full) rebuilds and swaps; C(incremental) updates only the changed keys.
    type: str
    choices: [full, incremental]
    default: incremental
  view:
    description:
      - Source view. Default is the C(source_view) registered in C(MaterializedView).
    type: str
  key_columns:
    description:
      - ChangeLog columns naming the rows to recompute, in order of preference (for each change
        the first one that is not NULL is used). Default is the registered C(key_columns).
    type: list
    elements: str
  keys:
    description:
      - Extra keys to recompute in incremental mode, as a mapping of key column to a list of
        values, for example an ETL's delta of changed customer ids.
    type: dict
  lock_timeout:
    description: Seconds to wait for another refresh of the same table to finish.
    type: int
    default: 60
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
notes:
  - Run it on the primary only; the replicas receive the refreshed rows through the binary log.
  - After a bulk load that bypassed the triggers (C(@pos_bulk_load = 1)) run C(mode=full).
"""

EXAMPLES = r"""
- name: Rebuild the product buyers after an ETL load
  mariadb_view_refresh:
    name: ProductBuyersMV
    mode: full

- name: Bring the customer purchases up to date with the changelog
  mariadb_view_refresh:
    name: CustomerPurchasesMV
    mode: incremental
  register: refresh

- name: Recompute the customers an ETL run touched
  mariadb_view_refresh:
    name: CustomerPurchasesMV
    keys:
      customer_id: "{{ etl_changed_customer_ids }}"
"""

RETURN = r"""
mode:
  description: The refresh done (C(full) when an incremental one was asked for a table never
    refreshed).
  returned: always
  type: str
  sample: incremental
rows:
  description: Rows in the table after the refresh (in check mode, the rows it would hold).
  returned: always
  type: int
  sample: 48213
duration:
  description: Seconds the refresh took.
  returned: always
  type: float
  sample: 0.412
view:
  description: The source view.
  returned: always
  type: str
  sample: ProductBuyers
table:
  description: The materialized view table refreshed (O(name)).
  returned: always
  type: str
  sample: ProductBuyersMV
database:
  description: The database of the table (O(database)).
  returned: always
  type: str
  sample: pos
consumed_changes:
  description: ChangeLog rows read (and deleted, outside check mode).
  returned: always
  type: int
  sample: 120
inserted:
  description: Rows added (incremental mode).
  returned: when mode is incremental
  type: int
updated:
  description: Rows whose values changed (incremental mode).
  returned: when mode is incremental
  type: int
deleted:
  description: Rows removed (incremental mode).
  returned: when mode is incremental
  type: int
rows_before:
  description: Rows before a full refresh.
  returned: when mode is full
  type: int
delta_keys:
  description: Keys whose summed C(ChangeLog) contributions were read (incremental mode).
  returned: when mode is incremental
  type: int
  sample: 2380
recomputed_keys:
  description: Key values recomputed from the view (incremental mode).
  returned: when mode is incremental
  type: int
  sample: 3
refreshed_keys:
  description: C(delta_keys) + C(recomputed_keys) (incremental mode).
  returned: when mode is incremental
  type: int
  sample: 2383
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.mariadb_pos.db import (
    HAS_PYMYSQL,
    PYMYSQL_MISSING,
    ConnectionError_,
    connect_from_params,
    connection_argument_spec,
    pymysql,
)
from ansible.module_utils.mariadb_pos.view_refresh import ViewRefreshError, refresh


def main():
    argument_spec = connection_argument_spec(
        name=dict(type="str", required=True, aliases=["table"]),
        database=dict(type="str", default="pos"),
        mode=dict(type="str", choices=["full", "incremental"], default="incremental"),
        view=dict(type="str"),
        key_columns=dict(type="list", elements="str"),
        keys=dict(type="dict"),
        lock_timeout=dict(type="int", default=60),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    if not HAS_PYMYSQL:
        module.fail_json(msg=PYMYSQL_MISSING)
    params = module.params
    keys = params["keys"]
    if keys is not None:
        for column, values in keys.items():
            if not isinstance(values, list):
                module.fail_json(msg="keys.%s must be a list of values" % column)
    try:
        conn = connect_from_params(params)
    except ConnectionError_ as error:
        module.fail_json(msg=str(error))
    try:
        result = refresh(conn, params["database"], params["name"], mode=params["mode"],
                         view=params["view"], key_columns=params["key_columns"], keys=keys,
                         check_mode=module.check_mode, lock_timeout=params["lock_timeout"])
    except ViewRefreshError as error:
        module.fail_json(msg="%s.%s: %s" % (params["database"], params["name"], error))
    except pymysql.err.MySQLError as error:
        module.fail_json(msg="refresh of %s.%s failed: %s"
                         % (params["database"], params["name"], error))
    finally:
        conn.close()
    if module._diff:
        before = result.get("rows_before", result["rows"] - result.get("inserted", 0)
                            + result.get("deleted", 0))
        result["diff"] = dict(before="%s.%s: %d rows\n" % (params["database"], params["name"],
                                                           before),
                              after="%s.%s: %d rows (%s refresh)\n"
                              % (params["database"], params["name"], result["rows"],
                                 result["mode"]))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
