#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Ansible module: load the course's CSV files (logic in module_utils/mariadb_pos/etl.py)."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: mariadb_csv_etl
short_description: Load the course's four POS CSV files into MariaDB, idempotently and atomically
description:
  - Reads C(customers.csv), C(products.csv), C(orders.csv) and C(orderlines.csv) (the course's
    headers) from O(data_dir) on the managed host, cleans them (ZIP codes, prices, dates, stray
    quotes, whitespace, BOM, CRLF, duplicates) and loads them into the POS tables.
  - Cleaned rows are staged with C(LOAD DATA LOCAL INFILE) in per-run temporary tables, compared
    with the final tables, and the difference (deletes, updates, inserts) is applied in one
    transaction together with the audit rows, so an interrupted run leaves the previous data intact.
  - Every input row is accounted for (read = loaded + merged + rejected); rejected rows are stored
    in C(<etl_database>.etl_reject) with file, line number, raw text and reason.
  - The SHA-256 of each file is recorded in C(<etl_database>.etl_file); a rerun with unchanged
    files reads only that table and reports C(changed=false).
  - The session sets C(@pos_bulk_load = 1) so the schema's data triggers do nothing; the module
    fills C(OrderLine.unit_price) from the product's price (an existing order line keeps the
    price it was loaded with), keeps the file's quantity on hand, writes one C(PriceHistory) row
    per price change, and logs its changes in C(ChangeLog) as the triggers do (the signed
    contribution of each order line and order added, removed or changed; the keys to recompute
    of customers added, removed or renamed, products renamed, orders moved to another customer
    or day). RV(mv_refresh) says whether an incremental or a full refresh of the materialized
    views brings them up to date.
  - A malformed line is rejected on its own (an unterminated quote never swallows the next
    lines); a rejected line whose id was loaded before keeps the stored row (O(delete_rejected));
    a reload that would delete more than O(max_delete_percent) of a table fails and writes
    nothing.
  - Needs C(local_infile=ON) on the server. All writes go through the binlog (never
    C(sql_log_bin=0)).
version_added: "1.0.0"
author: POS cluster maintainers
extends_documentation_fragment:
  - mariadb_pos_login
options:
  data_dir:
    description: Folder on the managed host holding the four CSV files.
    type: path
    required: true
  file_names:
    description:
      - Other file names, keyed C(customers), C(products), C(orders), C(orderlines).
    type: dict
    default: {}
  database:
    description: Database of the POS tables.
    type: str
    default: pos
  etl_database:
    description: Database of the ETL's audit and reject tables (created when missing).
    type: str
    default: pos_etl
  force:
    description: Reload even when the files are unchanged since the last completed run.
    type: bool
    default: false
  lock_timeout:
    description: Seconds to wait for another run of this module to finish.
    type: int
    default: 60
  reject_sample:
    description: How many rejected rows to return in RV(rejects) (all of them are in the table).
    type: int
    default: 20
  max_delete_percent:
    description:
      - A reload that would delete more than this share (in percent) of the rows of any table
        (rows that hang off deleted ones included, e.g. the order lines of a deleted order)
        fails naming the file, the table and the count, and writes nothing.
      - C(100) allows any delete, e.g. to replace the data set on purpose.
    type: float
    default: 5
  delete_rejected:
    description:
      - When a line is rejected and a previous load stored a row with the same id, delete that
        row (C(true)) or keep it unchanged (C(false); the reject says so, and the file's rows
        that depend on it are loaded).
    type: bool
    default: false
  mv_incremental_max_keys:
    description:
      - Up to this many keys to recompute (customers added, removed or renamed, products
        renamed, orders moved to another customer or day) a reload is logged in C(ChangeLog)
        for an incremental refresh of the materialized views; beyond it, or when more than
        10 % of the order lines and orders changed, RV(mv_refresh) is C(full).
    type: int
    default: 2000
attributes:
  check_mode:
    support: full
    description: Cleans and stages the files in temporary tables and reports the differences;
      writes nothing.
  diff_mode:
    support: full
    description: Shows the row counts of each table before and after.
notes:
  - The cleaning rules, the atomicity and replication trade-offs are described in docs/etl.md.
