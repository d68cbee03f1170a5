"""Extract and clean the course's four CSV files (pure Python: no database, no Ansible).

Every physical input record ends in exactly one of three buckets, so that
``read == loaded + merged + rejected`` holds for every file:

* loaded   -- a clean row that becomes (part of) a row of the final schema;
* merged   -- an exact duplicate of an earlier row (for order lines: one more unit of a pair
              already seen, which becomes ``quantity``);
* rejected -- a row that cannot be loaded, with its line number and the reason; the raw text is
              fetched afterwards (see :func:`fetch_raw_lines`) so the fast path stays fast.

Cleaning decisions (documented in docs/etl.md):

* a byte-order mark at the start of a file is dropped; CRLF line ends are accepted; surrounding
  whitespace and stray double quotes around a value are removed;
* ZIP codes that lost their leading zeros are left-padded (2134 -> 02134); ZIP+4 forms keep the
  first five digits (02134-1234 / 021341234 -> 02134);
* prices lose currency signs, thousands separators and stray quotes ("$1,234.56" -> 1234.56);
* Shipped "Cancelled" (any case) or blank -> NULL; birthdates m/d/Y or Y-m-d, blank or
  0000-00-00 -> NULL; timestamps Y-m-d H:M[:S] (or m/d/Y H:M[:S]);
* an empty address line 2 -> NULL;
* one ZIP spelled with several (city, state) spellings: the most frequent spelling wins, ties go
  to the spelling seen first; every conflict is reported;
* the same id twice with different values: the first row wins, the later one is rejected.
"""

from __future__ import annotations

import contextlib
import csv
import datetime
import hashlib
import io
import re
import time
from collections import Counter

# File name -> exact header (after BOM removal and whitespace stripping of each name).
FILES = {
    "customers": ("customers.csv", ["ID", "FN", "LN", "CT", "ST", "ZP", "S1", "S2", "EM", "BD"]),
    "products": ("products.csv", ["ID", "Name", "Price", "Quantity on Hand"]),
    "orders": ("orders.csv", ["OID", "CID", "Ordered", "Shipped"]),
    "orderlines": ("orderlines.csv", ["OID", "PID"]),
}
FILE_ORDER = ("customers", "products", "orders", "orderlines")

# Default column widths of files/sql/001_base_tables.sql; the module reads the real ones from
# information_schema and passes them in, so a wider or narrower schema is honoured.
DEFAULT_LIMITS = {
    ("City", "city"): 100,
    ("Customer", "first_name"): 100,
    ("Customer", "last_name"): 100,
    ("Customer", "email"): 255,
    ("Customer", "address_line1"): 255,
    ("Customer", "address_line2"): 255,
    ("Product", "name"): 255,
}

MAX_ID = 4294967295          # INT UNSIGNED
MAX_INT = 2147483647         # INT (quantity_on_hand, quantity)
MAX_PRICE = 99999999.99      # DECIMAL(10,2)
NULL = None

_BOM = "\ufeff"
_ZIP_RE = re.compile(r"^(?:(\d{1,5})(?:-\d{4})?|(\d{9}))$")
_STATE_RE = re.compile(r"^[A-Za-z]{2}$")
_INT_RE = re.compile(r"^\d{1,3}(?:,\d{3})+$|^\d+$")
_PRICE_RE = re.compile(r"^(\d{1,3}(?:,\d{3})+|\d+)(?:\.(\d{1,2}))?$|^\.(\d{1,2})$")
_MDY_RE = re.compile(r"^(\d{1,2})/(\d{1,2})/(\d{4})$")
_YMD_RE = re.compile(r"^(\d{4})-(\d{1,2})-(\d{1,2})$")
_TS_RE = re.compile(r"^(\d{4})-(\d{1,2})-(\d{1,2})(?:[ T](\d{1,2}):(\d{2})(?::(\d{2}))?)?$")
_TS_MDY_RE = re.compile(r"^(\d{1,2})/(\d{1,2})/(\d{4})(?: (\d{1,2}):(\d{2})(?::(\d{2}))?)?$")
_TS_EXACT_RE = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$")
_CURRENCY = "$€£¥ "
_ZERO_DATES = ("0000-00-00", "0000-00-00 00:00:00", "00/00/0000")


