# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Extract and clean the course's four CSV files (pure Python: no database, no Ansible).

Each file is read once (:class:`InputFile`: its bytes are hashed for the fingerprint and decoded
once into physical lines). Every physical data line ends in exactly one of three buckets, so that
``read == loaded + merged + rejected`` holds for every file, whatever the damage:

* loaded   -- a clean row that becomes (part of) a row of the final schema;
* merged   -- an exact duplicate of an earlier row; for order lines one more unit of a pair
              already seen (it becomes ``quantity``); the continuation lines of a well-formed
              record whose quoted address spans lines;
* rejected -- one physical line that cannot be loaded, with its line number, raw text and reason.

Quoting (:class:`Records`): a line is parsed on its own. A quoted value left open at the end of
its line is accepted across lines only when the joined lines are well-formed CSV (strict), the
open value is an address line, the record has the header's column count and is loaded; otherwise
that one physical line is rejected ("unterminated quote ...") and parsing resumes on the next
physical line -- the next line is never swallowed.

Cleaning decisions (documented in docs/etl.md):

* a UTF-8 byte-order mark is dropped; UTF-16/32 files are refused naming the encoding; CRLF and
  CR line ends are accepted; surrounding whitespace and stray double quotes around a value are
  removed;
* ZIP codes that lost their leading zeros are left-padded (2134 -> 02134); ZIP+4 forms keep the
  first five digits (02134-1234 / 021341234 -> 02134);
* prices lose currency signs, thousands separators and stray quotes ("$1,234.56" -> 1234.56);
  negative prices and prices with more than two decimals are rejected saying so;
* Shipped "Cancelled" (any case) or blank -> NULL; birthdates m/d/Y or Y-m-d, blank or
  0000-00-00 -> NULL; timestamps Y-m-d H:M[:S] (or m/d/Y H:M[:S]);
* plausibility: an order date or ship date more than a day ahead of the clock, a ship date before
  the order date, a birthdate before 1900 or in the future are rejected;
* an empty address line 2 -> NULL;
* one ZIP spelled with several (city, state) spellings: the most frequent spelling wins, ties go
  to the spelling seen first; every conflict is reported;
* the same id twice with different values: the first row wins, the later one is rejected.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import datetime
import errno
import hashlib
import os
import re
import stat
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
# Columns whose quoted value may span lines (a postal address line may hold a line break).
MULTILINE_COLUMNS = {"customers": frozenset({6, 7})}
MAX_RECORD_LINES = 20  # a quoted value spanning more lines is an unterminated quote

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
EARLIEST_BIRTHDATE = "1900-01-01"
NULL = None

_ZIP_RE = re.compile(r"^(?:(\d{1,5})(?:-\d{4})?|(\d{9}))$")
_STATE_RE = re.compile(r"^[A-Za-z]{2}$")
_INT_RE = re.compile(r"^\d{1,3}(?:,\d{3})+$|^\d+$")
_PRICE_RE = re.compile(r"^(\d{1,3}(?:,\d{3})+|\d+)(?:\.(\d{1,2}))?$|^\.(\d{1,2})$")
_LONG_DECIMALS_RE = re.compile(r"^(?:\d{1,3}(?:,\d{3})+|\d+)?\.\d{3,}$")
_MDY_RE = re.compile(r"^(\d{1,2})/(\d{1,2})/(\d{4})$")
_YMD_RE = re.compile(r"^(\d{4})-(\d{1,2})-(\d{1,2})$")
_TS_RE = re.compile(r"^(\d{4})-(\d{1,2})-(\d{1,2})(?:[ T](\d{1,2}):(\d{2})(?::(\d{2}))?)?$")
_TS_MDY_RE = re.compile(r"^(\d{1,2})/(\d{1,2})/(\d{4})(?: (\d{1,2}):(\d{2})(?::(\d{2}))?)?$")
_TS_EXACT_RE = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$")
_CURRENCY = "$€£¥ "
_ZERO_DATES = ("0000-00-00", "0000-00-00 00:00:00", "00/00/0000")
# Byte-order marks of the encodings that are not UTF-8 (UTF-32 first: its LE mark starts with
# UTF-16's), with the name iconv knows them by.
_FOREIGN_BOMS = ((codecs.BOM_UTF32_BE, "UTF-32BE"), (codecs.BOM_UTF32_LE, "UTF-32LE"),
                 (codecs.BOM_UTF16_BE, "UTF-16BE"), (codecs.BOM_UTF16_LE, "UTF-16LE"))


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
        if raw.startswith("-") and _INT_RE.match(raw[1:].strip()):
            raise RowError(f"negative quantity on hand {raw!r}")
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
        unsigned = raw[1:].lstrip(_CURRENCY) if raw.startswith("-") else raw
        if unsigned != raw and (_PRICE_RE.match(unsigned) or _LONG_DECIMALS_RE.match(unsigned)):
            raise RowError(f"negative price {value.strip()!r}")
        if _LONG_DECIMALS_RE.match(raw):
            raise RowError(f"price {value.strip()!r} has more than two decimals (cents)")
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


