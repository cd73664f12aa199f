"""Stream the accounts file (CSV, TSV, JSONL or Parquet) as row dicts, failing with errors
that name the file, the row and the column.

``AccountsFile(path, spec, limit=...)`` checks the file in one streaming pass with
``validate()`` and yields ``{column: value}`` rows with ``iter()``. Nothing here loads the
whole file: CSV and JSONL are decoded line by line from the raw bytes (so an encoding error
is reported with its exact line and byte offset), Parquet is fetched from DuckDB in batches.
Repeated keys are caught from an array of key hashes (8 bytes an account).

Decisions worth knowing:

* ``limit`` selects the rows that will be run: ``validate()`` checks the header and the
  first ``limit`` data rows only and reports that count in ``rows``; ``sha256`` is always
  of the whole file.
* Row numbers are what the user sees. CSV: the record number with the header as row 1
  (a spreadsheet's row number); when a quoted value spans lines, the physical line is added,
  "row 9 (line 12)". JSONL: "line N". Parquet: "row N", the first data row being row 1.
* Blank lines, and CSV rows whose cells are all empty, are skipped.
* CSV values are stripped strings ("" for an empty cell). JSONL and Parquet keep JSON types;
  NaN/Infinity become None, dates become ISO strings, decimals and other types ``str``.
* The key is ``str(value).strip()`` in every format (an integral float 7.0 becomes "7");
  a missing, null or blank key is an error, as is a repeated one.
* Iterating repeats the row checks, so ``iter()`` without ``validate()`` is still safe; it
  just fails later, at the bad row. After ``validate()`` has seen every key of the file, the
  run's pass does not keep them again (at 100,000 accounts they were the largest thing the
  run held); a file rewritten during the run is caught by ``resume``'s checksum.
"""

from __future__ import annotations

import csv
import difflib
import hashlib
import json
import math
import os
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, time
from pathlib import Path
from typing import Any, BinaryIO

import duckdb

from agentctl.errors import ConfigError, InputError
from agentctl.spec.models import InputSpec
from agentctl.text import may_hold_surrogates

EXTENSIONS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}
SUPPORTED = ".csv, .tsv, .jsonl/.ndjson, .parquet"
PARQUET_BATCH = 2048
_UTF8_BOM = b"\xef\xbb\xbf"
_RESAVE = "re-save the file as UTF-8 (in Excel: Save As > 'CSV UTF-8')"


@dataclass(frozen=True)
class InputSummary:
    path: str
    format: str  # csv, tsv, jsonl or parquet
    rows: int  # data rows that will be run (at most ``limit``)
    columns: list[str]
    sha256: str  # of the file's bytes