class EtlInputError(Exception):
    """A whole file is unusable (missing, not CSV, wrong header): the run loads nothing."""


class RowError(Exception):
    """One row is rejected; the message is the reason stored in the reject table."""


# ---------------------------------------------------------------- value cleaners
def clean_text(value: str) -> str:
    """Strip surrounding whitespace (incl. a CR left by CRLF) and stray double quotes."""
    value = value.strip()
    if value[:1] == '"' or value[-1:] == '"':
        value = value.strip('"').strip()
    return value


def clean_zip(value: str) -> str:
    """'2134' -> '02134' (lost leading zeros); '02134-1234', '021341234' -> '02134' (ZIP+4)."""
    raw = clean_text(value)
    match = _ZIP_RE.match(raw)
    if not match:
        raise RowError(f"unparseable ZIP code {raw!r}")
    zip5 = match.group(1) or match.group(2)[:5]
    zip5 = zip5.zfill(5)
    if zip5 == "00000":
        raise RowError(f"invalid ZIP code {raw!r}")
    return zip5


def clean_state(value: str) -> str:
    raw = clean_text(value)
    if not _STATE_RE.match(raw):
        raise RowError(f"invalid state {raw!r} (two letters expected)")
    return raw.upper()


def clean_id(value: str, what: str) -> int:
    raw = clean_text(value)
    if not raw.isdigit() or not raw.isascii():
        raise RowError(f"unparseable {what} {raw!r}")
    number = int(raw)
    if number < 1 or number > MAX_ID:
        raise RowError(f"{what} {raw!r} out of range")
    return number


def clean_quantity(value: str) -> int:
    raw = clean_text(value)
    if not _INT_RE.match(raw):
        raise RowError(f"unparseable quantity on hand {raw!r}")
    number = int(raw.replace(",", ""))
    if number > MAX_INT:
        raise RowError(f"quantity on hand {raw!r} out of range")
    return number


def clean_price(value: str) -> str:
    """'$1,234.56' -> '1234.56' (a string, exact: no float rounding)."""
    raw = value.strip().strip("\"'").strip().lstrip(_CURRENCY).strip("\"'").strip()
    match = _PRICE_RE.match(raw)
    if not match:
        raise RowError(f"unparseable price {value.strip()!r}")
    whole, cents, only_cents = match.groups()
    whole = (whole or "0").replace(",", "")
    cents = (cents or only_cents or "").ljust(2, "0")
    price = f"{int(whole)}.{cents}"
    if float(price) > MAX_PRICE:
        raise RowError(f"price {value.strip()!r} out of range")
    return price


def clean_date(value: str, what: str) -> str | None:
    raw = clean_text(value)
    if raw == "" or raw in _ZERO_DATES:
        return NULL
    match = _MDY_RE.match(raw)
    if match:
        month, day, year = (int(part) for part in match.groups())
    else:
        match = _YMD_RE.match(raw)
        if not match:
            raise RowError(f"unparseable {what} {raw!r}")
        year, month, day = (int(part) for part in match.groups())
    try:
        return datetime.date(year, month, day).isoformat()
    except ValueError:
        raise RowError(f"invalid {what} {raw!r}") from None


def clean_timestamp(value: str, what: str, nullable: bool) -> str | None:
    """'Y-m-d H:M:S' (or H:M, or m/d/Y ...) -> 'Y-m-d H:M:S'; blank/Cancelled -> NULL."""
    if len(value) == 19 and _TS_EXACT_RE.match(value):  # fast path: already canonical
        with contextlib.suppress(ValueError):  # invalid: the general path names the cause
            datetime.datetime.fromisoformat(value)
            return value
    raw = clean_text(value)
    if nullable and (raw == "" or raw.lower() in ("cancelled", "canceled") or raw in _ZERO_DATES):
        return NULL
    match = _TS_RE.match(raw)
    if match:
        year, month, day, hour, minute, second = match.groups()
    else:
        match = _TS_MDY_RE.match(raw)
        if not match:
            raise RowError(f"unparseable {what} {raw!r}")
        month, day, year, hour, minute, second = match.groups()
    try:
        stamp = datetime.datetime(int(year), int(month), int(day), int(hour or 0),
                                  int(minute or 0), int(second or 0))
    except ValueError:
        raise RowError(f"invalid {what} {raw!r}") from None
    return stamp.strftime("%Y-%m-%d %H:%M:%S")


