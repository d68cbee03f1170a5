"""Helpers and the `target` fixture shared by the ETL tests (tests/test_etl_*.py)."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from mariadb_pos import etl
from mariadb_pos.db import CONNECTION_ARGUMENT_SPEC, ConnectionError_, connect

from tests.support.pos_csv_generator import HEADERS
from tests.support.schema import create_schema

REPO_ROOT = Path(__file__).resolve().parents[2]
TABLES = ("City", "Customer", "Product", "`Order`", "OrderLine", "PriceHistory")
_counter = itertools.count(1)


def run_etl(params: dict, check_mode: bool = False, progress=None) -> dict:
    """One ETL run as the module runs it: a connection of its own from the login options in
    ``params`` (opened with etl.CONNECTION_OPTIONS), the other params as the ETL's arguments."""
    login = {k: v for k, v in params.items() if k in CONNECTION_ARGUMENT_SPEC}
    options = {k: v for k, v in params.items() if k not in CONNECTION_ARGUMENT_SPEC}
    try:
        conn = connect(**login, **etl.CONNECTION_OPTIONS)
    except ConnectionError_ as error:
        raise etl.EtlError(str(error)) from None
    try:
        return etl.run(conn, options.pop("data_dir"), check_mode=check_mode, progress=progress,
                       **options)
    finally:
        conn.close()


class EtlTarget:
    """A POS database + its ETL database on a server, and the module parameters to reach it."""

    def __init__(self, server, name: str):
        self.server = server
        self.db = name
        self.etl_db = name + "_etl"

    def params(self, data_dir, **extra) -> dict:
        params = dict(data_dir=str(data_dir), database=self.db, etl_database=self.etl_db,
                      login_user="root", login_unix_socket=self.server.socket)
        params.update(extra)
        return params

    def query(self, sql: str, args=None):
        conn = self.server.connect()
        try:
            with conn.cursor() as cursor:
                cursor.execute(sql, args)
                return cursor.fetchall()
        finally:
            conn.close()

    def counts(self) -> dict:
        return {t.strip("`"): self.query(f"SELECT COUNT(*) FROM `{self.db}`.{t}")[0][0]
                for t in TABLES}

    def checksums(self, unit_price: bool = True) -> dict:
        """Content of each table (order-independent), for comparing end states; without
        ``unit_price`` the order lines are compared without it (a reload keeps the price an
        existing line was sold at, a fresh load takes the current one)."""
        result = {}
        for table in TABLES[:5]:
            columns = "*" if unit_price or table != "OrderLine" else (
                "order_id, product_id, quantity")
            rows = self.query(f"SELECT {columns} FROM `{self.db}`.{table}")
            result[table.strip("`")] = sorted(repr(row) for row in rows)
        return result

    def gtid(self) -> str:
        return self.query("SELECT @@gtid_binlog_pos")[0][0]


def new_target(server) -> EtlTarget:
    target = EtlTarget(server, f"etl_t{next(_counter)}")
    create_schema(server, target.db)
    server.client(f"DROP DATABASE IF EXISTS `{target.etl_db}`; CREATE DATABASE `{target.etl_db}`")
    return target


@pytest.fixture(name="target")
def target_fixture(mariadb_server):
    """A fresh POS database (files/sql applied) and ETL database; import it as a fixture."""
    target = new_target(mariadb_server)
    yield target
    mariadb_server.client(f"DROP DATABASE IF EXISTS `{target.db}`; "
                          f"DROP DATABASE IF EXISTS `{target.etl_db}`")


def write_files(folder: Path, *, customers=None, products=None, orders=None, orderlines=None,
                newline: str = "\n", bom: bool = False) -> Path:
    """Write the four files from lists of raw CSV lines (header added unless given)."""
    folder.mkdir(parents=True, exist_ok=True)
    defaults = dict(
        customers=["1,Anna,Smith,Boston,MA,02134,1 Main St,,anna@example.org,1/2/1990"],
        products=["1,Widget,9.99,10"],
        orders=["1,1,2024-01-02 10:00:00,2024-01-03 12:00:00"],
        orderlines=["1,1"],
    )
    given = dict(customers=customers, products=products, orders=orders, orderlines=orderlines)
    for key, name in (("customers", "customers.csv"), ("products", "products.csv"),
                      ("orders", "orders.csv"), ("orderlines", "orderlines.csv")):
        lines = given[key] if given[key] is not None else defaults[key]
        if not lines or not lines[0].startswith(HEADERS[name][0]):
            lines = [",".join(f'"{h}"' if " " in h else h for h in HEADERS[name]), *lines]
        text = "".join(line + newline for line in lines)
        if bom:
            text = "\ufeff" + text
        (folder / name).write_bytes(text.encode("utf-8"))
    return folder