class AccountsFile:
    """One accounts file, read as a stream of ``{column: value}`` dicts."""

    def __init__(self, path: str | Path, spec: InputSpec, *, limit: int | None = None):
        if limit is not None and limit < 1:
            raise ConfigError(f"--limit must be a positive number of rows, got {limit}")
        self.path = Path(path)
        self.spec = spec
        self.limit = limit
        self.key_column = spec.key
        self.format = _detect_format(self.path, spec.format)
        self._name = str(path)
        self._columns: list[str] = []
        self._keys_checked = False  # validate() saw every key: the run's pass need not

    def validate(self) -> InputSummary:
        """Read the header and the rows that will be run; raise InputError on the first problem."""
        self._check_file()
        digest = hashlib.sha256()
        hashes = array("q")
        rows = sum(1 for _ in self._rows(digest, hashes))
        self._check_unique(hashes)
        self._keys_checked = True
        return InputSummary(self._name, self.format, rows, list(self._columns), digest.hexdigest())

    def __iter__(self) -> Iterator[dict[str, Any]]:
        self._check_file()
        return self._rows(None)

    # --- checks shared by all formats -------------------------------------------------

    def _check_file(self) -> None:
        p = self.path
        if p.is_dir():
            self._fail(f"is a directory, not a file; give the path of a {SUPPORTED} file")
        if not p.exists():
            hint = _did_you_mean(p.name, _siblings(p))
            self._fail("not found" + (f"; did you mean '{hint}'?" if hint
                                      else f" (looked for {p.resolve()}); check the path"))
        try:
            size = p.stat().st_size
        except OSError as exc:
            self._fail(f"cannot be read ({exc.strerror}); check the path and its permissions", exc)
        if size == 0:
            self._fail("is empty (0 bytes); expected a header row and at least one account row"
                       if self.format in ("csv", "tsv") else "is empty (0 bytes); expected account rows")

    def _records(self, lines: "_Lines") -> Iterator[tuple[str, dict[str, Any]]]:
        readers = {"csv": self._csv_rows, "tsv": self._csv_rows,
                   "jsonl": self._jsonl_rows, "parquet": self._parquet_rows}
        return readers[self.format](lines)

    def _rows(self, digest: Any, hashes: array | None = None) -> Iterator[dict[str, Any]]:
        """Rows after the key checks, at most ``limit`` of them. With ``hashes`` (validate's
        pass) each key's hash is appended for ``_check_unique``; without, and before
        validate() has run, repeated keys are caught as they come."""
        first_seen: dict[str, str] = {}
        count = 0
        with self._open() as f:
            lines = _Lines(f, self, digest)
            records = self._records(lines)
            for where, row in records:
                key = self._key(row, where)
                if hashes is not None:
                    hashes.append(hash(key))
                elif not self._keys_checked:
                    if key in first_seen:
                        self._duplicate(key, where, first_seen[key])
                    first_seen[key] = where
                row[self.key_column] = key
                count += 1
                yield row
                if self.limit is not None and count >= self.limit:
                    records.close()  # releases the DuckDB connection now, not at garbage collection
                    break
            if count == 0:
                self._fail("has a header but no data rows; add at least one account row"
                           if self.format in ("csv", "tsv") else "has no data rows; add at least one account")
            if digest is not None:
                lines.hash_rest()  # the bytes after ``limit`` rows (all of them for Parquet)

    def _check_unique(self, hashes: array) -> None:
        """Repeated keys, from validate's hashes: 8 bytes an account instead of a dict of
        keys and row names (16 MB at 100,000 accounts). Equal hashes send a second pass over
        those keys only, which names the first repeated key and both of its rows (or finds
        that two different keys merely share a hash)."""
        ordered = sorted(hashes)
        suspects = {a for a, b in zip(ordered, ordered[1:]) if a == b}
        del ordered
        if not suspects:
            return
        first_seen: dict[str, str] = {}
        count = 0
        with self._open() as f:
            records = self._records(_Lines(f, self, None))
            try:
                for where, row in records:
                    key = self._key(row, where)
                    if hash(key) in suspects:
                        if key in first_seen:
                            self._duplicate(key, where, first_seen[key])
                        first_seen[key] = where
                    count += 1
                    if self.limit is not None and count >= self.limit:
                        break
            finally:
                records.close()

    def _duplicate(self, key: str, where: str, first: str) -> None:
        self._fail(f"duplicate key '{key}' in {where} (first seen in {first}), "
                   f"column '{self.key_column}'; each account needs its own "
                   f"{self.key_column}: remove or fix one of the two rows")

    def _key(self, row: dict[str, Any], where: str) -> str:
        value = row.get(self.key_column)
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, (dict, list, bool)):
            self._fail(f"{where}, column '{self.key_column}': the key is a {type(value).__name__}; "
                       "use a string or a number")
        key = "" if value is None else str(value).strip()
        if not key:
            self._fail(f"{where}, column '{self.key_column}': the key is empty; every account needs a "
                       f"{self.key_column} (fill it in or delete the row)")
        return key

    def _check_columns(self, columns: list[str]) -> None:
        found = _short_list(columns)
        if self.key_column not in columns:
            hint = _did_you_mean(self.key_column, columns)
            self._fail(f"key column '{self.key_column}' (input.key) not found; columns found: {found}"
                       + (f"; did you mean '{hint}'?" if hint else "") + self._delimiter_hint(columns))
        missing = [c for c in self.spec.required if c not in columns]
        if missing:
            hints = [f"'{h}' for '{c}'" for c in missing if (h := _did_you_mean(c, columns))]
            self._fail(f"missing required column{'s' if len(missing) > 1 else ''} "
                       f"{', '.join(repr(c) for c in missing)} (input.required); columns found: {found}"
                       + (f"; did you mean {', '.join(hints)}?" if hints else
                          "; add the column or remove it from input.required")
                       + self._delimiter_hint(columns))

    def _delimiter_hint(self, columns: list[str]) -> str:
        if self.format not in ("csv", "tsv") or len(columns) != 1:
            return ""
        for sep, name in ((";", "semicolons"), ("\t", "tabs"), (",", "commas"), ("|", "pipes")):
            if sep in columns[0] and sep != _delimiter(self):
                return (f"; the header looks separated by {name}, but agentctl reads "
                        + ("tab-separated .tsv" if self.format == "tsv" else "comma-separated .csv")
                        + " files (save as CSV with commas, or name a tab-separated file .tsv)")
        return ""

    def _open(self) -> BinaryIO:
        try:
            return open(self.path, "rb")
        except OSError as exc:
            self._fail(f"cannot be read ({exc.strerror or exc}); check the path and its permissions", exc)

    def _fail(self, message: str, exc: BaseException | None = None) -> Any:
        raise InputError(f"{self._name}: {message}") from exc

    # --- CSV / TSV --------------------------------------------------------------------

    def _csv_rows(self, lines: _Lines) -> Iterator[tuple[str, dict[str, Any]]]:
        if csv.field_size_limit() < MAX_CSV_FIELD:  # the module's default is 128 KiB
            csv.field_size_limit(MAX_CSV_FIELD)
        reader = csv.reader(lines, delimiter=_delimiter(self), strict=True)
        header: list[str] | None = None
        record = 0
        while True:
            start_line = reader.line_num + 1
            try:
                cells = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:
                row = f"row {record + 1}" + (f", which starts on line {start_line}"
                                             if start_line != reader.line_num else "")
                self._fail(f"line {reader.line_num}: malformed CSV ({exc}) in {row}; "
                           + _csv_error_hint(str(exc)), exc)
            record += 1
            if all(not c.strip() for c in cells):
                continue
            where = f"row {record}" if record == start_line else f"row {record} (line {start_line})"
            if header is None:
                header = self._csv_header(cells)
                continue
            if len(cells) != len(header):
                self._fail(self._ragged(where, cells, header))
            yield where, dict(zip(header, (c.strip() for c in cells)))
        if header is None:
            self._fail("contains only blank lines; expected a header row naming the columns")

    def _csv_header(self, cells: list[str]) -> list[str]:
        header = [c.strip() for c in cells]
        seen: dict[str, int] = {}
        for i, name in enumerate(header, 1):
            if not name:
                self._fail(f"header: column {i} has no name; name it or delete the column"
                           + (" (a trailing delimiter at the end of the header?)" if i == len(header) else ""))
            if name in seen:
                self._fail(f"header: column '{name}' appears twice (columns {seen[name]} and {i}); "
                           "rename one of them")
            seen[name] = i
        self._check_columns(header)
        self._columns = header
        return header

    def _ragged(self, where: str, cells: list[str], header: list[str]) -> str:
        n, h = len(cells), len(header)
        text = f"{where} has {n} field{'s' if n != 1 else ''}, the header has {h}; "
        if n > h and all(not c.strip() for c in cells[h:]):
            return text + "the extra fields are empty: remove the trailing delimiter(s) from that row"
        if n > h:
            return text + f"quote values that contain a '{_delimiter(self)}' (e.g. \"Acme, Inc.\")"
        return text + (f"the first missing column is '{header[n]}'; add the missing fields (empty is fine) "
                       "or check for an unclosed double quote")

    # --- JSONL ------------------------------------------------------------------------

    def _jsonl_rows(self, lines: _Lines) -> Iterator[tuple[str, dict[str, Any]]]:
        needed = [self.key_column, *self.spec.required]
        seen_columns: dict[str, None] = {}
        for text in lines:
            if not text.strip():
                continue
            where = f"line {lines.line_no}"
            try:
                obj = json.loads(text, parse_constant=lambda _: None)
            except json.JSONDecodeError as exc:
                self._fail(f"{where}: invalid JSON ({exc.msg} at column {exc.colno}); "
                           "each line must hold exactly one JSON object", exc)
            if not isinstance(obj, dict):
                self._fail(f"{where} is a JSON {_json_type(obj)}, not an object; each line must be one "
                           f'object like {{"{self.key_column}": "...", ...}}')
            if may_hold_surrogates(text) and _lone_surrogate(obj):
                self._fail(f"{where}: a \\uD800-\\uDFFF escape that is half of a character pair "
                           "(a cut emoji?) is not text; fix or remove it in the file")
            for column in needed:
                if column not in obj:
                    role = "input.key" if column == self.key_column else "input.required"
                    hint = _did_you_mean(column, list(obj))
                    self._fail(f"{where}: no '{column}' field ({role}); "
                               + (f"did you mean '{hint}'?" if hint else
                                  "add it to every object (for a required field, \"\" or null is fine)"))
            for column in obj:
                if column not in seen_columns:
                    seen_columns[column] = None
                    self._columns = list(seen_columns)
            yield where, {str(k): _jsonable(v) for k, v in obj.items()}

    # --- Parquet ----------------------------------------------------------------------

    def _parquet_rows(self, lines: _Lines) -> Iterator[tuple[str, dict[str, Any]]]:
        del lines  # DuckDB reads the file itself
        con = duckdb.connect(":memory:")
        try:
            try:
                cursor = con.execute("SELECT * FROM read_parquet(?)", [str(self.path)])
            except duckdb.Error as exc:
                self._fail(f"cannot be read as Parquet ({_first_line(exc)}); check that it is a "
                           "Parquet file, or set input.format in the spec", exc)
            columns = [d[0] for d in cursor.description]
            self._check_columns(columns)
            self._columns = columns
            row_no = 0
            while True:
                try:
                    batch = cursor.fetchmany(PARQUET_BATCH)
                except duckdb.Error as exc:
                    self._fail(f"after row {row_no}: Parquet data cannot be read ({_first_line(exc)}); "
                               "re-export the file", exc)
                if not batch:
                    break
                for values in batch:
                    row_no += 1
                    yield f"row {row_no}", {c: _jsonable(v) for c, v in zip(columns, values)}
        finally:
            con.close()


