"""mariadb_csv_etl against a real MariaDB (files/sql/*.sql applied): cleaning end to end,
accounting, idempotence, check mode, reloads, triggers, injection, bad files."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest
from mariadb_pos import etl

from tests.support.etl_target import REPO_ROOT, new_target, run_etl, target_fixture, write_files
from tests.support.pos_csv_generator import generate

__all__ = ["target_fixture"]  # the `target` fixture

CUSTOMERS = [
    # BOM + CRLF come from write_files(bom=True, newline="\r\n")
    '1,"""Zoë""",  Smith ,Boston,MA,2134,1 Main St,,zoe@example.org,1/2/1990',
    '1,"""Zoë""",  Smith ,Boston,MA,2134,1 Main St,,zoe@example.org,1/2/1990',  # duplicate
    "2,François,Lefèvre,Boston,ma,02134-5678,2 Main St,Apt 4,fr@example.org,1985-12-31",
    '3,Søren,Østergaard,"""BOSTON CITY""",MA,02134,3 Main St,,so@example.org,0000-00-00',
    "4,Ann,Núñez,Holtsville,NY,501,4 Elm St,,ann@example.org,",
    "5,Bad,Date,Austin,TX,78701,5 Oak Ave,,bad@example.org,13/45/1990",
    "6,Too,Few,Austin,TX,78701",
]
PRODUCTS = ['1,Widget,"$1,234.56","1,200"', '2," ""Gadget"" ",9.5,7', "3,Broken,N/A,5",
            "4,Cog,$0.99,0"]
ORDERS = ["1,1,2024-01-02 10:00:00,Cancelled", "2,2,2024-01-03 11:30:00,2024-01-04 09:00:00",
          "3,99,2024-01-03 11:30:00,", "4,4,2024-02-30 10:00:00,", "5,3,2024-03-01 08:00:00,"]
ORDERLINES = ["1,1", "1,1", "1,1", "1,2", "2,2", "2,3", "3,1", "5,4", "5,4", "1"]


@pytest.fixture(scope="module")
def dirty(mariadb_server, tmp_path_factory):
    """The hand-made dirty files, loaded once."""
    folder = write_files(tmp_path_factory.mktemp("dirty"), customers=CUSTOMERS,
                         products=PRODUCTS, orders=ORDERS, orderlines=ORDERLINES, bom=True,
                         newline="\r\n")
    tgt = new_target(mariadb_server)
    result = run_etl(tgt.params(folder))
    return tgt, result


def one(tgt, sql, *args):
    rows = tgt.query(sql.replace("{db}", f"`{tgt.db}`"), args or None)
    assert len(rows) == 1, rows
    return rows[0]


# ---------------------------------------------------------------- one test per dirty class
def test_zip_lost_leading_zero_and_zip4(dirty):
    tgt, _ = dirty
    assert one(tgt, "SELECT zip FROM {db}.Customer WHERE customer_id = 1") == ("02134",)
    assert one(tgt, "SELECT zip FROM {db}.Customer WHERE customer_id = 2") == ("02134",)
    assert one(tgt, "SELECT zip, city, state FROM {db}.City WHERE zip = '00501'") == (
        "00501", "Holtsville", "NY")


def test_prices_currency_thousands_quotes(dirty):
    tgt, _ = dirty
    assert one(tgt, "SELECT current_price, quantity_on_hand FROM {db}.Product "
                    "WHERE product_id = 1") == (Decimal("1234.56"), 1200)
    assert one(tgt, "SELECT current_price FROM {db}.Product WHERE product_id = 4") == (
        Decimal("0.99"),)


def test_stray_quotes_and_whitespace(dirty):
    tgt, _ = dirty
    assert one(tgt, "SELECT first_name, last_name FROM {db}.Customer WHERE customer_id = 1") == (
        "Zoë", "Smith")
    assert one(tgt, "SELECT name FROM {db}.Product WHERE product_id = 2") == ("Gadget",)


def test_crlf_line_ends_leave_no_carriage_return(dirty):
    tgt, _ = dirty
    assert one(tgt, "SELECT COUNT(*) FROM {db}.Customer WHERE birthdate LIKE '%\r%' "
                    "OR email LIKE '%\r%'") == (0,)
    assert one(tgt, "SELECT quantity_on_hand FROM {db}.Product WHERE product_id = 2") == (7,)


def test_shipped_cancelled_is_null_and_timestamps(dirty):
    tgt, _ = dirty
    placed, shipped = one(tgt, "SELECT date_placed, date_shipped FROM {db}.`Order` "
                               "WHERE order_id = 1")
    assert str(placed) == "2024-01-02 10:00:00" and shipped is None
    assert str(one(tgt, "SELECT date_shipped FROM {db}.`Order` WHERE order_id = 2")[0]) == (
        "2024-01-04 09:00:00")


def test_birthdates_mdy_blank_zero(dirty):
    tgt, _ = dirty
    rows = dict(tgt.query(f"SELECT customer_id, birthdate FROM `{tgt.db}`.Customer"))
    assert str(rows[1]) == "1990-01-02" and str(rows[2]) == "1985-12-31"
    assert rows[3] is None and rows[4] is None


def test_empty_address_line2_is_null(dirty):
    tgt, _ = dirty
    rows = dict(tgt.query(f"SELECT customer_id, address_line2 FROM `{tgt.db}`.Customer"))
    assert rows[1] is None and rows[2] == "Apt 4"


def test_duplicates_merged_and_orderline_quantity(dirty):
    tgt, result = dirty
    assert result["files"]["customers.csv"]["merged"] == 1
    assert one(tgt, "SELECT COUNT(*) FROM {db}.Customer WHERE customer_id = 1") == (1,)
    assert one(tgt, "SELECT quantity, unit_price FROM {db}.OrderLine WHERE order_id = 1 "
                    "AND product_id = 1") == (3, Decimal("1234.56"))


def test_zip_with_several_city_names(dirty):
    tgt, result = dirty
    assert one(tgt, "SELECT city, state FROM {db}.City WHERE zip = '02134'") == ("Boston", "MA")
    assert result["city_conflicts"] == [{"zip": "02134", "chosen": "Boston, MA",
                                         "spellings": {"BOSTON CITY, MA": 1, "Boston, MA": 2}}]


def test_utf8_accents_and_bom(dirty):
    tgt, _ = dirty
    assert one(tgt, "SELECT first_name, last_name FROM {db}.Customer WHERE customer_id = 3") == (
        "Søren", "Østergaard")
    # the BOM did not break the header nor end up in the first id
    assert one(tgt, "SELECT MIN(customer_id) FROM {db}.Customer") == (1,)


def test_stock_kept_and_no_price_history(dirty):
    tgt, _ = dirty
    assert one(tgt, "SELECT quantity_on_hand FROM {db}.Product WHERE product_id = 4") == (0,)
    assert one(tgt, "SELECT COUNT(*) FROM {db}.PriceHistory") == (0,)


def test_rejects_recorded_with_file_line_raw_reason(dirty):
    tgt, result = dirty
    rows = tgt.query(f"SELECT file_name, line_no, raw_text, reason FROM `{tgt.etl_db}`.etl_reject "
                     "ORDER BY file_name, line_no")
    by_file = {}
    for name, line, raw, reason in rows:
        by_file.setdefault(name, []).append((line, raw, reason))
    assert [(line, reason) for line, _raw, reason in by_file["customers.csv"]] == [
        (7, "invalid birthdate '13/45/1990'"), (8, "wrong column count: 6 instead of 10")]
    assert by_file["customers.csv"][1][1] == "6,Too,Few,Austin,TX,78701"
    assert [line for line, _r, _why in by_file["orders.csv"]] == [4, 5]
    assert "orphan reference: customer id 99" in by_file["orders.csv"][0][2]
    assert by_file["products.csv"] == [(4, "3,Broken,N/A,5", "unparseable price 'N/A'")]
    # orderlines: 2,3 (product 3 rejected), 3,1 (order 3 rejected), "1" (column count)
    assert [line for line, _r, _why in by_file["orderlines.csv"]] == [7, 8, 11]
    for name, counts in result["files"].items():
        assert counts["read"] == counts["loaded"] + counts["merged"] + counts["rejected"], name
        assert counts["rejected"] == len(by_file.get(name, []))


# ---------------------------------------------------------------- generated data
def test_generated_files_reconcile_with_manifest(target, tmp_path):
    manifest = generate(tmp_path, 4000, seed=5)
    result = run_etl(target.params(tmp_path))
    for name, expected in manifest["files"].items():
        got = result["files"][name]
        assert {k: got[k] for k in expected} == expected, name
    counts = target.counts()
    for table, rows in manifest["tables"].items():
        assert counts[table] == rows, table
    assert target.query(f"SELECT SUM(quantity) FROM `{target.db}`.OrderLine")[0][0] == (
        manifest["units"])
    rejected = sum(f["rejected"] for f in manifest["files"].values())
    assert target.query(f"SELECT COUNT(*) FROM `{target.etl_db}`.etl_reject")[0][0] == rejected
    audit = target.query(f"SELECT file_name, sha256, rows_read FROM `{target.etl_db}`.etl_file")
    assert {row[0]: row[2] for row in audit} == {
        name: f["read"] for name, f in manifest["files"].items()}
    assert [p["phase"] for p in result["phases"]] == [
        "read", "fingerprint", "extract", "transform", "apply", "analyze"]
    assert all(p["rows_per_second"] >= 0 for p in result["phases"])


def test_rerun_is_a_noop_that_writes_nothing(target, tmp_path):
    generate(tmp_path, 2000, seed=6)
    first = run_etl(target.params(tmp_path))
    assert first["changed"] and first["data_changed"]
    gtid, before = target.gtid(), target.checksums()
    again = run_etl(target.params(tmp_path))
    assert not again["changed"] and not again["data_changed"]
    assert again["run_id"] == first["run_id"]
    assert target.gtid() == gtid  # not one binlog event
    assert target.checksums() == before
    forced = run_etl(target.params(tmp_path, force=True))
    assert forced["changed"] and not forced["data_changed"]
    assert target.checksums() == before


def test_check_mode_writes_nothing(target, tmp_path):
    generate(tmp_path / "a", 1500, seed=7)
    generate(tmp_path / "b", 1500, seed=8)
    gtid = target.gtid()
    preview = run_etl(target.params(tmp_path / "a"), check_mode=True)
    assert preview["changed"] and preview["data_changed"] and preview["run_id"] is None
    assert target.gtid() == gtid
    assert set(target.counts().values()) == {0}
    assert target.query(f"SELECT COUNT(*) FROM information_schema.TABLES "
                        f"WHERE TABLE_SCHEMA = '{target.etl_db}'")[0][0] == 0
    loaded = run_etl(target.params(tmp_path / "a"))
    assert preview["tables"] == loaded["tables"]
    gtid, before = target.gtid(), target.checksums()
    preview = run_etl(target.params(tmp_path / "b", max_delete_percent=100), check_mode=True)
    assert preview["data_changed"]
    changes = preview["tables"]["OrderLine"]
    assert changes["inserted"] + changes["deleted"] + changes["updated"] > 0
    assert target.gtid() == gtid and target.checksums() == before
    diff = etl.diff_text(preview)
    assert "OrderLine: " in diff["before"] and "inserted" in diff["after"]


def test_changed_files_reload_equals_fresh_load(mariadb_server, target, tmp_path):
    """With the deletes allowed (max_delete_percent: 100, delete_rejected), a reload ends as a
    fresh load of the new files -- except the unit price of order lines both loads hold, which
    stays the price they were sold at."""
    generate(tmp_path / "a", 3000, seed=9)
    generate(tmp_path / "b", 2500, seed=10)  # other sizes and values: deletes, updates, inserts
    everything = dict(max_delete_percent=100, delete_rejected=True)
    run_etl(target.params(tmp_path / "a"))
    lines_a = dict(((o, p), price) for o, p, price in target.query(
        f"SELECT order_id, product_id, unit_price FROM `{target.db}`.OrderLine"))
    # the application changes prices meanwhile (the triggers write PriceHistory)
    conn = mariadb_server.connect(database=target.db)
    with conn.cursor() as cursor:
        cursor.execute("UPDATE Product SET current_price = current_price + 1 "
                       "WHERE product_id <= 3")
    conn.close()
    assert target.counts()["PriceHistory"] == 3
    result = run_etl(target.params(tmp_path / "b", **everything))
    changes = result["tables"]
    assert changes["OrderLine"]["deleted"] > 0 and changes["OrderLine"]["inserted"] > 0
    assert changes["Customer"]["updated"] > 0 and changes["Product"]["updated"] > 0
    fresh = new_target(mariadb_server)
    run_etl(fresh.params(tmp_path / "b"))
    assert target.checksums(unit_price=False) == fresh.checksums(unit_price=False)
    fresh_prices = dict(((o, p), price) for o, p, price in fresh.query(
        f"SELECT order_id, product_id, unit_price FROM `{fresh.db}`.OrderLine"))
    for (o, p, price) in target.query(f"SELECT order_id, product_id, unit_price "
                                      f"FROM `{target.db}`.OrderLine"):
        assert price == lines_a.get((o, p), fresh_prices[(o, p)]), (o, p)
    # rows of vanished products are gone; every price change of a kept product is recorded
    assert target.query(f"SELECT COUNT(*) FROM `{target.db}`.PriceHistory h LEFT JOIN "
                        f"`{target.db}`.Product p USING (product_id) "
                        "WHERE p.product_id IS NULL")[0][0] == 0
    assert changes["PriceHistory"]["inserted"] > 0
    # back to the first files: again equal to a fresh load
    run_etl(target.params(tmp_path / "a", **everything))
    fresh_a = new_target(mariadb_server)
    run_etl(fresh_a.params(tmp_path / "a"))
    assert target.checksums(unit_price=False) == fresh_a.checksums(unit_price=False)


def test_triggers_stand_aside_during_the_load(mariadb_server, target, tmp_path):
    """Stock is the file's, unit prices are the products', no PriceHistory -- and the triggers
    still work for the application afterwards."""
    manifest = generate(tmp_path, 2000, seed=12)
    run_etl(target.params(tmp_path))
    data = {}
    for line in (tmp_path / "products.csv").read_text().splitlines()[1:]:
        data[int(line.split(",")[0])] = line
    wrong = target.query(f"SELECT COUNT(*) FROM `{target.db}`.OrderLine l JOIN "
                         f"`{target.db}`.Product p USING (product_id) "
                         "WHERE l.unit_price <> p.current_price")[0][0]
    assert wrong == 0
    assert target.counts()["PriceHistory"] == 0
    assert target.counts()["OrderLine"] == manifest["tables"]["OrderLine"]
    stock = dict(target.query(f"SELECT product_id, quantity_on_hand FROM `{target.db}`.Product"))
    for pid, qty in stock.items():
        raw_qty = data[pid].rsplit(",", 1)[1].strip().strip('"').replace(",", "")
        if '"' in data[pid].rsplit(",", 2)[-1] or not raw_qty.isdigit():
            continue  # thousands separator inside quotes: checked by the unit tests
        assert qty == int(raw_qty), pid
    conn = mariadb_server.connect(database=target.db)
    with conn.cursor() as cursor:  # the application's session: triggers active
        cursor.execute("UPDATE Product SET current_price = current_price + 1 "
                       "WHERE product_id = %s", (min(stock),))
        cursor.execute("SELECT COUNT(*) FROM PriceHistory")
        assert cursor.fetchone()[0] == 1
    conn.close()


INJECTIONS = [
    "Robert'); DROP TABLE Customer;--",
    "back\\slash \\N \\t",
    "tab\there",
    "%s %(x)s {db}",
    "`; SELECT 1; --",
    "\"quoted\" inside",
    "💥 emoji ñ",
]


def test_injection_payloads_are_stored_literally(target, tmp_path):
    customers = []
    for index, payload in enumerate(INJECTIONS, start=1):
        field = '"' + payload.replace('"', '""') + '"'
        customers.append(f"{index},{field},{field},{field},MA,0{2100 + index},{field},{field},"
                         f"{field},")
    products = ["1," + '"' + INJECTIONS[0].replace('"', '""') + '"' + ",1.00,1"]
    folder = write_files(tmp_path, customers=customers, products=products)
    result = run_etl(target.params(folder))
    assert result["files"]["customers.csv"]["rejected"] == 0, result["rejects"]
    rows = target.query(f"SELECT customer_id, last_name, address_line1, address_line2, email "
                        f"FROM `{target.db}`.Customer ORDER BY customer_id")
    for (cid, *values), payload in zip(rows, INJECTIONS, strict=True):
        expected = payload.strip().strip('"').strip()
        assert values == [expected] * 4, cid
    assert target.query(f"SELECT name FROM `{target.db}`.Product")[0][0] == INJECTIONS[0]
    assert target.counts()["Customer"] == len(INJECTIONS)


@pytest.mark.parametrize("option", ["database", "etl_database"])
def test_database_names_are_validated(mariadb_server, tmp_path, option):
    conn = mariadb_server.connect()
    try:
        with pytest.raises(etl.EtlError, match=f"^{option}: invalid database name"):
            etl.run(conn, str(tmp_path), **{option: "pos`; DROP DATABASE x; --"})
    finally:
        conn.close()


@pytest.mark.parametrize("case", ["wrong_header", "binary", "not_csv_text", "missing"])
def test_bad_files_fail_clearly_and_load_nothing(target, tmp_path, case):
    folder = write_files(tmp_path)
    if case == "wrong_header":
        (folder / "customers.csv").write_text("id,first,last\n1,a,b\n")
        pattern = r"customers\.csv: wrong header 'id,first,last'"
    elif case == "binary":
        (folder / "orderlines.csv").write_bytes(bytes(range(256)) * 4)
        pattern = r"orderlines\.csv: not a CSV text file"
    elif case == "not_csv_text":
        (folder / "orders.csv").write_bytes(b"OID,CID,Ordered,Shipped\n1,1,\xff\xfe,\n")
        pattern = r"orders\.csv: not a UTF-8 CSV text file"
    else:
        (folder / "products.csv").unlink()
        pattern = r"products\.csv: file not found"
    gtid = target.gtid()
    with pytest.raises(etl.EtlError, match=pattern) as error:
        run_etl(target.params(folder))
    assert "Traceback" not in str(error.value)
    assert set(target.counts().values()) == {0}
    assert target.gtid() == gtid


def test_module_documentation_covers_the_login_options_and_every_returned_key(target, tmp_path):
    """ansible-doc renders the module with the login doc fragment, and every key a load and a
    no-op rerun return is documented in RETURN (the options are checked against the argument
    spec by scripts/check_specs.py)."""
    completed = subprocess.run(
        [str(Path(sys.executable).with_name("ansible-doc")), "-M", "library", "--json",
         "mariadb_csv_etl"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
        check=True, env=dict(os.environ, ANSIBLE_CONFIG=str(REPO_ROOT / "ansible.cfg")))
    doc = json.loads(completed.stdout)["mariadb_csv_etl"]
    assert {"data_dir", "login_unix_socket", "login_password"} <= set(doc["doc"]["options"])
    folder = write_files(tmp_path / "data")
    for result in (run_etl(target.params(folder)), run_etl(target.params(folder))):
        assert set(result) - {"changed"} <= set(doc["return"]), result.keys()


def test_runs_as_the_pos_etl_account_with_its_grants_only(mariadb_server, target, tmp_path):
    """The conventions' grants (SELECT, INSERT, UPDATE, DELETE, LOCK TABLES on the POS tables,
    ALL on the ETL database) are enough, over TCP, for a load and a reload."""
    password = secrets.token_urlsafe(18)
    user = f"etl_{target.db}"
    mariadb_server.client(
        f"CREATE USER '{user}'@'%' IDENTIFIED BY '{password}';"
        f"GRANT SELECT, INSERT, UPDATE, DELETE, LOCK TABLES ON `{target.db}`.* TO '{user}'@'%';"
        f"GRANT ALL ON `{target.etl_db}`.* TO '{user}'@'%';")
    try:
        generate(tmp_path / "a", 800, seed=41)
        generate(tmp_path / "b", 900, seed=42)
        account = {"login_user": user, "login_password": password, "login_host": "127.0.0.1",
                   "login_port": mariadb_server.port}
        for folder in ("a", "b"):
            params = target.params(tmp_path / folder, max_delete_percent=100,
                                   delete_rejected=True)
            params.pop("login_unix_socket")
            result = run_etl({**params, **account})
            assert result["data_changed"]
        fresh = new_target(mariadb_server)
        run_etl(fresh.params(tmp_path / "b"))
        assert target.checksums(unit_price=False) == fresh.checksums(unit_price=False)
    finally:
        mariadb_server.client(f"DROP USER IF EXISTS '{user}'@'%'")