"""

EXAMPLES = r"""
- name: Load the POS CSV files
  mariadb_csv_etl:
    data_dir: /var/lib/pos_etl/data
  register: pos_etl_result

- name: Load as the pos_etl account over TCP
  mariadb_csv_etl:
    data_dir: /var/lib/pos_etl/data
    login_user: pos_etl
    login_password: "{{ vault_pos_etl_password }}"
    login_host: 127.0.0.1
  no_log: true
"""

RETURN = r"""
data_changed:
  description: Whether rows of the POS tables were (or in check mode would be) changed.
  returned: always
  type: bool
run_id:
  description: Audit id of this run (of the last completed run when nothing was to do).
  returned: always
  type: int
files:
  description: Per file, the SHA-256 and the counts read, loaded, merged (duplicates, or units of
    an order line) and rejected.
  returned: always
  type: dict
  sample: {"orders.csv": {"read": 2037, "loaded": 1935, "merged": 37, "rejected": 65}}
tables:
  description: Per table (and PriceHistory), rows_before, rows_after, inserted, updated,
    deleted.
  returned: when the files were processed
  type: dict
kept:
  description: Per table, how many previously loaded rows were kept because their line was
    rejected (see O(delete_rejected)).
  returned: when the files were processed
  type: dict
  sample: {"Customer": 1}
mv_refresh:
  description: How to bring the materialized views up to date after this run. C(none) nothing
    changed; C(incremental) the changes are in C(ChangeLog); C(full) a first load, more keys to
    recompute than O(mv_incremental_max_keys), more than 10 % of the order lines and orders
    changed, or a schema without the delta C(ChangeLog).
  returned: always
  type: str
  sample: incremental
mv_keys:
  description: Number of C(ChangeLog) rows logged per materialized view (contributions and keys
    to recompute; 0 unless RV(mv_refresh) is C(incremental)).
  returned: always
  type: int
phases:
  description: Rows, seconds and rows per second of each phase.
  returned: always
  type: list
  elements: dict
city_conflicts:
  description: ZIP codes spelled with several (city, state) names, the spelling chosen (the most
    frequent, ties to the first seen) and the count of each spelling.
  returned: always
  type: list
  elements: dict
rejects:
  description: The first O(reject_sample) rejected rows (file, line, raw, reason).
  returned: always
  type: list
  elements: dict
msg:
  description: Summary of the run.
  returned: always
  type: str
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.mariadb_pos.db import (
    HAS_PYMYSQL,
    PYMYSQL_MISSING,
    ConnectionError_,
    connect_from_params,
    connection_argument_spec,
)
from ansible.module_utils.mariadb_pos.etl import CONNECTION_OPTIONS, EtlError, diff_text, run


def main():
    argument_spec = connection_argument_spec(
        data_dir=dict(type="path", required=True),
        file_names=dict(type="dict", default={}),
        database=dict(type="str", default="pos"),
        etl_database=dict(type="str", default="pos_etl"),
        force=dict(type="bool", default=False),
        lock_timeout=dict(type="int", default=60),
        reject_sample=dict(type="int", default=20),
        max_delete_percent=dict(type="float", default=5),
        delete_rejected=dict(type="bool", default=False),
        mv_incremental_max_keys=dict(type="int", default=2000),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    if not HAS_PYMYSQL:
        module.fail_json(msg=PYMYSQL_MISSING)
    params = module.params
    try:
        conn = connect_from_params(params, **CONNECTION_OPTIONS)
    except ConnectionError_ as error:
        module.fail_json(msg=str(error))
    try:
        result = run(conn, params["data_dir"], file_names=params["file_names"],
                     database=params["database"], etl_database=params["etl_database"],
                     force=params["force"], lock_timeout=params["lock_timeout"],
                     reject_sample=params["reject_sample"],
                     max_delete_percent=params["max_delete_percent"],
                     delete_rejected=params["delete_rejected"],
                     mv_incremental_max_keys=params["mv_incremental_max_keys"],
                     check_mode=module.check_mode, progress=module.log)
    except EtlError as error:
        module.fail_json(msg=str(error))
    finally:
        conn.close()
    if module._diff and result.get("tables"):
        result["diff"] = diff_text(result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
