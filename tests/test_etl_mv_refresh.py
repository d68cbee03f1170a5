"""The materialized views after an ETL load (issue 12), against a real MariaDB: the refresh the
ETL advises makes every registered materialized view equal to a full recomputation of its view
-- after a first load (full), after a reload changing about 1 % of the data with inserts,
updates and deletes (incremental, from the signed contributions the ETL logs in ChangeLog), and
after a price change."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from mariadb_pos.view_refresh import refresh

from tests.support.etl_target import run_etl, target_fixture
from tests.support.pos_csv_generator import generate
from tests.support.schema import MATERIALIZED_VIEWS as VIEWS

__all__ = ["target_fixture"]  # the `target` fixture

SIMPLE = re.compile(r"^\d+,")  # a line without quoting whose first field is an id


@pytest.fixture(scope="module")
def data_set(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mv_data")
    generate(folder, 4000, seed=73, write_manifest=False)
    return folder


def read_lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8-sig").replace("\r\n", "\n").split("\n")[:-1]


def write_lines(path: Path, lines: list[str]) -> None:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def copy_set(source: Path, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("customers.csv", "products.csv", "orders.csv", "orderlines.csv"):
        write_lines(folder / name, read_lines(source / name))
    return folder


def refresh_as_advised(server, target, result) -> dict:
    """The refresh the role runs after a load (roles/pos_etl/tasks/refresh.yml)."""
    conn = server.connect()
    try:
        return {table: refresh(conn, target.db, table, mode=result["mv_refresh"])
                for table in VIEWS}
    finally:
        conn.close()


def assert_equal_to_views(target) -> None:
    """Every materialized view holds exactly the rows of its view (a full recomputation)."""
    for table, view in VIEWS.items():
        for left, right in ((table, view), (view, table)):
            missing = target.query(f"SELECT COUNT(*) FROM (SELECT * FROM `{target.db}`.{left} "
                                   f"EXCEPT SELECT * FROM `{target.db}`.{right}) d")[0][0]
            assert missing == 0, f"{missing} rows of {left} are not in {right}"
        assert target.query(f"SELECT COUNT(*) FROM `{target.db}`.{table}")[0][0] > 0


def stored_orders(target) -> dict:
    """{order_id: (customer_id, number of lines)} of the stored orders."""
    return {row[0]: (row[1], row[2]) for row in target.query(
        f"SELECT o.order_id, o.customer_id, COUNT(ol.product_id) FROM `{target.db}`.`Order` o "
        f"LEFT JOIN `{target.db}`.OrderLine ol ON ol.order_id = o.order_id "
        "GROUP BY o.order_id, o.customer_id")}


def load_first(server, target, folder) -> None:
    result = run_etl(target.params(folder))
    assert result["mv_refresh"] == "full" and result["mv_keys"] == 0
    assert all(r["mode"] == "full" for r in refresh_as_advised(server, target, result).values())
    assert_equal_to_views(target)


def test_first_load_then_full_refresh_equals_the_views(mariadb_server, target, data_set,
                                                       tmp_path):
    load_first(mariadb_server, target, copy_set(data_set, tmp_path / "data"))
    # the views were empty: the full refresh filled them (not a no-op on an empty table)
    rows = dict(target.query(f"SELECT mv_table, row_count FROM `{target.db}`.MaterializedView"))
    assert set(rows) == set(VIEWS) and all(rows.values())


def test_one_percent_reload_is_refreshed_from_signed_contributions(mariadb_server, target,
                                                                   data_set, tmp_path):
    folder = copy_set(data_set, tmp_path / "data")
    load_first(mariadb_server, target, folder)
    orders = stored_orders(target)
    customers = sorted({customer for customer, _lines in orders.values()})

    order_lines = read_lines(folder / "orderlines.csv")
    order_file = read_lines(folder / "orders.csv")
    simple_orders = {int(line.split(",")[0]): i for i, line in enumerate(order_file)
                     if i and SIMPLE.match(line) and line.count(",") == 3
                     and int(line.split(",")[0]) in orders}
    with_lines = sorted(o for o in simple_orders if orders[o][1] >= 2)
    removed, moved, redated = with_lines[:2], with_lines[10], with_lines[20]
    # orders removed with all their lines; one moved to another customer, one to another day
    fields = order_file[simple_orders[moved]].split(",")
    fields[1] = str(next(c for c in customers if c != orders[moved][0]))
    order_file[simple_orders[moved]] = ",".join(fields)
    fields = order_file[simple_orders[redated]].split(",")
    fields[2] = "2019-02-03 04:05:06"
    fields[3] = ""
    order_file[simple_orders[redated]] = ",".join(fields)
    order_file = [line for i, line in enumerate(order_file)
                  if i not in {simple_orders[o] for o in removed}]
    # new orders with lines (one of an existing customer, one of a new product mix)
    new_id = max(orders) + 1
    products = [row[0] for row in target.query(f"SELECT product_id FROM `{target.db}`.Product "
                                               "ORDER BY product_id LIMIT 5")]
    order_file += [f"{new_id},{customers[0]},2024-03-04 10:00:00,",
                   f"{new_id + 1},{customers[1]},2024-03-05 11:00:00,2024-03-06 12:00:00"]
    # about 1 % of the order-line lines: removed (a line gone or a quantity lowered) or doubled
    kept = []
    for number, line in enumerate(order_lines):
        order_id = line.split(",")[0]
        if number and order_id.isdigit() and int(order_id) in removed:
            continue
        if number and number % 100 == 50:
            continue
        kept.append(line)
        if number and number % 100 == 25:
            kept.append(line)
    kept += [f"{new_id},{products[0]}", f"{new_id},{products[1]}", f"{new_id},{products[1]}",
             f"{new_id + 1},{products[2]}"]
    write_lines(folder / "orderlines.csv", kept)
    write_lines(folder / "orders.csv", order_file)
    # a customer renamed
    customer_file = read_lines(folder / "customers.csv")
    index = next(i for i, line in enumerate(customer_file)
                 if i > 10 and SIMPLE.match(line) and '"' not in line
                 and int(line.split(",")[0]) in customers)
    fields = customer_file[index].split(",")
    fields[1] = "Renamed"
    customer_file[index] = ",".join(fields)
    write_lines(folder / "customers.csv", customer_file)

    result = run_etl(target.params(folder))
    lines = result["tables"]["OrderLine"]
    assert lines["inserted"] and lines["updated"] and lines["deleted"]
    assert result["tables"]["Order"]["deleted"] == 2 and result["tables"]["Order"]["inserted"] == 2
    assert result["mv_refresh"] == "incremental"
    logged = target.query(f"SELECT delta, COUNT(*) FROM `{target.db}`.ChangeLog GROUP BY delta")
    logged = dict(logged)
    # per view: the contributions of the lines and orders, a few keys to recompute (the moved
    # and re-dated orders' customers and days, the renamed customer)
    assert logged[1] > 20 * logged[0] > 0
    assert sum(logged.values()) == result["mv_keys"] * len(VIEWS)
    results = refresh_as_advised(mariadb_server, target, result)
    for table, outcome in results.items():
        assert outcome["mode"] == "incremental" and outcome["delta_keys"] > 0, (table, outcome)
    assert_equal_to_views(target)
    assert not target.query(f"SELECT COUNT(*) FROM `{target.db}`.ChangeLog")[0][0]


def test_price_change_reload_keeps_the_views_equal(mariadb_server, target, data_set, tmp_path):
    folder = copy_set(data_set, tmp_path / "data")
    load_first(mariadb_server, target, folder)
    ((product, price, lines),) = target.query(
        f"SELECT p.product_id, p.current_price, COUNT(*) FROM `{target.db}`.Product p "
        f"JOIN `{target.db}`.OrderLine ol ON ol.product_id = p.product_id "
        "GROUP BY p.product_id, p.current_price ORDER BY COUNT(*) DESC LIMIT 1")
    assert lines > 1
    products = read_lines(folder / "products.csv")
    index = next(i for i, line in enumerate(products)
                 if i and SIMPLE.match(line) and int(line.split(",")[0]) == product)
    fields = products[index].split(",")
    fields[2] = str(price + 7)
    products[index] = ",".join(fields)
    write_lines(folder / "products.csv", products)
    # a new order with a line of that product: it takes the new price, the old lines keep theirs
    (customer,) = target.query(f"SELECT MIN(customer_id) FROM `{target.db}`.Customer")[0]
    (order_id,) = target.query(f"SELECT MAX(order_id) + 1 FROM `{target.db}`.`Order`")[0]
    write_lines(folder / "orders.csv", [*read_lines(folder / "orders.csv"),
                                        f"{order_id},{customer},2024-06-07 08:09:10,"])
    write_lines(folder / "orderlines.csv", [*read_lines(folder / "orderlines.csv"),
                                            f"{order_id},{product}", f"{order_id},{product}"])
    result = run_etl(target.params(folder))
    assert result["tables"]["PriceHistory"]["inserted"] == 1
    assert result["mv_refresh"] == "incremental"
    assert not target.query(f"SELECT COUNT(*) FROM `{target.db}`.ChangeLog WHERE delta = 0")[0][0]
    refresh_as_advised(mariadb_server, target, result)
    assert_equal_to_views(target)
    ((spent,),) = target.query(
        f"SELECT total_spent FROM `{target.db}`.ProductBuyersMV "
        "WHERE product_id = %s AND customer_id = %s", (product, customer))
    assert spent >= 2 * (price + 7)