def _required(value: str, what: str, limit: int) -> str:
    text = clean_text(value)
    if text == "":
        raise RowError(f"missing {what}")
    if len(text) > limit:
        raise RowError(f"{what} longer than {limit} characters")
    return text


def _optional(value: str, what: str, limit: int) -> str | None:
    text = clean_text(value)
    if text == "":
        return NULL
    if len(text) > limit:
        raise RowError(f"{what} longer than {limit} characters")
    return text


# ---------------------------------------------------------------- file reading
class FileStats:
    """Per-file accounting; ``rejects`` holds (first_line, last_line, reason)."""

    def __init__(self, name: str, path: str):
        self.name = name
        self.path = path
        self.read = 0
        self.loaded = 0
        self.merged = 0
        self.rejects: list[tuple[int, int, str]] = []
        self.sha256 = ""
        self.size = 0
        self.seconds = 0.0

    @property
    def rejected(self) -> int:
        return len(self.rejects)

    def as_dict(self) -> dict:
        return dict(file=self.name, path=self.path, sha256=self.sha256, bytes=self.size,
                    read=self.read, loaded=self.loaded, merged=self.merged,
                    rejected=self.rejected, seconds=round(self.seconds, 3))


def sha256_file(path: str) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    try:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
                size += len(block)
    except OSError as error:
        raise EtlInputError(f"{path}: cannot read the file: {error.strerror}") from None
    return digest.hexdigest(), size


def _decode(path: str) -> str:
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as error:
        raise EtlInputError(f"{path}: cannot read the file: {error.strerror}") from None
    if b"\x00" in data[:65536]:
        raise EtlInputError(f"{path}: not a CSV text file (binary content: NUL bytes)")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise EtlInputError(f"{path}: not a UTF-8 CSV text file (invalid byte "
                            f"0x{data[error.start]:02x} on line {line})") from None
    if text.startswith(_BOM):
        text = text[1:]
    return text


def _check_header(path: str, first: list[str], header: list[str]) -> None:
    found = [name.strip().strip('"').strip() for name in first]
    if found != header:
        raise EtlInputError(f"{path}: wrong header {','.join(first)[:200]!r}, expected "
                            f"{','.join(header)!r}")


def iter_records(path: str, header: list[str], stats: FileStats):
    """Yield (first_line, last_line, fields) for each data record after checking the header."""
    text = _decode(path)
    reader = csv.reader(io.StringIO(text, newline=""), strict=False)
    try:
        first = next(reader, None)
    except csv.Error as error:
        raise EtlInputError(f"{path}: not a CSV file: {error}") from None
    if first is None:
        raise EtlInputError(f"{path}: the file is empty (header {','.join(header)} expected)")
    _check_header(path, first, header)
    previous = reader.line_num
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as error:
            stats.read += 1
            stats.rejects.append((previous + 1, reader.line_num, f"malformed CSV: {error}"))
            previous = reader.line_num
            continue
        stats.read += 1
        yield previous + 1, reader.line_num, fields
        previous = reader.line_num


def fetch_raw_lines(path: str, rejects: list[tuple]) -> list[tuple[int, str, str]]:
    """(line, raw text, reason) for each reject, read back from the file in one pass (a reject
    that already carries its raw text as a 4th item is taken as is)."""
    if not rejects:
        return []
    if all(len(reject) == 4 for reject in rejects):
        return [(first, raw, reason) for first, _last, reason, raw in rejects]
    wanted = {}
    for first, last, *_rest in rejects:
        for number in range(first, last + 1):
            wanted[number] = None
    text = _decode(path)
    for number, line in enumerate(io.StringIO(text, newline=""), start=1):
        if number in wanted:
            wanted[number] = line.rstrip("\r\n")
    return [(first, "\n".join(wanted[n] or "" for n in range(first, last + 1)), reason)
            for first, last, reason, *_raw in rejects]


# ---------------------------------------------------------------- the four files
class CleanData:
    """The cleaned rows of the four files, in the final schema's column order."""

    def __init__(self):
        self.cities: dict[str, tuple] = {}
        self.customers: dict[int, tuple] = {}
        self.products: dict[int, tuple] = {}
        self.orders: dict[int, tuple] = {}
        self.orderlines: dict[tuple[int, int], list] = {}
        self.stats: dict[str, FileStats] = {}
        self.city_conflicts: list[dict] = []