def clean_birthdate(value: str, today: str) -> str | None:
    """A birthdate, NULL when blank; before 1900 or after ``today`` (Y-m-d) is implausible."""
    birth = clean_date(value, "birthdate")
    if birth is not None and birth < EARLIEST_BIRTHDATE:
        raise RowError(f"implausible birthdate {clean_text(value)!r}: before 1900")
    if birth is not None and birth > today:
        raise RowError(f"implausible birthdate {clean_text(value)!r}: in the future")
    return birth


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
    """Per-file accounting; ``rejects`` holds (line number, raw line, reason)."""

    def __init__(self, name: str, path: str):
        self.name = name
        self.path = path
        self.read = 0
        self.loaded = 0
        self.merged = 0
        self.rejects: list[tuple[int, str, str]] = []
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


def _read_bytes(path: str) -> bytes:
    """The file's bytes; a clear message when the path is not a readable regular file."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            raise EtlInputError(f"{path}: a symbolic link to {os.readlink(path)!r}, which does "
                                "not exist") from None
        raise EtlInputError(f"{path}: file not found") from None
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise EtlInputError(f"{path}: a symbolic link loop (the link points back to "
                                "itself), not a file") from None
        raise EtlInputError(f"{path}: cannot read the file: {error.strerror}") from None
    if stat.S_ISDIR(info.st_mode):
        raise EtlInputError(f"{path}: a directory, not a file")
    if not stat.S_ISREG(info.st_mode):
        raise EtlInputError(f"{path}: not a regular file (a device, socket or pipe)")
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as error:
        raise EtlInputError(f"{path}: cannot read the file: {error.strerror}") from None


def _utf16_without_bom(data: bytes) -> str | None:
    """'UTF-16LE'/'UTF-16BE' when the NUL bytes sit where ASCII text in UTF-16 puts them."""
    sample = data[:4096] if len(data) % 2 == 0 else data[:4095]
    if len(sample) < 4:
        return None
    even, odd = sample[0::2], sample[1::2]
    if odd.count(0) > 0.9 * len(odd) and even.count(0) < 0.1 * len(even):
        return "UTF-16LE"
    if even.count(0) > 0.9 * len(even) and odd.count(0) < 0.1 * len(odd):
        return "UTF-16BE"
    return None


def decode(path: str, data: bytes) -> str:
    """UTF-8 text without its byte-order mark; anything else fails naming what was found."""
    for bom, name in _FOREIGN_BOMS:
        if data.startswith(bom):
            raise EtlInputError(f"{path}: encoded as {name} (byte-order mark found); UTF-8 is "
                                f"required: convert it, e.g. iconv -f {name} -t UTF-8")
    if b"\x00" in data[:65536]:
        found = _utf16_without_bom(data)
        if found:
            raise EtlInputError(f"{path}: looks like {found} text without a byte-order mark; "
                                f"UTF-8 is required: convert it, e.g. iconv -f {found} -t UTF-8")
        raise EtlInputError(f"{path}: not a CSV text file (binary content: NUL bytes)")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise EtlInputError(f"{path}: not a UTF-8 CSV text file (invalid byte "
                            f"0x{data[error.start]:02x} on line {line})") from None
    return text[1:] if text.startswith("\ufeff") else text


class InputFile:
    """One of the four files, read once: bytes hashed at once, decoded once when first needed."""

    def __init__(self, key: str, path: str):
        self.key = key
        self.name, self.header = FILES[key]
        self.path = path
        self._data: bytes | None = _read_bytes(path)
        self.sha256 = hashlib.sha256(self._data).hexdigest()
        self.size = len(self._data)
        self._lines: list[str] | None = None
        self.has_quote = False

    def lines(self) -> list[str]:
        """Physical lines without their ends (CRLF, LF or CR); a final line end adds none."""
        if self._lines is None:
            text = decode(self.path, self._data)
            self._data = None  # the text is all that is needed from here on
            if "\r" in text:
                text = text.replace("\r\n", "\n").replace("\r", "\n")
            self.has_quote = '"' in text
            lines = text.split("\n")
            if lines[-1] == "":
                lines.pop()
            self._lines = lines
        return self._lines


def _open_quote_column(line: str) -> int | None:
    """1-based column whose quoted value is still open at the end of ``line`` (the csv
    module's lenient reading of a quote inside a value), or None when every quote closes."""
    column, state, opened = 1, "start", None
    for char in line:
        if state == "quoted":
            if char == '"':
                state = "quote"
        elif char == ",":
            column, state = column + 1, "start"
        elif state == "start":
            if char == '"':
                state, opened = "quoted", column
            else:
                state = "plain"
        elif state == "quote":
            state = "quoted" if char == '"' else "plain"
    return opened if state == "quoted" else None


def _parse_line(line: str) -> tuple[list[str] | None, int | None]:
    """(fields, None) for a line whose quotes close; (None, column) for an unterminated quote."""
    try:
        return next(csv.reader((line,), strict=True)), None
    except csv.Error:
        pass
    column = _open_quote_column(line)
    if column is not None:
        return None, column
    # A quote inside a value or text after a closing quote: read leniently, as the csv module
    # always did ('"Bo"b' -> 'Bob'); the cleaning rules judge the values.
    return next(csv.reader((line,), strict=False)), None


def _parse_record(text: str) -> tuple[list[str] | None, bool]:
    """Strict parse of joined lines: (fields, False) for exactly one well-formed record,
    (None, True) while a quote is still open, (None, False) when malformed."""
    try:
        rows = list(csv.reader((text,), strict=True))
    except csv.Error as error:
        return None, "unexpected end of data" in str(error)
    return (rows[0], False) if len(rows) == 1 else (None, False)


class Records:
    """The data records of a file, one physical line at a time (see the module docstring).

    Iterating yields (first line, last line, fields). The loader reports each record's fate with
    :meth:`loaded`, :meth:`merged` or :meth:`reject`; rejecting a record that spans lines
    rejects only its first line, as an unterminated quote, and resumes on the next line.
    """

    def __init__(self, source: InputFile, stats: FileStats):
        lines = source.lines()
        if not lines:
            raise EtlInputError(f"{source.path}: the file is empty (header "
                                f"{','.join(source.header)} expected)")
        fields, column = _parse_line(lines[0])
        _check_header(source.path, fields if column is None else [lines[0]], source.header)
        self.lines = lines
        self.stats = stats
        self.columns = len(source.header)
        self.multiline = MULTILINE_COLUMNS.get(source.key, frozenset())
        self.next_index = 1
        self.open_quote: dict[int, int] = {}  # line index -> column of its unterminated quote
        stats.read = len(lines) - 1
        # leading id of each rejected line -> positions in stats.rejects
        self.rejected_ids: dict[int, list[int]] = {}

    def __iter__(self):
        lines, count = self.lines, len(self.lines)
        number = self.next_index  # index of the next line; after "+= 1" the number of the line read
        while number < count:
            line = lines[number]
            number += 1
            if '"' not in line:  # the common case, kept lean
                yield number, number, line.split(",")
                continue
            fields, column = _parse_line(line)
            if column is None:
                yield number, number, fields
                continue
            index = number - 1
            self.open_quote[index] = column
            last, fields = self._spanning_record(index, column)
            if fields is None:
                self._reject_line(index, self._unterminated(index, column))
                continue
            self.next_index = last + 1
            yield number, last + 1, fields
            number = self.next_index  # moved back when the loader rejected the record

    def _spanning_record(self, index: int, column: int) -> tuple[int, list[str] | None]:
        """The well-formed record of the header's width that starts on line ``index`` with an
        address value open at its end, or (index, None)."""
        if column - 1 not in self.multiline:
            return index, None
        lines = self.lines
        for last in range(index + 1, min(index + MAX_RECORD_LINES, len(lines))):
            if '"' not in lines[last]:
                continue  # the value stays open
            fields, still_open = _parse_record("\n".join(lines[index:last + 1]))
            if still_open:
                continue
            if fields is not None and len(fields) == self.columns and not any(
                    "\n" in value for number, value in enumerate(fields)
                    if number not in self.multiline):
                return last, fields
            break
        return index, None

    def _unterminated(self, index: int, column: int) -> str:
        return (f"unterminated quote: the quoted value of column {column} on line {index + 1} "
                "is not closed on that line (the next lines were read on their own)")

    def _reject_line(self, index: int, reason: str) -> None:
        raw = self.lines[index]
        self.stats.rejects.append((index + 1, raw, reason))
        head = raw.split(",", 1)[0].strip().strip('"').strip()
        if head.isdigit() and head.isascii() and 0 < int(head) <= MAX_ID:
            self.rejected_ids.setdefault(int(head), []).append(len(self.stats.rejects) - 1)

    def reject(self, first: int, last: int, reason: str) -> None:
        if last == first:
            self._reject_line(first - 1, reason)
            return
        index = first - 1
        self._reject_line(index, f"{self._unterminated(index, self.open_quote[index])}; "
                                 f"lines {first}-{last} joined would be rejected: {reason}")
        self.next_index = index + 1

    def loaded(self, first: int, last: int) -> None:
        self.stats.loaded += 1
        self.stats.merged += last - first

    def merged(self, first: int, last: int) -> None:
        self.stats.merged += 1 + last - first


def _check_header(path: str, first: list[str], header: list[str]) -> None:
    found = [name.strip().strip('"').strip() for name in first]
    if found != header:
        raise EtlInputError(f"{path}: wrong header {','.join(first)[:200]!r}, expected "
                            f"{','.join(header)!r}")


# ---------------------------------------------------------------- the four files
class CleanData:
    """The cleaned rows of the four files, in the final schema's column order.

    ``kept``: ids whose line was rejected but which a previous load stored -- the old row stays
    (unless delete_rejected), so the file's rows that depend on it are loaded:
    {"Customer": {id: None}, "Order": {id: customer id}, "Product": {id: current price},
    "OrderLine": {(order id, product id): None}}.
    """

    def __init__(self):
        self.cities: dict[str, tuple] = {}
        self.customers: dict[int, tuple] = {}
        self.products: dict[int, tuple] = {}
        self.orders: dict[int, tuple] = {}
        self.orderlines: dict[tuple[int, int], list] = {}
        self.stats: dict[str, FileStats] = {}
        self.city_conflicts: list[dict] = []
        self.kept: dict[str, dict] = {"Customer": {}, "Order": {}, "Product": {},
                                      "OrderLine": {}}


def _check_columns(fields: list[str], expected: int) -> None:
    if len(fields) != expected:
        if len(fields) == 0 or (len(fields) == 1 and fields[0].strip() == ""):
            raise RowError("empty line")
        raise RowError(f"wrong column count: {len(fields)} instead of {expected}")


def _load_customers(records, data, limits, horizon):
    spellings: dict[str, Counter] = {}
    first_seen: dict[tuple, int] = {}
    seen_lines: dict[int, int] = {}
    city_of: dict[int, tuple] = {}
    today = horizon[:10]
    order = 0
    for first, last, fields in records:
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
                   clean_birthdate(fields[9], today),
                   clean_zip(fields[5]))
            city = _required(fields[3], "city", limits[("City", "city")])
            state = clean_state(fields[4])
            known = data.customers.get(cid)
            if known is not None:
                if known == row and city_of[cid] == (city, state):
                    records.merged(first, last)
                    continue
                raise RowError(f"customer id {cid} already defined with other values on line "
                               f"{seen_lines[cid]}")
        except RowError as error:
            records.reject(first, last, str(error))
            continue
        data.customers[cid] = row
        city_of[cid] = (city, state)
        seen_lines[cid] = first
        records.loaded(first, last)
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


