"""Damaged input never loses data silently (issue 12), against a real MariaDB: unterminated
quotes, header-only files, mass deletes, rejected rows loaded before, price history,
plausibility rules, messages, leftovers of a killed run."""

from __future__ import annotations

import codecs
import json
import os
import signal
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import pytest
from mariadb_pos import etl
from mariadb_pos.view_refresh import refresh

from tests.support.etl_target import REPO_ROOT, new_target, run_etl, target_fixture, write_files
from tests.support.pos_csv_generator import generate

__all__ = ["target_fixture"]  # the `target` fixture

FILES = ("customers.csv", "products.csv", "orders.csv", "orderlines.csv")
TABLE_OF = {"customers.csv": "Customer", "products.csv": "Product", "orders.csv": "Order",
            "orderlines.csv": "OrderLine"}


@pytest.fixture(scope="module")
def clean_set(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clean")
    generate(folder, 3000, seed=61, write_manifest=False)
    return folder


def copy_set(source: Path, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        (folder / name).write_bytes((source / name).read_bytes())
    return folder


def lines_of(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8-sig").replace("\r\n", "\n").split("\n")[:-1]


def write_lines(path: Path, lines: list[str]) -> None:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def stored_ids(tgt, name: str) -> set:
    table = TABLE_OF[name]
    key = {"Customer": "customer_id", "Product": "product_id", "Order": "order_id",
           "OrderLine": "CONCAT(order_id, ',', product_id)"}[table]
    return {row[0] for row in tgt.query(f"SELECT {key} FROM `{tgt.db}`.`{table}`")}


def line_key(name: str, line: str):
    head = line.split(",")
    if name == "orderlines.csv":
        return ",".join(head[:2])
    return int(head[0]) if head[0].isdigit() else None


def pick_line(tgt, name: str, lines: list[str], where: str) -> int:
    """Index of a quote-free line whose row and whose next line's row are stored."""
    ids = stored_ids(tgt, name)
    candidates = [i for i in range(1, len(lines) - 1)
                  if '"' not in lines[i] and '"' not in lines[i + 1]
                  and line_key(name, lines[i]) in ids and line_key(name, lines[i + 1]) in ids]
    assert candidates
    return candidates[len(candidates) // 2] if where == "mid-file" else candidates[-1]


def accounted(result) -> None:
    for name, counts in result["files"].items():
        assert counts["read"] == counts["loaded"] + counts["merged"] + counts["rejected"], name


# ---------------------------------------------------------------- 1. malformed quoting
@pytest.mark.parametrize("where", ["mid-file", "near-the-end"])
@pytest.mark.parametrize("name", FILES)
def test_unterminated_quote_rejects_one_line_and_loses_nothing(target, clean_set, tmp_path,
                                                              name, where):
    folder = copy_set(clean_set, tmp_path / "data")
    run_etl(target.params(folder))
    before = target.checksums()
    lines = lines_of(folder / name)
    index = pick_line(target, name, lines, where)
    if where == "near-the-end":
        assert index >= len(lines) - 40  # the quote opens close to the end of the file
    fields = lines[index].split(",")
    lines[index] = fields[0] + ',"' + ",".join(fields[1:])  # e.g. 13,"Éva,Rossi,... unclosed
    write_lines(folder / name, lines)

    result = run_etl(target.params(folder, reject_sample=100_000))
    accounted(result)
    assert result["files"][name]["read"] == len(lines) - 1
    reject = [r for r in result["rejects"] if r["file"] == name]
    assert [r["line"] for r in reject] == [index + 1] or index + 1 in [r["line"] for r in reject]
    mine = next(r for r in reject if r["line"] == index + 1)
    assert "unterminated quote" in mine["reason"] and f"line {index + 1}" in mine["reason"]
    assert mine["raw"] == lines[index]
    if name != "orderlines.csv" or "loaded before" in mine["reason"]:
        assert "kept unchanged" in mine["reason"]
    # nothing deleted, nothing changed: the damaged row is kept, the next line loaded as is
    assert all(change["deleted"] == 0 for change in result["tables"].values())
    after = target.checksums()
    if name == "orderlines.csv":
        # the pair lost one unit line (a quantity update) or, with a single unit, was kept
        assert {k: v for k, v in after.items() if k != "OrderLine"} == {
            k: v for k, v in before.items() if k != "OrderLine"}
        assert len(after["OrderLine"]) == len(before["OrderLine"])
    else:
        assert after == before


def test_quoted_address_spanning_lines_is_one_record(target, tmp_path):
    """Well-formed CSV with a line break inside a quoted address is loaded; its continuation
    line counts as merged."""
    folder = write_files(tmp_path, customers=[
        '1,Anna,Smith,Boston,MA,02134,"1 Main St',
        'Building B",,anna@example.org,1/2/1990',
        "2,Bo,Ray,Boston,MA,02134,2 Main St,,bo@example.org,"])
    result = run_etl(target.params(folder))
    counts = result["files"]["customers.csv"]
    assert (counts["read"], counts["loaded"], counts["merged"], counts["rejected"]) == (3, 2, 1, 0)
    assert target.query(f"SELECT address_line1 FROM `{target.db}`.Customer "
                        "WHERE customer_id = 1")[0][0] == "1 Main St\nBuilding B"


def test_unterminated_address_quote_never_swallows_the_next_lines(target, tmp_path):
    """An address quote left open, followed by lines whose quotes would close it only as
    malformed CSV: the one line is rejected, every following line is read on its own."""
    folder = write_files(tmp_path, customers=[
        '1,Anna,Smith,Boston,MA,02134,"1 Main St,,anna@example.org,1/2/1990',
        "2,Bo,Ray,Boston,MA,02134,2 Main St,,bo@example.org,",
        '3,"""Cy""",Lee,Boston,MA,02134,3 Main St,,cy@example.org,',
        '4,Di,"Ng",Boston,MA,02134,"4 Main St",,di@example.org,'],
        orders=["1,2,2024-01-02 10:00:00,", "2,3,2024-01-02 10:00:00,"], orderlines=["1,1"])
    result = run_etl(target.params(folder))
    accounted(result)
    assert [(r["line"], r["reason"][:18]) for r in result["rejects"]] == [
        (2, "unterminated quote")]
    assert sorted(row[0] for row in target.query(
        f"SELECT customer_id FROM `{target.db}`.Customer")) == [2, 3, 4]


def test_line_break_outside_an_address_is_no_record(target, tmp_path):
    """Well-formed CSV, but a line break in a first name: not a record spanning lines -- the
    first line is rejected as an unterminated quote, the next line read on its own."""
    folder = write_files(tmp_path, customers=[
        '1,"Anna',
        'Maria",Smith,Boston,MA,02134,1 Main St,,anna@example.org,1/2/1990',
        "2,Bo,Ray,Boston,MA,02134,2 Main St,,bo@example.org,"],
        orders=["1,2,2024-01-02 10:00:00,"])
    result = run_etl(target.params(folder))
    accounted(result)
    assert [(r["line"], r["reason"][:18]) for r in result["rejects"]] == [
        (2, "unterminated quote"), (3, "wrong column count")]
    assert [row[0] for row in target.query(
        f"SELECT customer_id FROM `{target.db}`.Customer")] == [2]


# ---------------------------------------------------------------- 2. deletes are guarded
@pytest.mark.parametrize("name", FILES)
def test_header_only_file_fails_and_writes_nothing(target, clean_set, tmp_path, name):
    folder = copy_set(clean_set, tmp_path / "data")
    run_etl(target.params(folder))
    write_lines(folder / name, lines_of(folder / name)[:1])
    gtid, before = target.gtid(), target.checksums()
    with pytest.raises(etl.EtlError) as error:
        run_etl(target.params(folder))
    message = str(error.value)
    table = TABLE_OF[name]
    stored = len(before[table])
    assert f"{stored} of the {stored} rows of {table} (100.0 %, from {name})" in message
    assert "max_delete_percent" in message and "Nothing was written" in message
    assert target.gtid() == gtid and target.checksums() == before


@pytest.mark.parametrize(("share", "allowed"), [(6, False), (100, False), (2, True)])
def test_reload_deleting_a_share_of_orders(target, clean_set, tmp_path, share, allowed):
    """6 % and 100 % of the orders deleted: refused (default 5 %); 2 %: loaded. The refusal
    names the order lines that go with them too."""
    folder = copy_set(clean_set, tmp_path / "data")
    run_etl(target.params(folder))
    lines = lines_of(folder / "orders.csv")
    stored = stored_ids(target, "orders.csv")
    drop = set(sorted(stored)[:len(stored) * share // 100])
    write_lines(folder / "orders.csv",
                [line for line in lines if line_key("orders.csv", line) not in drop])
    gtid, before = target.gtid(), target.checksums()
    if allowed:
        result = run_etl(target.params(folder))
        assert result["tables"]["Order"]["deleted"] == len(drop)
        return
    with pytest.raises(etl.EtlError, match=rf"{len(drop)} of the {len(stored)} rows of Order "
                                           r"\([0-9.]+ %, from orders\.csv\).*OrderLine"):
        run_etl(target.params(folder))
    assert target.gtid() == gtid and target.checksums() == before
    result = run_etl(target.params(folder, max_delete_percent=100))
    assert result["tables"]["Order"]["deleted"] == len(drop)


def test_rejected_row_loaded_before_is_kept_with_its_dependents(target, tmp_path):
    """A customer line damaged on reload (an extra column): the stored customer, its orders and
    their lines stay, the reject says so; delete_rejected deletes them."""
    customers = ["1,Anna,Smith,Boston,MA,02134,1 Main St,,anna@example.org,1/2/1990",
                 "2,Bo,Ray,Boston,MA,02134,2 Main St,,bo@example.org,"]
    orders = ["1,1,2024-01-02 10:00:00,", "2,1,2024-01-03 10:00:00,",
              "3,2,2024-01-03 10:00:00,"]
    lines = ["1,1", "1,1", "2,1", "3,1"]
    folder = write_files(tmp_path, customers=customers, orders=orders, orderlines=lines)
    run_etl(target.params(folder))
    before = target.checksums()
    write_files(tmp_path, customers=[customers[0] + ",extra", customers[1]], orders=orders,
                orderlines=lines)
    result = run_etl(target.params(folder))
    assert result["kept"] == {"Customer": 1}
    (reject,) = result["rejects"]
    assert reject["line"] == 2 and "wrong column count: 11 instead of 10" in reject["reason"]
    assert "customer 1 loaded before is kept unchanged" in reject["reason"]
    assert "delete_rejected" in reject["reason"]
    assert target.checksums() == before
    assert not result["data_changed"]
    with pytest.raises(etl.EtlError, match="max_delete_percent"):
        run_etl(target.params(folder, force=True, delete_rejected=True))
    result = run_etl(target.params(folder, force=True, delete_rejected=True,
                                   max_delete_percent=100))
    assert "customer 1 loaded before is deleted" in result["rejects"][0]["reason"]
    assert {k: v["deleted"] for k, v in result["tables"].items() if v["deleted"]} == {
        "Customer": 1, "Order": 2, "OrderLine": 2}


# ---------------------------------------------------------------- 3. history is kept
def test_price_change_writes_history_and_keeps_sold_prices(target, tmp_path):
    products = ["1,Widget,9.99,10", "2,Gadget,5.00,3"]
    orders = ["1,1,2024-01-02 10:00:00,", "2,1,2024-01-05 10:00:00,"]
    folder = write_files(tmp_path, products=products, orders=orders[:1], orderlines=["1,1"])
    run_etl(target.params(folder))
    assert target.counts()["PriceHistory"] == 0  # a first load writes no history
    write_files(tmp_path, products=["1,Widget,12.50,10", products[1]], orders=orders,
                orderlines=["1,1", "2,1"])
    started = target.query("SELECT NOW(6)")[0][0]
    result = run_etl(target.params(folder))
    assert result["tables"]["PriceHistory"]["inserted"] == 1
    ((product, old, new, when),) = target.query(
        f"SELECT product_id, old_price, new_price, changed_at FROM `{target.db}`.PriceHistory")
    assert (product, old, new) == (1, Decimal("9.99"), Decimal("12.50"))
    assert when >= started
    prices = dict(((o, p), price) for o, p, price in target.query(
        f"SELECT order_id, product_id, unit_price FROM `{target.db}`.OrderLine"))
    assert prices == {(1, 1): Decimal("9.99"), (2, 1): Decimal("12.50")}
    # the same files again: no second history row
    run_etl(target.params(folder, force=True))
    assert target.counts()["PriceHistory"] == 1


def test_reload_logs_changed_keys_for_the_incremental_refresh(mariadb_server, target,
                                                              clean_set, tmp_path):
    """The ETL logs its changes in ChangeLog (signed contributions, delta = 1, and the keys of
    the renamed customer, delta = 0); an incremental refresh then makes every materialized view
    equal to its view."""
    folder = copy_set(clean_set, tmp_path / "data")
    run_etl(target.params(folder))
    views = {row[0]: row[1] for row in target.query(
        f"SELECT mv_table, source_view FROM `{target.db}`.MaterializedView")}
    conn = mariadb_server.connect(database=target.db)
    for table in views:
        refresh(conn, target.db, table, mode="full")
    lines = lines_of(folder / "orderlines.csv")
    write_lines(folder / "orderlines.csv", lines[:-60])  # some order lines are gone
    customers = lines_of(folder / "customers.csv")
    index = next(i for i, line in enumerate(customers) if i and '"' not in line
                 and line_key("customers.csv", line) in stored_ids(target, "customers.csv"))
    fields = customers[index].split(",")
    fields[1] = "Renamed"
    customers[index] = ",".join(fields)
    write_lines(folder / "customers.csv", customers)
    result = run_etl(target.params(folder))
    assert result["mv_refresh"] == "incremental" and 0 < result["mv_keys"] < 200
    logged = target.query(f"SELECT COUNT(*), SUM(delta) FROM `{target.db}`.ChangeLog")[0]
    assert logged[0] == result["mv_keys"] * len(views)
    assert logged[1] == logged[0] - len(views)  # one key to recompute: the renamed customer
    for table in views:
        assert refresh(conn, target.db, table, mode="incremental")["mode"] == "incremental"
    for table, view in views.items():
        for left, right in ((table, view), (view, table)):
            assert target.query(f"SELECT COUNT(*) FROM (SELECT * FROM `{target.db}`.{left} "
                                f"EXCEPT SELECT * FROM `{target.db}`.{right}) d")[0][0] == 0
    conn.close()


# ---------------------------------------------------------------- 4. plausibility
@pytest.mark.parametrize(("customer", "order", "reason"), [
    ("", "1,1,2999-01-02 10:00:00,", "implausible order date 2999-01-02 10:00:00: in the future"),
    ("", "1,1,2024-01-02 10:00:00,2999-01-03 10:00:00",
     "implausible ship date 2999-01-03 10:00:00: in the future"),
    ("", "1,1,2024-01-02 10:00:00,2024-01-01 09:00:00",
     "ship date 2024-01-01 09:00:00 before the order date 2024-01-02 10:00:00"),
    ("1850-03-04", "", "implausible birthdate '1850-03-04': before 1900"),
    ("1/2/2999", "", "implausible birthdate '1/2/2999': in the future"),
])
def test_implausible_values_are_rejected(target, tmp_path, customer, order, reason):
    customers = [f"1,Anna,Smith,Boston,MA,02134,1 Main St,,a@example.org,{customer}",
                 "2,Bo,Ray,Boston,MA,02134,2 Main St,,b@example.org,"]
    orders = [order or "1,1,2024-01-02 10:00:00,", "2,2,2024-01-02 10:00:00,"]
    folder = write_files(tmp_path, customers=customers, orders=orders, orderlines=["2,1"])
    result = run_etl(target.params(folder))
    accounted(result)
    assert result["rejects"][0]["reason"] == reason
    counts = target.counts()
    assert counts["Order"] == 1  # never silently loaded
    rejects = target.query(f"SELECT reason FROM `{target.etl_db}`.etl_reject")
    assert reason in [row[0] for row in rejects]


# ---------------------------------------------------------------- 5. clearer messages
def _utf(encoding: str, bom: bool):
    def write(folder: Path) -> None:
        text = (folder / "products.csv").read_text(encoding="utf-8")
        data = text.encode(encoding)
        if bom:
            data = {"utf-16-le": codecs.BOM_UTF16_LE, "utf-16-be": codecs.BOM_UTF16_BE,
                    "utf-32-le": codecs.BOM_UTF32_LE, "utf-32-be": codecs.BOM_UTF32_BE}[
                        encoding] + data
        (folder / "products.csv").write_bytes(data)
    return write


def _directory(folder: Path) -> None:
    (folder / "products.csv").unlink()
    (folder / "products.csv").mkdir()


def _symlink_loop(folder: Path) -> None:
    (folder / "products.csv").unlink()
    os.symlink("products.csv", folder / "products.csv")


def _dangling(folder: Path) -> None:
    (folder / "products.csv").unlink()
    os.symlink("gone.csv", folder / "products.csv")


@pytest.mark.parametrize(("damage", "pattern"), [
    (_directory, r"products\.csv: a directory, not a file"),
    (_symlink_loop, r"products\.csv: a symbolic link loop"),
    (_dangling, r"products\.csv: a symbolic link to 'gone\.csv', which does not exist"),
    (_utf("utf-16-le", True), r"products\.csv: encoded as UTF-16LE \(byte-order mark found\); "
                              "UTF-8 is required"),
    (_utf("utf-16-be", True), r"encoded as UTF-16BE \(byte-order mark found\); UTF-8 is req"),
    (_utf("utf-32-le", True), r"encoded as UTF-32LE \(byte-order mark found\); UTF-8 is req"),
    (_utf("utf-32-be", True), r"encoded as UTF-32BE \(byte-order mark found\); UTF-8 is req"),
    (_utf("utf-16-le", False), r"looks like UTF-16LE text without a byte-order mark; UTF-8 is"),
], ids=["directory", "symlink-loop", "dangling-symlink", "utf16le", "utf16be", "utf32le",
        "utf32be", "utf16-no-bom"])
def test_file_messages(target, tmp_path, damage, pattern):
    folder = write_files(tmp_path)
    damage(folder)
    with pytest.raises(etl.EtlError, match=pattern) as error:
        run_etl(target.params(folder))
    assert "nothing was loaded" in str(error.value)
    assert set(target.counts().values()) == {0}


@pytest.mark.parametrize(("product", "reason"), [
    ("1,Widget,9.99,-5", "negative quantity on hand '-5'"),
    ("1,Widget,-9.99,5", "negative price '-9.99'"),
    ("1,Widget,$-9.99,5", "negative price '$-9.99'"),
    ("1,Widget,9.999,5", "price '9.999' has more than two decimals (cents)"),
    ("1,Widget,$1,234.5678,5", None),  # a thousands separator without quotes: extra column
])
def test_value_messages(target, tmp_path, product, reason):
    folder = write_files(tmp_path, products=[product, "2,Cog,1.00,1"], orderlines=["1,2"])
    result = run_etl(target.params(folder))
    (reject,) = [r for r in result["rejects"] if r["file"] == "products.csv"]
    assert reject["reason"] == (reason or "wrong column count: 5 instead of 4")


# ---------------------------------------------------------------- 6. no leftovers
RUNNER = ("import json, sys; sys.path[:0] = [sys.argv[2], sys.argv[2] + '/module_utils']; "
          "from tests.support.etl_target import run_etl; run_etl(json.loads(sys.argv[1]))")


def test_killed_run_leaves_no_customer_data_after_the_next_run(mariadb_server, tmp_path):
    """kill -9 while the staging files exist; the next run removes the dead run's folder and
    leaves nothing behind. TMPDIR isolates this test's staging root from other runs."""
    data = tmp_path / "data"
    generate(data, 200_000, seed=62)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    root = tmp / f"mariadb_csv_etl-{os.getuid()}"
    tgt = new_target(mariadb_server)
    env = dict(os.environ, TMPDIR=str(tmp))
    process = subprocess.Popen([sys.executable, "-c", RUNNER, json.dumps(tgt.params(data)),
                                str(REPO_ROOT)], env=env, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 180
    while not list(root.glob("run-*/stg_orderline.tsv")):
        assert process.poll() is None, process.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline, "the run never wrote its staging files"
        time.sleep(0.01)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    (dead,) = list(root.glob("run-*"))
    assert list(dead.glob("stg_customer.tsv"))  # customer data was left behind ...
    assert oct(root.stat().st_mode & 0o777) == "0o700"
    second = tgt.params(data)
    subprocess.run([sys.executable, "-c", RUNNER, json.dumps(second), str(REPO_ROOT)],
                   env=env, check=True, timeout=600)
    assert not dead.exists()  # ... and removed by the next run
    assert list(root.iterdir()) == []