class _Lines:
    """Decoded lines of a binary file, tracking line number and byte offset.

    Decoding each line ourselves (instead of a TextIOWrapper, which decodes 8 KB ahead)
    makes a UnicodeDecodeError point at its exact line and byte. UTF-8 never puts a
    newline byte inside a multi-byte character, so splitting on b"\\n" first is safe.
    """

    def __init__(self, f: BinaryIO, owner: AccountsFile, digest: Any):
        self.f, self.owner, self.digest = f, owner, digest
        self.line_no = 0
        self.offset = 0  # byte offset of the current line's start

    def __iter__(self) -> Iterator[str]:
        for raw in self._raw():
            if self.digest is not None:
                self.digest.update(raw)
            self.line_no += 1
            start, self.offset = self.offset, self.offset + len(raw)
            if self.line_no == 1:
                self._sniff(raw)
                if raw.startswith(_UTF8_BOM):
                    raw, start = raw[len(_UTF8_BOM):], start + len(_UTF8_BOM)
            try:
                yield raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                bad = raw[exc.start:exc.start + 1].hex()
                self.owner._fail(f"line {self.line_no}, byte offset {start + exc.start}: not valid UTF-8 "
                                 f"(byte 0x{bad}, perhaps Latin-1 or Windows-1252 text); {_RESAVE}", exc)

    def _raw(self) -> Iterable[bytes]:
        try:
            for raw in self.f:  # not ``yield from``: closing this generator would close the file
                yield raw
        except OSError as exc:
            self.owner._fail(f"read failed near line {self.line_no + 1} ({exc.strerror or exc})", exc)

    def _sniff(self, first: bytes) -> None:
        if first.startswith((b"\xff\xfe", b"\xfe\xff")):
            self.owner._fail(f"is UTF-16 text (Excel's 'Unicode Text'); {_RESAVE}")
        if first.startswith(b"PK\x03\x04"):
            self.owner._fail("looks like an Excel workbook or zip file; export the sheet as 'CSV UTF-8'")
        if first.startswith(b"PAR1"):
            self.owner._fail("looks like a Parquet file; name it .parquet or set input.format: parquet")

    def hash_rest(self) -> None:
        """Hash the bytes after the last line read (when ``limit`` stopped early)."""
        while chunk := self.f.read(1 << 16):
            self.digest.update(chunk)