def _load_products(records, data, limits):
    seen_lines: dict[int, int] = {}
    for first, last, fields in records:
        try:
            _check_columns(fields, 4)
            pid = clean_id(fields[0], "product id")
            row = (pid, _required(fields[1], "product name", limits[("Product", "name")]),
                   clean_price(fields[2]), clean_quantity(fields[3]))
            known = data.products.get(pid)
            if known is not None:
                if known == row:
                    records.merged(first, last)
                    continue
                raise RowError(f"product id {pid} already defined with other values on line "
                               f"{seen_lines[pid]}")
        except RowError as error:
            records.reject(first, last, str(error))
            continue
        data.products[pid] = row
        seen_lines[pid] = first
        records.loaded(first, last)


def _implausible_order(placed: str, shipped: str | None, horizon: str) -> None:
    """Raise the RowError naming what is implausible about an order's dates."""
    if placed > horizon:
        raise RowError(f"implausible order date {placed}: in the future")
    if shipped is not None:
        if shipped > horizon:
            raise RowError(f"implausible ship date {shipped}: in the future")
        if shipped < placed:
            raise RowError(f"ship date {shipped} before the order date {placed}")


def _load_orders(records, data, horizon):
    seen_lines: dict[int, int] = {}
    customers, kept_customers = data.customers, data.kept["Customer"]
    for first, last, fields in records:
        try:
            _check_columns(fields, 4)
            oid = clean_id(fields[0], "order id")
            cid = clean_id(fields[1], "customer id")
            row = (oid, cid, clean_timestamp(fields[2], "order date", False),
                   clean_timestamp(fields[3], "ship date", True))
            if row[2] > horizon or (row[3] is not None and not row[2] <= row[3] <= horizon):
                _implausible_order(row[2], row[3], horizon)
            known = data.orders.get(oid)
            if known is not None:
                if known == row:
                    records.merged(first, last)
                    continue
                raise RowError(f"order id {oid} already defined with other values on line "
                               f"{seen_lines[oid]}")
            if cid not in customers and cid not in kept_customers:
                raise RowError(f"orphan reference: customer id {cid} is not in customers.csv "
                               "(or was rejected)")
        except RowError as error:
            records.reject(first, last, str(error))
            continue
        data.orders[oid] = row
        seen_lines[oid] = first
        records.loaded(first, last)


