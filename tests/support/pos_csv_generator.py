"""Seeded generator of the course's four CSV files with dirty values injected at known rates.

Writes customers.csv, products.csv, orders.csv, orderlines.csv (the course's headers) and
manifest.json: what a correct ETL must end with, computed here from what was generated -- not by
the ETL's own code -- so tests can reconcile the ETL's counts against an independent answer.

    .venv/bin/python -m tests.support.pos_csv_generator --out DIR --orderlines N --seed S

Sizes follow the order lines: orders = N/10, customers = orders/4, products = N/200 (at least a
few of each). Faults (rates in ``RATES``): ZIP codes without their leading zero and ZIP+4 forms,
prices with "$", thousands separators and stray quotes, stray double quotes and whitespace around
names and cities, accented UTF-8 names, a BOM at the start of customers.csv, CRLF line ends in
products.csv and orders.csv, Shipped = "Cancelled", birthdates as m/d/Y, Y-m-d, blank or
0000-00-00, empty address line 2, fully duplicated rows, ZIPs spelled with a second city name
(always the minority spelling), and rows that must be rejected (wrong column count, unparseable
price/date/ZIP, orphan references).
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import random
from pathlib import Path

RATES = dict(
    zip_plus4=0.05,          # customers: 02134-1234 or 021341234
    zip_lost_zero=0.8,       # customers whose ZIP starts with 0: written as an integer
    stray_quotes=0.05,       # "Boston" with literal quotes, per name/city field
    whitespace=0.05,         # surrounding spaces, per field
    empty_line2=0.7,
    birth_blank=0.1, birth_zero=0.1, birth_mdy=0.4,
    city_variant=0.3,        # share of ZIPs (with >= 3 customers) that get one other spelling
    duplicate=0.02,          # fully duplicated rows (customers, products, orders)
    bad_columns=0.004,       # customers/orders/orderlines rows with a wrong column count
    bad_birthdate=0.004, bad_zip=0.003,
    price_dollar=0.3, price_quoted=0.1, bad_price=0.02,
    cancelled=0.05, unshipped=0.05, bad_order_date=0.003, orphan_customer=0.005,
    orphan_product=0.002,
)

FIRST = ["Anna", "José", "Zoë", "François", "Björn", "Chloé", "Mia", "Noah", "Liam", "Olivia",
         "Åsa", "Renée", "Søren", "Ines", "Lukas", "Amélie", "Mateo", "Emma", "Jürgen", "Ava"]
LAST = ["Smith", "Müller", "Núñez", "O'Brien", "García", "Johnson", "Lefèvre", "Kowalski",
        "Brown", "Dvořák", "Nguyen", "Østergaard", "Williams", "Jones", "Łukasiewicz", "Miller"]
CITIES = ["Springfield", "Riverside", "Franklin", "Greenville", "Bristol", "Clinton", "Fairview",
          "Salem", "Madison", "Georgetown", "Arlington", "Ashland", "Dover", "Oxford", "Jackson",
          "Burlington", "Manchester", "Milton", "Newport", "Auburn", "Québec Falls", "San José"]
STATES = ["MA", "NH", "VT", "CT", "RI", "NJ", "NY", "PA", "OH", "TX", "CA", "WA", "IL", "FL"]
STREETS = ["Main St", "Oak Ave", "Maple Rd", "Cedar Ln", "Elm St", "Pine Ct", "Washington Blvd"]
WORDS = ["Widget", "Gadget", "Sprocket", "Gizmo", "Doohickey", "Cog", "Lever", "Bracket",
         "Flange", "Spanner", "Thingamajig", "Crème", "Piñata"]

HEADERS = {
    "customers.csv": ["ID", "FN", "LN", "CT", "ST", "ZP", "S1", "S2", "EM", "BD"],
    "products.csv": ["ID", "Name", "Price", "Quantity on Hand"],
    "orders.csv": ["OID", "CID", "Ordered", "Shipped"],
    "orderlines.csv": ["OID", "PID"],
}


class _Out:
    """Collects CSV rows as text lines (so duplicates are byte-identical)."""

    def __init__(self, newline: str):
        self.lines: list[str] = []
        self.newline = newline
        self._buf: list[str] = []
        self._writer = csv.writer(self, lineterminator="")

    def write(self, text: str) -> None:
        self._buf.append(text)

    def row(self, fields: list) -> str:
        self._writer.writerow(fields)
        line = "".join(self._buf)
        self._buf.clear()
        self.lines.append(line)
        return line

    def raw(self, line: str) -> None:
        self.lines.append(line)

    def text(self) -> str:
        return "".join(line + self.newline for line in self.lines)


def _dirty(rng: random.Random, value: str) -> str:
    if rng.random() < RATES["stray_quotes"]:
        value = f'"{value}"'
    if rng.random() < RATES["whitespace"]:
        value = f"  {value} "
    return value


def generate(out: Path, orderlines: int, seed: int, write_manifest: bool = True) -> dict:
    """Write the four files into ``out`` and return the manifest (also written as JSON unless
    ``write_manifest`` is false: a folder the ETL reads must hold the four files only)."""
    rng = random.Random(seed)
    out.mkdir(parents=True, exist_ok=True)
    n_orders = max(10, orderlines // 10)
    n_customers = max(3, n_orders // 4)
    n_products = max(20, orderlines // 200)  # enough (order, product) pairs for any size
    n_zips = max(2, n_customers // 6)
    expect = {name: dict(read=0, loaded=0, merged=0, rejected=0) for name in HEADERS}

    # ---- ZIP codes: about a third of them with a leading zero (New England)
    zips = {}
    while len(zips) < n_zips:
        number = rng.randint(501, 9999) if rng.random() < 0.35 else rng.randint(10000, 99999)
        zips.setdefault("%05d" % number, (rng.choice(CITIES), rng.choice(STATES)))
    zip_list = sorted(zips)

    # ---- customers
    customers = []  # dicts; "ok" says whether the ETL must accept the row
    for cid in range(1, n_customers + 1):
        zip5 = rng.choice(zip_list)
        kind = rng.random()
        bad = None
        if kind < RATES["bad_columns"]:
            bad = "columns"
        elif kind < RATES["bad_columns"] + RATES["bad_birthdate"]:
            bad = "birthdate"
        elif kind < RATES["bad_columns"] + RATES["bad_birthdate"] + RATES["bad_zip"]:
            bad = "zip"
        customers.append(dict(id=cid, zip=zip5, city=zips[zip5][0], state=zips[zip5][1],
                              bad=bad))
    by_zip: dict[str, list] = {}
    for customer in customers:
        if customer["bad"] is None:
            by_zip.setdefault(customer["zip"], []).append(customer)
    conflicts = 0
    for zip5 in sorted(by_zip):
        group = by_zip[zip5]
        if len(group) >= 3 and rng.random() < RATES["city_variant"]:
            variant = rng.choice(group[1:])
            variant["city"] = variant["city"].upper() + " CITY"
            conflicts += 1

    out_c = _Out("\n")
    out_c.row(HEADERS["customers.csv"])
    for customer in customers:
        cid, zip5 = customer["id"], customer["zip"]
        zip_text = zip5
        if zip5.startswith("0") and rng.random() < RATES["zip_lost_zero"]:
            zip_text = str(int(zip5))
        if rng.random() < RATES["zip_plus4"]:
            plus4 = "%04d" % rng.randint(0, 9999)
            zip_text = (zip_text + "-" + plus4) if rng.random() < 0.5 else (zip5 + plus4)
        draw = rng.random()
        year, month, day = rng.randint(1940, 2005), rng.randint(1, 12), rng.randint(1, 28)
        if draw < RATES["birth_blank"]:
            birth = ""
        elif draw < RATES["birth_blank"] + RATES["birth_zero"]:
            birth = "0000-00-00"
        elif draw < RATES["birth_blank"] + RATES["birth_zero"] + RATES["birth_mdy"]:
            birth = "%d/%d/%d" % (month, day, year)
        else:
            birth = "%04d-%02d-%02d" % (year, month, day)
        line2 = "" if rng.random() < RATES["empty_line2"] else "Apt %d" % rng.randint(1, 999)
        fields = [str(cid), _dirty(rng, rng.choice(FIRST)), _dirty(rng, rng.choice(LAST)),
                  _dirty(rng, customer["city"]), customer["state"], zip_text,
                  "%d %s" % (rng.randint(1, 9999), rng.choice(STREETS)), line2,
                  "customer%d@example.org" % cid, birth]
        if customer["bad"] == "columns":
            fields = fields[:7]
        elif customer["bad"] == "birthdate":
            fields[9] = "%d/%d/%d" % (rng.randint(13, 19), rng.randint(1, 28), year)
        elif customer["bad"] == "zip":
            fields[5] = f"Z{zip5}"
        line = out_c.row(fields)
        expect["customers.csv"]["read"] += 1
        if customer["bad"]:
            expect["customers.csv"]["rejected"] += 1
            continue
        expect["customers.csv"]["loaded"] += 1
        if rng.random() < RATES["duplicate"]:
            out_c.raw(line)
            expect["customers.csv"]["read"] += 1
            expect["customers.csv"]["merged"] += 1
    good_customers = [c["id"] for c in customers if c["bad"] is None]
    cities = {c["zip"] for c in customers if c["bad"] is None}

    # ---- products
    out_p = _Out("\r\n")
    out_p.row(HEADERS["products.csv"])
    good_products = []
    for pid in range(1, n_products + 1):
        cents = rng.randint(50, 250000)
        price = "%d.%02d" % divmod(cents, 100)
        draw = rng.random()
        if draw < RATES["price_dollar"]:
            price = "$" + f"{cents // 100:,}" + ".%02d" % (cents % 100)
        elif draw < RATES["price_dollar"] + RATES["price_quoted"]:
            price = f'"${price}"'
        bad = rng.random() < RATES["bad_price"]
        if bad:
            price = rng.choice(["N/A", "12.3.4", "$-", "free"])
        quantity = rng.randint(0, 5000)
        qty_text = f"{quantity:,}" if quantity >= 1000 and rng.random() < 0.3 \
            else str(quantity)
        name = _dirty(rng, "%s %s %d" % (rng.choice(WORDS), rng.choice(WORDS), pid))
        line = out_p.row([str(pid), name, price, qty_text])
        expect["products.csv"]["read"] += 1
        if bad:
            expect["products.csv"]["rejected"] += 1
            continue
        good_products.append(pid)
        expect["products.csv"]["loaded"] += 1
        if rng.random() < RATES["duplicate"]:
            out_p.raw(line)
            expect["products.csv"]["read"] += 1
            expect["products.csv"]["merged"] += 1
    good_product_set = set(good_products)
    all_products = list(range(1, n_products + 1))

    # ---- orders
    out_o = _Out("\r\n")
    out_o.row(HEADERS["orders.csv"])
    good_customer_set = set(good_customers)
    good_orders = set()
    for oid in range(1, n_orders + 1):
        draw = rng.random()
        cid = rng.randint(1, n_customers)
        bad = None
        if draw < RATES["orphan_customer"]:
            cid = n_customers + rng.randint(1, 1000)
            bad = "orphan"
        elif draw < RATES["orphan_customer"] + RATES["bad_order_date"]:
            bad = "date"
        elif draw < RATES["orphan_customer"] + RATES["bad_order_date"] + RATES["bad_columns"]:
            bad = "columns"
        elif cid not in good_customer_set:
            bad = "orphan of a rejected customer"
        placed = "%04d-%02d-%02d %02d:%02d:%02d" % (
            rng.randint(2015, 2024), rng.randint(1, 12), rng.randint(1, 28),
            rng.randint(0, 23), rng.randint(0, 59), rng.randint(0, 59))
        draw = rng.random()
        if draw < RATES["cancelled"]:
            shipped = rng.choice(["Cancelled", "cancelled", "CANCELLED"])
        elif draw < RATES["cancelled"] + RATES["unshipped"]:
            shipped = ""
        else:
            # the next day at noon: always after the order (the ETL rejects shipped-before-ordered)
            next_day = datetime.date.fromisoformat(placed[:10]) + datetime.timedelta(days=1)
            shipped = next_day.isoformat() + " 12:00:00"
        if bad == "date":
            placed = placed[:5] + "13" + placed[7:]
        fields = [str(oid), str(cid), placed, shipped]
        if bad == "columns":
            fields.append("extra")
        line = out_o.row(fields)
        expect["orders.csv"]["read"] += 1
        if bad:
            expect["orders.csv"]["rejected"] += 1
            continue
        good_orders.add(oid)
        expect["orders.csv"]["loaded"] += 1
        if rng.random() < RATES["duplicate"]:
            out_o.raw(line)
            expect["orders.csv"]["read"] += 1
            expect["orders.csv"]["merged"] += 1

    # ---- order lines: one line per unit
    out_l = _Out("\n")
    out_l.row(HEADERS["orderlines.csv"])
    pairs = set()
    written = 0
    units = 0
    oid = 1
    misses = 0
    while written < orderlines:
        pid = rng.choice(all_products)
        quantity = rng.choice((1, 1, 1, 2, 2, 3, 4))
        quantity = min(quantity, orderlines - written)
        if (oid, pid) in pairs:
            oid = oid % n_orders + 1
            misses += 1
            if misses > 100 * n_orders:
                raise RuntimeError("no (order, product) pair left: raise n_orders/n_products")
            continue
        misses = 0
        draw = rng.random()
        if draw < RATES["orphan_product"]:
            for _ in range(quantity):
                out_l.row([str(oid), str(n_products + rng.randint(1, 100))])
            expect["orderlines.csv"]["rejected"] += quantity
        elif draw < RATES["orphan_product"] + RATES["bad_columns"]:
            out_l.row([str(oid), str(pid), "1"])
            expect["orderlines.csv"]["rejected"] += 1
            quantity = 1
        else:
            for _ in range(quantity):
                out_l.row([str(oid), str(pid)])
            if oid in good_orders and pid in good_product_set:
                pairs.add((oid, pid))
                expect["orderlines.csv"]["loaded"] += 1
                expect["orderlines.csv"]["merged"] += quantity - 1
                units += quantity
            else:
                pairs.add((oid, pid))
                expect["orderlines.csv"]["rejected"] += quantity
        written += quantity
        expect["orderlines.csv"]["read"] += quantity
        if rng.random() < 0.3:
            oid = oid % n_orders + 1

    texts = {"customers.csv": "\ufeff" + out_c.text(), "products.csv": out_p.text(),
             "orders.csv": out_o.text(), "orderlines.csv": out_l.text()}
    for name, text in texts.items():
        (out / name).write_bytes(text.encode("utf-8"))
    manifest = dict(seed=seed, orderlines=orderlines, files=expect,
                    tables=dict(City=len(cities), Customer=expect["customers.csv"]["loaded"],
                                Product=expect["products.csv"]["loaded"],
                                Order=expect["orders.csv"]["loaded"],
                                OrderLine=expect["orderlines.csv"]["loaded"]),
                    units=units, city_conflicts=conflicts)
    if write_manifest:
        (out / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--orderlines", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    manifest = generate(args.out, args.orderlines, args.seed)
    print(json.dumps(manifest["tables"], sort_keys=True))


if __name__ == "__main__":
    main()
