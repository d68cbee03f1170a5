"""Property test of the CSV parsing (issue 12): random damage to random lines of a generated file
set -- quotes opened or inserted, characters dropped, commas and line breaks inserted, lines
blanked or doubled. Whatever the damage, every physical line is accounted for
(read = loaded + merged + rejected) and every loaded row is the reading of ONE physical line:
no loaded row holds a field of another line."""

from __future__ import annotations

import csv
import shutil
import tempfile
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mariadb_pos import etl_clean
from mariadb_pos.etl_clean import clean_price, clean_text, clean_timestamp

from tests.support.pos_csv_generator import generate

FILES = ("customers.csv", "products.csv", "orders.csv", "orderlines.csv")
DAMAGES = ("open_quote", "quote", "drop_char", "comma", "line_break", "blank", "double")


@pytest.fixture(scope="module")
def clean_texts(tmp_path_factory):
    folder = tmp_path_factory.mktemp("property")
    generate(folder, 600, seed=71)
    return {name: (folder / name).read_text(encoding="utf-8") for name in FILES}


def damage(line: str, kind: str, position: int) -> list[str]:
    spot = position % (len(line) + 1)
    if kind == "open_quote":
        commas = [i for i, char in enumerate(line) if char == ","]
        spot = commas[position % len(commas)] + 1 if commas else 0
        return [line[:spot] + '"' + line[spot:]]
    if kind == "quote":
        return [line[:spot] + '"' + line[spot:]]
    if kind == "drop_char":
        return [line[:spot] + line[spot + 1:]]
    if kind == "comma":
        return [line[:spot] + "," + line[spot:]]
    if kind == "line_break":
        return [line[:spot], line[spot:]]
    if kind == "blank":
        return [""]
    return [line, line]


def physical(text: str) -> list[str]:
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return lines[:-1] if lines[-1] == "" else lines


def single_line_fields(line: str) -> list[str]:
    return next(csv.reader([line]), [])


def from_one_line(lines: list[str], check) -> bool:
    """Some physical line alone, read as CSV, gives the row (``check`` compares)."""
    for line in lines:
        fields = single_line_fields(line)
        try:
            if check(fields):
                return True
        except (etl_clean.RowError, IndexError, ValueError):
            continue
    return False


def by_id(lines: list[str]) -> dict[str, list[str]]:
    index: dict[str, list[str]] = {}
    for line in lines[1:]:
        head = line.split(",", 1)[0].strip().strip('"').strip()
        index.setdefault(head, []).append(line)
    return index


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_damage_keeps_lines_apart_and_accounted(clean_texts, data):
    lines = {name: physical(text) for name, text in clean_texts.items()}
    for _ in range(data.draw(st.integers(min_value=1, max_value=8), label="damages")):
        name = data.draw(st.sampled_from(FILES), label="file")
        number = data.draw(st.integers(min_value=1, max_value=len(lines[name]) - 1),
                           label="line")
        kind = data.draw(st.sampled_from(DAMAGES), label="damage")
        position = data.draw(st.integers(min_value=0, max_value=200), label="position")
        lines[name][number:number + 1] = damage(lines[name][number], kind, position)
    folder = Path(tempfile.mkdtemp(prefix="etl-property-"))
    try:
        for name in FILES:
            (folder / name).write_text("".join(line + "\n" for line in lines[name]),
                                       encoding="utf-8")
        files = etl_clean.read_files({key: str(folder / name)
                                      for key, (name, _h) in etl_clean.FILES.items()})
        result = etl_clean.extract(files)
    finally:
        shutil.rmtree(folder)

    for stats in result.stats.values():
        assert stats.read == len(lines[stats.name]) - 1, stats.name
        assert stats.read == stats.loaded + stats.merged + stats.rejected, stats.name
        assert len({line for line, _raw, _why in stats.rejects}) == stats.rejected

    customers = by_id(lines["customers.csv"])
    for cid, row in result.customers.items():
        assert from_one_line(customers[str(cid)], lambda f, row=row: (
            len(f) == 10 and [clean_text(f[i]) for i in (1, 2, 8, 6)] == list(row[1:5])
            and (clean_text(f[7]) or None) == row[5])), row
    products = by_id(lines["products.csv"])
    for pid, row in result.products.items():
        assert from_one_line(products[str(pid)], lambda f, row=row: (
            len(f) == 4 and clean_text(f[1]) == row[1] and clean_price(f[2]) == row[2])), row
    orders = by_id(lines["orders.csv"])
    for oid, row in result.orders.items():
        assert from_one_line(orders[str(oid)], lambda f, row=row: (
            len(f) == 4 and int(clean_text(f[1])) == row[1]
            and clean_timestamp(f[2], "order date", False) == row[2])), row
    units = Counter()
    for line in lines["orderlines.csv"][1:]:
        fields = [clean_text(f) for f in single_line_fields(line)]
        if len(fields) == 2 and all(f.isdigit() for f in fields):
            units[(int(fields[0]), int(fields[1]))] += 1
    for pair, entry in result.orderlines.items():
        assert entry[2] <= units[pair], pair