def _orderline_key(a: str, b: str) -> tuple[int, int]:
    if a.isdigit() and b.isdigit() and a.isascii() and b.isascii():
        return int(a), int(b)
    return clean_id(a, "order id"), clean_id(b, "product id")


def _load_orderlines(source, records, data):
    """A pair repeated n times is quantity n; unit_price is the product's price of this load
    (a kept product's stored price), the ETL fills it (triggers are bypassed)."""
    orders = set(data.orders) | set(data.kept["Order"])
    prices = {pid: row[2] for pid, row in data.products.items()}
    prices.update(data.kept["Product"])
    entries = data.orderlines
    if source.has_quote:
        # quoted fields: record by record (rarely used: the course's files have no quotes)
        for first, last, fields in records:
            try:
                _check_columns(fields, 2)
                key = _orderline_key(*fields)
                _add_orderline(entries, orders, prices, key)
            except RowError as error:
                records.reject(first, last, str(error))
                continue
            if len(entries[key]) == 4 and entries[key][2] == 1:
                records.loaded(first, last)
            else:
                records.merged(first, last)
    else:
        _load_orderlines_fast(records, entries, orders, prices)
    for entry in entries.values():
        if entry[2] > MAX_INT:
            raise EtlInputError(f"{source.path}: quantity of order {entry[0]} product "
                                f"{entry[1]} exceeds {MAX_INT}")