def _check_columns(fields: list[str], expected: int) -> None:
    if len(fields) != expected:
        if len(fields) == 0 or (len(fields) == 1 and fields[0].strip() == ""):
            raise RowError("empty line")
        raise RowError(f"wrong column count: {len(fields)} instead of {expected}")


def _load_customers(path, stats, data, limits):
    spellings: dict[str, Counter] = {}
    first_seen: dict[tuple, int] = {}
    seen_lines: dict[int, int] = {}
    order = 0
    for first, last, fields in iter_records(path, FILES["customers"][1], stats):
        try:
            _check_columns(fields, 10)
            cid = clean_id(fields[0], "customer id")
            row = (cid,
                   _required(fields[1], "first name", limits[("Customer", "first_name")]),
                   _required(fields[2], "last name", limits[("Customer", "last_name")]),
                   _required(fields[8], "email", limits[("Customer", "email")]),
                   _required(fields[6], "address line 1", limits[("Customer", "address_line1")]),
                   _optional(fields[7], "address line 2", limits[("Customer", "address_line2")]),
                   NULL,
                   clean_date(fields[9], "birthdate"),
                   clean_zip(fields[5]))
            city = _required(fields[3], "city", limits[("City", "city")])
            state = clean_state(fields[4])
            known = data.customers.get(cid)
            if known is not None:
                if known == row and data._customer_city[cid] == (city, state):
                    stats.merged += 1
                    continue
                raise RowError(f"customer id {cid} already defined with other values on line "
                               f"{seen_lines[cid]}")
        except RowError as error:
            stats.rejects.append((first, last, str(error)))
            continue
        data.customers[cid] = row
        data._customer_city[cid] = (city, state)
        seen_lines[cid] = first
        stats.loaded += 1
        spelling = (city, state)
        spellings.setdefault(row[8], Counter())[spelling] += 1
        if (row[8], spelling) not in first_seen:
            first_seen[(row[8], spelling)] = order
            order += 1
    for zip5 in sorted(spellings):
        counter = spellings[zip5]
        chosen = min(counter, key=lambda s: (-counter[s], first_seen[(zip5, s)]))
        data.cities[zip5] = (zip5, chosen[0], chosen[1])
        if len(counter) > 1:
            data.city_conflicts.append(dict(
                zip=zip5, chosen="{}, {}".format(*chosen),
                spellings={"{}, {}".format(*s): n for s, n in sorted(counter.items())}))


def _load_products(path, stats, data, limits):
    seen_lines: dict[int, int] = {}
    for first, last, fields in iter_records(path, FILES["products"][1], stats):
        try:
            _check_columns(fields, 4)
            pid = clean_id(fields[0], "product id")
            row = (pid, _required(fields[1], "product name", limits[("Product", "name")]),
                   clean_price(fields[2]), clean_quantity(fields[3]))
            known = data.products.get(pid)
            if known is not None:
                if known == row:
                    stats.merged += 1
                    continue
                raise RowError(f"product id {pid} already defined with other values on line "
                               f"{seen_lines[pid]}")
        except RowError as error:
            stats.rejects.append((first, last, str(error)))
            continue
        data.products[pid] = row
        seen_lines[pid] = first
        stats.loaded += 1


def _load_orders(path, stats, data):
    seen_lines: dict[int, int] = {}
    for first, last, fields in iter_records(path, FILES["orders"][1], stats):
        try:
            _check_columns(fields, 4)
            oid = clean_id(fields[0], "order id")
            cid = clean_id(fields[1], "customer id")
            row = (oid, cid, clean_timestamp(fields[2], "order date", False),
                   clean_timestamp(fields[3], "ship date", True))
            known = data.orders.get(oid)
            if known is not None:
                if known == row:
                    stats.merged += 1
                    continue
                raise RowError(f"order id {oid} already defined with other values on line "
                               f"{seen_lines[oid]}")
            if cid not in data.customers:
                raise RowError(f"orphan reference: customer id {cid} is not in customers.csv "
                               "(or was rejected)")
        except RowError as error:
            stats.rejects.append((first, last, str(error)))
            continue
        data.orders[oid] = row
        seen_lines[oid] = first
        stats.loaded += 1