# --- helpers --------------------------------------------------------------------------

def _detect_format(path: Path, fmt: str) -> str:
    ext = path.suffix.lower()
    if fmt == "csv":
        return "tsv" if ext == ".tsv" else "csv"
    if fmt != "auto":
        return fmt
    if ext in EXTENSIONS:
        return EXTENSIONS[ext]
    what = f"extension '{path.suffix}'" if path.suffix else "no extension"
    if ext in (".xlsx", ".xlsm", ".xls", ".ods"):
        fix = ("this is a spreadsheet: in Excel, Save As > 'CSV UTF-8' and pass the .csv "
               "(input.format does not read workbooks)")
    else:
        fix = "rename the file or set input.format (csv, jsonl or parquet) in the spec to force one"
    raise InputError(f"{path}: cannot tell the file format ({what}); supported: {SUPPORTED}; {fix}")


MAX_CSV_FIELD = 64 * 2**20  # one value; JSONL has no such limit, so keep CSV's far away


def _delimiter(f: AccountsFile) -> str:
    return "\t" if f.format == "tsv" else ","


def _csv_error_hint(message: str) -> str:
    if "new-line character" in message:
        return "the file seems to use old Mac (CR-only) line endings; re-save it with standard line endings"
    if "field limit" in message:
        return (f"a value is over {MAX_CSV_FIELD // 2**20} MiB, so a double quote is probably "
                "never closed; check the quotes from that line on")
    if "end of data" in message:
        return "a double quote is probably never closed; check the quotes from that line on"
    return "check the double quotes on that line (a quote inside a value must be doubled: \"\")"