def _add_orderline(entries, orders, prices, key):
    """One more unit of the pair ``key``; RowError for orphans."""
    entry = entries.get(key)
    if entry is not None:
        entry[2] += 1
        return
    if key[0] not in orders:
        raise RowError(f"orphan reference: order id {key[0]} is not in orders.csv "
                       "(or was rejected)")
    price = prices.get(key[1])
    if price is None:
        raise RowError(f"orphan reference: product id {key[1]} is not in products.csv "
                       "(or was rejected)")
    entries[key] = [key[0], key[1], 1, price]


def _load_orderlines_fast(records, entries, orders, prices):
    """No quote in the file: count identical lines in C, parse each distinct line once."""
    stats, lines = records.stats, records.lines
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
            price = prices.get(key[1])
            if key[0] in orders and price is not None:
                entries[key] = [key[0], key[1], units, price]
                loaded += 1
                merged += units - 1
                continue
        try:  # anything else: the general rules name the cause
            fields = line.split(",")
            _check_columns(fields, 2)
            key = _orderline_key(*fields)
            _add_orderline(entries, orders, prices, key)
        except RowError as error:
            bad[line] = str(error)
            continue
        entries[key][2] += units - 1
        if entries[key][2] == units:
            loaded += 1
            merged += units - 1
        else:
            merged += units
    stats.loaded += loaded
    stats.merged += merged
    if bad:  # one physical line each; no leading id to keep (pairs: see below)
        rejects = stats.rejects
        for number, line in enumerate(lines[1:], start=2):
            reason = bad.get(line)
            if reason is not None:
                rejects.append((number, line, reason))


