"""Cleaning rules of the CSV ETL, one test per dirty-value class (pure Python, no database).

The end-to-end counterparts (the same classes through MariaDB) are in test_etl_module.py.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mariadb_pos import etl_clean
from mariadb_pos.etl_clean import (
    EtlInputError,
    RowError,
    clean_date,
    clean_price,
    clean_text,
    clean_timestamp,
    clean_zip,
)

from tests.support.etl_target import write_files
from tests.support.pos_csv_generator import generate


def extract(folder, **options):
    return etl_clean.extract(etl_clean.read_files(
        {key: str(folder / name) for key, (name, _h) in etl_clean.FILES.items()}), **options)


@pytest.mark.parametrize(("raw", "expected"), [
    ("02134", "02134"), ("2134", "02134"), ("501", "00501"), (" 2134 ", "02134"),
    ('"2134"', "02134"), ("02134-1234", "02134"), ("021341234", "02134"),
    ("2134-1234", "02134"), ("90210\r", "90210"),
])
def test_zip_lost_leading_zeros_and_zip4(raw, expected):
    assert clean_zip(raw) == expected


@pytest.mark.parametrize("raw", ["ABCDE", "", "123456", "0", "02134-12", "Z02134", "2-1"])
def test_zip_unparseable_is_rejected(raw):
    with pytest.raises(RowError, match="ZIP"):
        clean_zip(raw)


@pytest.mark.parametrize(("raw", "expected"), [
    ("$1,234.56", "1234.56"), ("1234.56", "1234.56"), ('"$12.5"', "12.50"), ("$ 7", "7.00"),
    ("'9.99'", "9.99"), ("  3.10 ", "3.10"), ("$1,000,000.00", "1000000.00"), (".5", "0.50"),
    ('""$4.00""', "4.00"),
])
def test_price_currency_separators_and_quotes(raw, expected):
    assert clean_price(raw) == expected


@pytest.mark.parametrize("raw", ["N/A", "12.3.4", "$-", "free", "", "-5.00", "1,23.00", "1.234"])
def test_price_unparseable_is_rejected(raw):
    with pytest.raises(RowError, match="price"):
        clean_price(raw)


@settings(max_examples=60, deadline=None)
@given(cents=st.integers(min_value=0, max_value=9_999_999_999),
       dollar=st.booleans(), thousands=st.booleans(), quoted=st.booleans())
def test_price_roundtrip_property(cents, dollar, thousands, quoted):
    whole, rest = divmod(cents, 100)
    text = (f"{whole:,}" if thousands else str(whole)) + f".{rest:02d}"
    if dollar:
        text = "$" + text
    if quoted:
        text = f'"{text}"'
    assert clean_price(text) == f"{whole}.{rest:02d}"


@pytest.mark.parametrize(("raw", "expected"), [
    ('"Boston"', "Boston"), ('  "Zoë"  ', "Zoë"), ("  Anna ", "Anna"), ("O'Brien", "O'Brien"),
    ("Smith\r", "Smith"), ('""Dvořák""', "Dvořák"),
])
def test_stray_quotes_whitespace_and_trailing_cr(raw, expected):
    assert clean_text(raw) == expected


@pytest.mark.parametrize(("raw", "expected"), [
    ("1/2/1990", "1990-01-02"), ("12/31/1985", "1985-12-31"), ("1990-01-02", "1990-01-02"),
    ("", None), ("   ", None), ("0000-00-00", None),
])
def test_birthdates(raw, expected):
    assert clean_date(raw, "birthdate") == expected


@pytest.mark.parametrize("raw", ["13/1/1990", "2/30/1990", "yesterday", "1990-13-01"])
def test_bad_birthdates_are_rejected(raw):
    with pytest.raises(RowError, match="birthdate"):
        clean_date(raw, "birthdate")


@pytest.mark.parametrize(("raw", "expected"), [
    ("2024-01-02 03:04:05", "2024-01-02 03:04:05"), (" 2024-1-2 3:04 ", "2024-01-02 03:04:00"),
    ("Cancelled", None), ("cancelled", None), ("CANCELED", None), ("", None),
    ("1/2/2024 10:00:00", "2024-01-02 10:00:00"), ("0000-00-00 00:00:00", None),
])
def test_shipped_timestamps_and_cancelled(raw, expected):
    assert clean_timestamp(raw, "ship date", True) == expected


def test_order_date_is_required():
    with pytest.raises(RowError, match="order date"):
        clean_timestamp("Cancelled", "order date", False)
    with pytest.raises(RowError, match="invalid order date"):
        clean_timestamp("2024-02-30 10:00:00", "order date", False)


def test_bom_crlf_duplicates_city_conflict_and_accounting(tmp_path):
    folder = write_files(
        tmp_path, bom=True, newline="\r\n",
        customers=[
            '1,"""Zoë""",Smith,Boston,MA,2134,1 Main St,,a@example.org,1/2/1990',
            '1,"""Zoë""",Smith,Boston,MA,2134,1 Main St,,a@example.org,1/2/1990',  # duplicate
            "2,Ann,Lee,Boston,MA,02134-0001,2 Main St,Apt 4,b@example.org,",
            "3,Bo,Ray,BOSTON CITY,MA,02134,3 Main St,,c@example.org,0000-00-00",
            "4,Cy,Oh,Austin,TX,78701,4 Main St,,d@example.org",  # 9 columns
            "1,Other,Name,Boston,MA,02134,9 Main St,,z@example.org,",  # conflicting id
        ],
        products=['1,Widget,"$1,234.56","1,200"', "2,Gadget,N/A,5"],
        orders=["1,1,2024-01-02 10:00:00,Cancelled", "2,99,2024-01-02 10:00:00,",
                "3,2,2024-01-03 10:00:00,2024-01-04 09:00:00"],
        orderlines=["1,1", "1,1", "1,1", "3,1", "3,2", "2,1", "1"],
    )
    data = extract(folder)
    stats = data.stats
    for item in stats.values():
        assert item.read == item.loaded + item.merged + item.rejected
    assert (stats["customers"].loaded, stats["customers"].merged,
            stats["customers"].rejected) == (3, 1, 2)
    assert data.customers[1][1] == "Zoë" and data.customers[1][8] == "02134"
    assert data.customers[2][5] == "Apt 4" and data.customers[1][5] is None
    assert data.customers[3][7] is None and data.customers[1][7] == "1990-01-02"
    # Boston (2 customers) beats BOSTON CITY (1) for ZIP 02134, and the conflict is reported
    assert data.cities["02134"] == ("02134", "Boston", "MA")
    assert data.city_conflicts == [{"zip": "02134", "chosen": "Boston, MA",
                                    "spellings": {"BOSTON CITY, MA": 1, "Boston, MA": 2}}]
    assert data.products[1] == (1, "Widget", "1234.56", 1200)
    assert 2 not in data.products
    assert data.orders[1][3] is None
    # order 2 is an orphan (customer 99); lines of it and of product 2 (rejected) too
    assert data.orderlines == {(1, 1): [1, 1, 3, "1234.56"], (3, 1): [3, 1, 1, "1234.56"]}
    lines = stats["orderlines"]
    assert (lines.read, lines.loaded, lines.merged, lines.rejected) == (7, 2, 2, 3)
    reasons = [reject[2] for reject in lines.rejects]
    assert any("product id 2" in r for r in reasons) and any("order id 2" in r for r in reasons)
    assert any("wrong column count" in r for r in reasons)
    raw = stats["customers"].rejects
    assert raw[0][0] == 6 and raw[0][1].startswith("4,Cy,Oh")
    assert "already defined" in raw[1][2] and raw[1][0] == 7


def test_orderlines_with_quotes_take_the_general_path(tmp_path):
    folder = write_files(tmp_path, orderlines=['"1","1"', "1,1", '"1",1'])
    data = extract(folder)
    assert data.orderlines[(1, 1)][2] == 3
    assert data.stats["orderlines"].merged == 2


def test_wrong_header_names_the_file(tmp_path):
    folder = write_files(tmp_path)
    (folder / "orders.csv").write_text("OrderID,CID,Ordered,Shipped\n1,1,2024-01-02,\n")
    with pytest.raises(EtlInputError, match=r"orders\.csv: wrong header"):
        extract(folder)


def test_binary_and_non_utf8_files_are_refused(tmp_path):
    folder = write_files(tmp_path)
    (folder / "products.csv").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    with pytest.raises(EtlInputError, match=r"products\.csv: not a CSV text file"):
        extract(folder)
    (folder / "products.csv").write_bytes("ID,Name,Price,Quantity on Hand\n1,Caf\xe9,1,1\n"
                                          .encode("latin-1"))
    with pytest.raises(EtlInputError, match=r"not a UTF-8 CSV text file .* line 2"):
        extract(folder)


def test_generator_manifest_matches_extract(tmp_path):
    """The seeded generator's independent expectations agree with the cleaner's accounting."""
    manifest = generate(tmp_path, 3000, seed=11)
    data = extract(tmp_path)
    for item in data.stats.values():
        expected = manifest["files"][item.name]
        assert (item.read, item.loaded, item.merged, item.rejected) == (
            expected["read"], expected["loaded"], expected["merged"], expected["rejected"])
    assert len(data.cities) == manifest["tables"]["City"]
    assert len(data.city_conflicts) == manifest["city_conflicts"]
    assert sum(entry[2] for entry in data.orderlines.values()) == manifest["units"]