def _jsonable(v: Any) -> Any:
    if v is None or isinstance(v, (bool, int, str)):
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, (datetime, date, time)):
        return v.isoformat()
    if isinstance(v, (bytes, bytearray, memoryview)):
        raw = bytes(v)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return raw.hex()
    return str(v)  # Decimal, UUID, timedelta...


def _lone_surrogate(obj: Any) -> bool:
    try:
        json.dumps(obj, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _json_type(v: Any) -> str:
    names = {list: "array", str: "string", bool: "boolean", int: "number", float: "number"}
    return "null" if v is None else names.get(type(v), type(v).__name__)


def _did_you_mean(name: str, candidates: list[str]) -> str | None:
    lowered = {c.lower(): c for c in candidates}
    if name.lower() in lowered:
        return lowered[name.lower()]
    match = difflib.get_close_matches(name.lower(), list(lowered), n=1, cutoff=0.7)
    return lowered[match[0]] if match else None


def _siblings(p: Path) -> list[str]:
    try:
        with os.scandir(p.parent if str(p.parent) else ".") as it:
            return [e.name for e in it if e.is_file()][:1000]
    except OSError:
        return []


def _short_list(columns: list[str], n: int = 20) -> str:
    shown = ", ".join(repr(c) for c in columns[:n])
    return shown + (f", ... ({len(columns) - n} more)" if len(columns) > n else "") if columns else "(none)"


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