def _orderline_key(a: str, b: str) -> tuple[int, int]:
    if a.isdigit() and b.isdigit() and a.isascii() and b.isascii():
        return int(a), int(b)
    return clean_id(a, "order id"), clean_id(b, "product id")


def _add_orderline(data, stats, key, units):
    """Account ``units`` lines of one (order, product) pair; raise RowError for orphans."""
    entry = data.orderlines.get(key)
    if entry is not None:
        entry[2] += units
        stats.merged += units
        return
    if key[0] not in data.orders:
        raise RowError(f"orphan reference: order id {key[0]} is not in orders.csv "
                       "(or was rejected)")
    product = data.products.get(key[1])
    if product is None:
        raise RowError(f"orphan reference: product id {key[1]} is not in products.csv "
                       "(or was rejected)")
    # unit_price is the product's current price (the ETL fills it, triggers are bypassed)
    data.orderlines[key] = [key[0], key[1], units, product[2]]
    stats.loaded += 1
    stats.merged += units - 1


def _load_orderlines(path, stats, data):
    text = _decode(path)
    if '"' in text or text.count("\r") != text.count("\r\n"):
        # quoted fields or bare CR line ends: the general CSV path
        for first, last, fields in iter_records(path, FILES["orderlines"][1], stats):
            try:
                _check_columns(fields, 2)
                _add_orderline(data, stats, _orderline_key(*fields), 1)
            except RowError as error:
                stats.rejects.append((first, last, str(error)))
    else:
        _load_orderlines_fast(path, text, stats, data)
    for entry in data.orderlines.values():
        if entry[2] > MAX_INT:
            raise EtlInputError(f"{path}: quantity of order {entry[0]} product {entry[1]} "
                                f"exceeds {MAX_INT}")


def _load_orderlines_fast(path, text, stats, data):
    """No quoting possible: count identical lines in C, parse each distinct line once; a pair
    repeated n times is quantity n. Rejects carry their raw text (no second read)."""
    lines = text.replace("\r\n", "\n").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    header = next(csv.reader([lines[0] if lines else ""]), [])
    _check_header(path, header, FILES["orderlines"][1])
    stats.read = len(lines) - 1
    orders, products, entries = data.orders, data.products, data.orderlines
    loaded = merged = 0
    bad = {}
    for line, units in Counter(lines[1:]).items():
        a, sep, b = line.partition(",")
        if sep and a.isdigit() and b.isdigit() and line.isascii():
            key = (int(a), int(b))
            entry = entries.get(key)
            if entry is not None:
                entry[2] += units
                merged += units
                continue
            product = products.get(key[1])
            if key[0] in orders and product is not None:
                entries[key] = [key[0], key[1], units, product[2]]
                loaded += 1
                merged += units - 1
                continue
        try:  # anything else: the general rules name the cause
            fields = line.split(",")
            _check_columns(fields, 2)
            _add_orderline(data, stats, _orderline_key(*fields), units)
        except RowError as error:
            bad[line] = str(error)
    stats.loaded += loaded
    stats.merged += merged
    if bad:
        for number, line in enumerate(lines[1:], start=2):
            reason = bad.get(line)
            if reason is not None:
                stats.rejects.append((number, number, reason, line))


def extract(paths: dict[str, str], limits: dict | None = None, progress=None) -> CleanData:
    """Read and clean the four files; raise EtlInputError when a whole file is unusable."""
    merged_limits = dict(DEFAULT_LIMITS)
    merged_limits.update(limits or {})
    data = CleanData()
    data._customer_city = {}
    for key in FILE_ORDER:
        path = paths[key]
        stats = FileStats(FILES[key][0], path)
        data.stats[key] = stats
        started = time.monotonic()
        stats.sha256, stats.size = sha256_file(path)
        if key == "customers":
            _load_customers(path, stats, data, merged_limits)
        elif key == "products":
            _load_products(path, stats, data, merged_limits)
        elif key == "orders":
            _load_orders(path, stats, data)
        else:
            _load_orderlines(path, stats, data)
        stats.seconds = time.monotonic() - started
        if progress:
            progress("extract", stats.name, stats.read, stats.seconds)
    del data._customer_city
    return data