_KEPT_WHAT = {"Customer": "customer", "Product": "product", "Order": "order"}


def _keep_rejected(records, data, table, loaded, lookup, delete_rejected):
    """Previously loaded rows whose line was rejected now: kept unless ``delete_rejected``;
    each such reject says what happens to the old row."""
    ids = [i for i in records.rejected_ids if i not in loaded]
    if not ids or lookup is None:
        return
    stored = lookup(table, ids)
    what = _KEPT_WHAT[table]
    rejects = records.stats.rejects
    for row_id, value in stored.items():
        if delete_rejected:
            note = (f"; the {what} {row_id} loaded before is deleted (delete_rejected)")
        elif table == "Order" and value not in data.customers and \
                value not in data.kept["Customer"]:
            note = (f"; the order {row_id} loaded before is deleted: its customer {value} "
                    "is gone")
        else:
            note = (f"; the {what} {row_id} loaded before is kept unchanged "
                    "(delete_rejected: true would delete it)")
            data.kept[table][row_id] = value
        for position in records.rejected_ids[row_id]:
            line, raw, reason = rejects[position]
            rejects[position] = (line, raw, reason + note)


def _keep_rejected_orderlines(records, data, lookup, delete_rejected):
    """A rejected order line whose pair a previous load stored, and of which no valid line is
    left, keeps the stored row (quantity and price) while its order and product stay."""
    if lookup is None:
        return
    positions: dict[tuple[int, int], list[int]] = {}
    for position, (_line, raw, _reason) in enumerate(records.stats.rejects):
        parts = [part.strip().strip('"').strip() for part in raw.split(",")]
        if len(parts) == 2 and all(p.isdigit() and p.isascii() for p in parts):
            pair = (int(parts[0]), int(parts[1]))
            if pair not in data.orderlines:
                positions.setdefault(pair, []).append(position)
    if not positions:
        return
    orders = (data.orders, data.kept["Order"])
    products = (data.products, data.kept["Product"])
    rejects = records.stats.rejects
    for pair in lookup("OrderLine", list(positions)):
        if delete_rejected:
            note = f"; the order line {pair} loaded before is deleted (delete_rejected)"
        elif any(pair[0] in found for found in orders) and any(
                pair[1] in found for found in products):
            note = (f"; the order line {pair} loaded before is kept unchanged "
                    "(delete_rejected: true would delete it)")
            data.kept["OrderLine"][pair] = None
        else:
            note = f"; the order line {pair} loaded before is deleted with its order or product"
        for position in positions[pair]:
            line, raw, reason = rejects[position]
            rejects[position] = (line, raw, reason + note)


def extract(files: dict[str, InputFile], limits: dict | None = None, *, lookup=None,
            delete_rejected: bool = False, now: datetime.datetime | None = None) -> CleanData:
    """Clean the four files; raise EtlInputError when a whole file is unusable.

    ``lookup(table, ids)`` (optional) returns the ids of ``table`` ("Customer", "Order",
    "Product") a previous load stored, with the order's customer id / the product's price.
    ``now``: the clock the plausibility rules compare with (default: this host's).
    """
    merged_limits = dict(DEFAULT_LIMITS)
    merged_limits.update(limits or {})
    horizon = ((now or datetime.datetime.now()) + datetime.timedelta(days=1)).strftime(
        "%Y-%m-%d %H:%M:%S")
    data = CleanData()
    for key in FILE_ORDER:
        source = files[key]
        stats = FileStats(source.name, source.path)
        stats.sha256, stats.size = source.sha256, source.size
        data.stats[key] = stats
        started = time.monotonic()
        records = Records(source, stats)
        if key == "customers":
            _load_customers(records, data, merged_limits, horizon)
            _keep_rejected(records, data, "Customer", data.customers, lookup, delete_rejected)
        elif key == "products":
            _load_products(records, data, merged_limits)
            _keep_rejected(records, data, "Product", data.products, lookup, delete_rejected)
        elif key == "orders":
            _load_orders(records, data, horizon)
            _keep_rejected(records, data, "Order", data.orders, lookup, delete_rejected)
        else:
            _load_orderlines(source, records, data)
            _keep_rejected_orderlines(records, data, lookup, delete_rejected)
        stats.rejects.sort()
        stats.seconds = time.monotonic() - started
    return data


def read_files(paths: dict[str, str]) -> dict[str, InputFile]:
    """Read (and hash) each of the four files once."""
    return {key: InputFile(key, paths[key]) for key in FILE_ORDER}
