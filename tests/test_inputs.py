"""agentctl.inputs: streaming the accounts file and the errors it raises.

Every error test asserts the message names the file, the row (or line) and column, and
says how to fix it, and that the message is one line.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import tracemalloc
from pathlib import Path

import duckdb
import pytest

from agentctl import inputs
from agentctl.errors import ConfigError, InputError
from agentctl.inputs import AccountsFile, InputSummary
from agentctl.spec.models import InputSpec

SPEC = InputSpec(key="account_id", required=["domain"])


def write(path: Path, text: str | bytes) -> Path:
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


def error(path: Path, spec: InputSpec = SPEC, **kw) -> str:
    """Validate and return the InputError message (asserting it is one line)."""
    with pytest.raises(InputError) as info:
        AccountsFile(path, spec, **kw).validate()
    message = str(info.value)
    assert "\n" not in message
    assert info.value.exit_code == 2
    return message


def to_parquet(path: Path, select: str) -> Path:
    duckdb.sql(f"COPY ({select}) TO '{path}' (FORMAT parquet)")
    return path


# --- happy paths ---------------------------------------------------------------------------

def test_csv_rows_are_stripped_strings_and_empty_cells_kept(tmp_path):
    path = write(tmp_path / "accounts.csv",
                 "account_id,domain,employees\n ACME-1 , acme.com ,12\nGLOBEX,globex.com,\n")
    f = AccountsFile(path, SPEC)
    summary = f.validate()
    assert summary == InputSummary(str(path), "csv", 2, ["account_id", "domain", "employees"],
                                   hashlib.sha256(path.read_bytes()).hexdigest())
    assert list(f) == [
        {"account_id": "ACME-1", "domain": "acme.com", "employees": "12"},
        {"account_id": "GLOBEX", "domain": "globex.com", "employees": ""},
    ]
    assert f.key_column == "account_id"


def test_tsv_is_tab_separated(tmp_path):
    path = write(tmp_path / "accounts.tsv", "account_id\tdomain\nA1\tacme.com, inc\n")
    f = AccountsFile(path, SPEC)
    assert f.validate().format == "tsv"
    assert list(f) == [{"account_id": "A1", "domain": "acme.com, inc"}]


def test_jsonl_keeps_json_types_and_returns_key_as_string(tmp_path):
    lines = [{"account_id": 7, "domain": "a.com", "tags": ["x"], "meta": {"n": 1.5}},
             {"account_id": 8, "domain": None, "extra": True}]
    path = write(tmp_path / "accounts.ndjson", "\n".join(json.dumps(x) for x in lines) + "\n\n")
    f = AccountsFile(path, SPEC)
    summary = f.validate()
    assert (summary.format, summary.rows) == ("jsonl", 2)
    assert summary.columns == ["account_id", "domain", "tags", "meta", "extra"]
    rows = list(f)
    assert rows[0] == {"account_id": "7", "domain": "a.com", "tags": ["x"], "meta": {"n": 1.5}}
    assert rows[1] == {"account_id": "8", "domain": None, "extra": True}


def test_parquet_converts_dates_and_decimals_to_str(tmp_path):
    path = to_parquet(tmp_path / "accounts.parquet", """
        SELECT i AS account_id, 'd' || i || '.com' AS domain, DATE '2024-01-02' + i::INT AS signed,
               12.50::DECIMAL(10,2) AS arr, [1, 2] AS ids, NULL::VARCHAR AS note
        FROM range(1, 4) t(i)""")
    f = AccountsFile(path, SPEC)
    summary = f.validate()
    assert (summary.format, summary.rows) == ("parquet", 3)
    assert summary.columns == ["account_id", "domain", "signed", "arr", "ids", "note"]
    assert summary.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    first = next(iter(f))
    assert first == {"account_id": "1", "domain": "d1.com", "signed": "2024-01-03",
                     "arr": "12.50", "ids": [1, 2], "note": None}
    json.dumps(first)  # every value is JSON-serializable


def test_utf8_bom_is_accepted_silently(tmp_path):
    path = write(tmp_path / "accounts.csv", b"\xef\xbb\xbfaccount_id,domain\nA1,caf\xc3\xa9.com\n")
    f = AccountsFile(path, SPEC)
    assert f.validate().columns == ["account_id", "domain"]
    assert list(f) == [{"account_id": "A1", "domain": "café.com"}]


def test_quoted_fields_with_newlines_and_commas(tmp_path):
    path = write(tmp_path / "accounts.csv",
                 'account_id,domain,notes\nA1,a.com,"line one\nline two, with comma"\nA2,b.com,"say ""hi"""\n')
    f = AccountsFile(path, SPEC)
    assert f.validate().rows == 2
    assert [r["notes"] for r in f] == ["line one\nline two, with comma", 'say "hi"']


def test_row_numbers_after_a_multiline_value_also_give_the_line(tmp_path):
    path = write(tmp_path / "accounts.csv",
                 'account_id,domain\nA1,"a\n\ncom"\nA2,b.com,extra\n')
    assert "row 3 (line 5) has 3 fields, the header has 2" in error(path)


def test_blank_lines_and_empty_rows_are_skipped(tmp_path):
    path = write(tmp_path / "accounts.csv", "\naccount_id,domain\n\nA1,a.com\n , \n\nA2,\n\n")
    f = AccountsFile(path, SPEC)
    assert f.validate().rows == 2
    assert list(f) == [{"account_id": "A1", "domain": "a.com"}, {"account_id": "A2", "domain": ""}]


def test_format_forced_by_spec(tmp_path):
    path = write(tmp_path / "accounts.txt", '{"account_id": "A1", "domain": "a.com"}\n')
    spec = InputSpec(key="account_id", required=["domain"], format="jsonl")
    assert AccountsFile(path, spec).validate().format == "jsonl"


def test_limit_caps_validation_and_iteration_but_hashes_the_whole_file(tmp_path):
    # the duplicate in row 5 lies beyond the first 3 rows, which are all that will be run
    path = write(tmp_path / "accounts.csv", "account_id,domain\nA1,a\nA2,b\nA3,c\nA1,d\n")
    f = AccountsFile(path, SPEC, limit=3)
    summary = f.validate()
    assert summary.rows == 3
    assert summary.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert [r["account_id"] for r in f] == ["A1", "A2", "A3"]
    assert "duplicate key 'A1' in row 5" in error(path)


@pytest.mark.parametrize("suffix", ["csv", "jsonl", "parquet"])
def test_limit_on_each_format(tmp_path, suffix):
    path = tmp_path / f"accounts.{suffix}"
    if suffix == "parquet":
        to_parquet(path, "SELECT i AS account_id, 'x' AS domain FROM range(5000) t(i)")
    elif suffix == "jsonl":
        write(path, "".join(json.dumps({"account_id": i, "domain": "x"}) + "\n" for i in range(5000)))
    else:
        write(path, "account_id,domain\n" + "".join(f"{i},x\n" for i in range(5000)))
    f = AccountsFile(path, SPEC, limit=2500)
    assert f.validate().rows == 2500
    assert sum(1 for _ in f) == 2500


def test_limit_must_be_positive(tmp_path):
    with pytest.raises(ConfigError, match="--limit"):
        AccountsFile(tmp_path / "a.csv", SPEC, limit=0)


# --- streaming -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def big_csv(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("big") / "accounts.csv"
    with path.open("w", newline="") as out:
        w = csv.writer(out)
        w.writerow(["account_id", "domain", "notes"])
        w.writerows((f"ACME-{i}", f"d{i}.com", "n" * 20) for i in range(200_000))
    return path


def test_iteration_is_lazy(big_csv):
    tracemalloc.start()
    try:
        rows = iter(AccountsFile(big_csv, SPEC))
        first = next(rows)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    rows.close()
    assert first == {"account_id": "ACME-0", "domain": "d0.com", "notes": "n" * 20}
    assert peak < 256 * 1024, f"reading one row allocated {peak} bytes"


def traced_peak(fn):
    """(fn(), the most Python memory it held at once)."""
    tracemalloc.start()
    try:
        result = fn()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_validate_counts_and_hashes_a_200k_row_file(big_csv):
    summary = AccountsFile(big_csv, SPEC).validate()
    assert summary.rows == 200_000
    assert summary.sha256 == hashlib.sha256(big_csv.read_bytes()).hexdigest()


def test_validate_keeps_8_bytes_a_key(big_csv):
    """200,000 keys: a dict of keys and row names would be ~30 MB; validate keeps an array of
    hashes (1.6 MB) and, briefly, its sorted copy."""
    rows, peak = traced_peak(lambda: AccountsFile(big_csv, SPEC).validate().rows)
    assert rows == 200_000
    assert peak < 12 * 1024 * 1024, f"validate peaked at {peak / 1e6:.1f} MB"


def test_keys_that_only_share_a_hash_are_not_duplicates(tmp_path, monkeypatch):
    # every key hashes alike: the second pass tells different keys from a real repeat
    monkeypatch.setattr(inputs, "hash", lambda key: 7, raising=False)
    path = write(tmp_path / "accounts.csv", "account_id,domain\nA1,a\nA2,b\nA3,c\n")
    assert AccountsFile(path, SPEC).validate().rows == 3
    path = write(tmp_path / "dup.csv", "account_id,domain\nA1,a\nA2,b\nA3,c\nA2,d\n")
    assert "duplicate key 'A2' in row 5 (first seen in row 3)" in error(path)


def test_validate_memory_stays_far_below_file_size(tmp_path):
    # wide rows, so that holding them would dwarf the one thing validate() keeps: the keys
    path = tmp_path / "wide.csv"
    with path.open("w", newline="") as out:
        w = csv.writer(out)
        w.writerow(["account_id", "domain", "notes"])
        w.writerows((f"ACME-{i}", f"d{i}.com", "n" * 2000) for i in range(4000))
    size = path.stat().st_size
    rows, peak = traced_peak(lambda: AccountsFile(path, SPEC).validate().rows)
    assert rows == 4000
    assert peak < size / 10, f"peak {peak} bytes for a {size}-byte file"


# --- errors: the file itself ---------------------------------------------------------------

def test_file_not_found_suggests_a_sibling(tmp_path):
    write(tmp_path / "accounts.csv", "account_id,domain\nA1,a\n")
    message = error(tmp_path / "acounts.csv")
    assert "acounts.csv: not found" in message
    assert "did you mean 'accounts.csv'?" in message


def test_file_not_found_without_sibling_names_the_full_path(tmp_path):
    message = error(tmp_path / "nothing.csv")
    assert "not found" in message and str(tmp_path) in message and "check the path" in message


def test_directory(tmp_path):
    (tmp_path / "dir.csv").mkdir()
    message = error(tmp_path / "dir.csv")
    assert "dir.csv: is a directory" in message and ".csv" in message


def test_unreadable_file_is_translated(tmp_path, monkeypatch):
    path = write(tmp_path / "accounts.csv", "account_id,domain\nA1,a\n")

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(inputs, "open", denied, raising=False)
    with pytest.raises(InputError) as info:
        AccountsFile(path, SPEC).validate()
    assert "accounts.csv: cannot be read (Permission denied); check the path and its permissions" \
        in str(info.value)
    assert isinstance(info.value.__cause__, PermissionError)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root can read mode-000 files")
def test_unreadable_file_by_mode(tmp_path):
    path = write(tmp_path / "accounts.csv", "account_id,domain\nA1,a\n")
    path.chmod(0)
    try:
        assert "cannot be read" in error(path)
    finally:
        path.chmod(0o600)


@pytest.mark.parametrize("name", ["accounts.csv", "accounts.jsonl", "accounts.parquet"])
def test_empty_file(tmp_path, name):
    message = error(write(tmp_path / name, b""))
    assert f"{name}: is empty (0 bytes)" in message


def test_only_blank_lines(tmp_path):
    message = error(write(tmp_path / "accounts.csv", "\n \n\n"))
    assert "only blank lines" in message and "header row" in message


def test_header_only(tmp_path):
    message = error(write(tmp_path / "accounts.csv", "account_id,domain\n\n"))
    assert "accounts.csv: has a header but no data rows; add at least one account row" in message


def test_jsonl_with_only_blank_lines(tmp_path):
    assert "has no data rows" in error(write(tmp_path / "accounts.jsonl", "\n\n"))


def test_unknown_extension(tmp_path):
    with pytest.raises(InputError) as info:
        AccountsFile(tmp_path / "accounts.xlsx", SPEC)
    message = str(info.value)
    assert "extension '.xlsx'" in message
    assert ".csv, .tsv, .jsonl/.ndjson, .parquet" in message and "input.format" in message


# --- errors: encoding ----------------------------------------------------------------------

def test_non_utf8_names_line_and_byte_offset(tmp_path):
    body = b"account_id,domain\nA1,a.com\nA2,caf\xe9.com\n"
    message = error(write(tmp_path / "accounts.csv", body))
    offset = body.index(b"\xe9")
    assert f"accounts.csv: line 3, byte offset {offset}: not valid UTF-8 (byte 0xe9" in message
    assert "re-save the file as UTF-8" in message


def test_non_utf8_far_into_the_file_is_found_when_streaming(tmp_path):
    body = b"account_id,domain\n" + b"".join(b"A%d,a.com\n" % i for i in range(5000)) + b"B,\xff\n"
    message = error(write(tmp_path / "accounts.csv", body))
    assert f"line 5002, byte offset {len(body) - 2}" in message


def test_non_utf8_in_jsonl(tmp_path):
    message = error(write(tmp_path / "accounts.jsonl", b'{"account_id": "A1", "domain": "\x96"}\n'))
    assert "line 1, byte offset 32: not valid UTF-8" in message


def test_jsonl_escape_of_half_a_character_pair_is_refused_with_its_line(tmp_path):
    body = (b'{"account_id": "A1", "domain": "\\ud83d\\ude00 ok"}\n'  # a whole pair: fine
            b'{"account_id": "A2", "domain": "cut \\ud83d"}\n')
    message = error(write(tmp_path / "accounts.jsonl", body))
    assert "line 2: a \\uD800-\\uDFFF escape that is half of a character pair" in message


def test_utf16_file(tmp_path):
    message = error(write(tmp_path / "accounts.csv", "account_id,domain\nA1,a\n".encode("utf-16")))
    assert "UTF-16" in message and "re-save the file as UTF-8" in message


# --- errors: header and columns ------------------------------------------------------------

def test_missing_required_column_with_close_match(tmp_path):
    message = error(write(tmp_path / "accounts.csv", "account_id,Domain,name\nA1,a,b\n"))
    assert "accounts.csv: missing required column 'domain' (input.required)" in message
    assert "columns found: 'account_id', 'Domain', 'name'" in message
    assert "did you mean 'Domain' for 'domain'?" in message


def test_missing_required_columns_without_match(tmp_path):
    spec = InputSpec(key="account_id", required=["domain", "industry"])
    message = error(write(tmp_path / "accounts.csv", "account_id,name\nA1,b\n"), spec)
    assert "missing required columns 'domain', 'industry'" in message
    assert "add the column or remove it from input.required" in message


def test_key_column_missing(tmp_path):
    message = error(write(tmp_path / "accounts.csv", "acount_id,domain\nA1,a\n"))
    assert "key column 'account_id' (input.key) not found" in message
    assert "columns found: 'acount_id', 'domain'" in message and "did you mean 'acount_id'?" in message


def test_semicolon_separated_csv_gets_a_hint(tmp_path):
    message = error(write(tmp_path / "accounts.csv", "account_id;domain\nA1;a\n"))
    assert "key column 'account_id'" in message and "separated by semicolons" in message


def test_duplicate_header_name(tmp_path):
    message = error(write(tmp_path / "accounts.csv", "account_id,domain,name,domain\nA1,a,b,c\n"))
    assert "header: column 'domain' appears twice (columns 2 and 4); rename one" in message


def test_blank_header_name(tmp_path):
    message = error(write(tmp_path / "accounts.csv", "account_id, ,domain\nA1,x,a\n"))
    assert "header: column 2 has no name; name it or delete the column" in message


# --- errors: rows --------------------------------------------------------------------------

def test_empty_key(tmp_path):
    message = error(write(tmp_path / "accounts.csv", "account_id,domain\nA1,a\n  ,b\n"))
    assert "accounts.csv: row 3, column 'account_id': the key is empty" in message
    assert "fill it in or delete the row" in message


def test_empty_required_value_is_allowed(tmp_path):
    assert AccountsFile(write(tmp_path / "accounts.csv", "account_id,domain\nA1,\n"), SPEC).validate().rows == 1


def test_duplicate_key_names_both_rows(tmp_path):
    body = "account_id,domain\n" + "".join(f"A{i},x\n" for i in range(1, 8)).replace("A2,", "ACME-1,")
    body += "ACME-1,y\n"
    message = error(write(tmp_path / "accounts.csv", body))
    assert "duplicate key 'ACME-1' in row 9 (first seen in row 3), column 'account_id'" in message
    assert "remove or fix one of the two rows" in message


def test_duplicate_key_across_types_in_jsonl(tmp_path):
    body = '{"account_id": 1, "domain": "a"}\n{"account_id": "1", "domain": "b"}\n'
    assert "duplicate key '1' in line 2 (first seen in line 1)" in error(write(tmp_path / "a.jsonl", body))


def test_row_with_too_many_fields(tmp_path):
    header = "account_id,domain,a,b,c,d,e\n"
    body = header + "".join(f"A{i},x,1,2,3,4,5\n" for i in range(10)) + "A99,Acme, Inc.,1,2,3,4,5\n"
    message = error(write(tmp_path / "accounts.csv", body))
    assert "accounts.csv: row 12 has 8 fields, the header has 7" in message
    assert "quote values that contain a ','" in message


def test_row_with_too_few_fields(tmp_path):
    body = "account_id,domain,a,b,c,d,e\n" + "".join(f"A{i},x,1,2,3,4,5\n" for i in range(10)) + "A99,x,1,2,3\n"
    message = error(write(tmp_path / "accounts.csv", body))
    assert "row 12 has 5 fields, the header has 7" in message and "first missing column is 'd'" in message


def test_trailing_delimiter(tmp_path):
    message = error(write(tmp_path / "accounts.csv", "account_id,domain\nA1,a,,\n"))
    assert "row 2 has 4 fields, the header has 2; the extra fields are empty" in message


def test_unclosed_quote(tmp_path):
    message = error(write(tmp_path / "accounts.csv", 'account_id,domain\nA1,"a.com\nA2,b.com\n'))
    assert "line 3: malformed CSV" in message and "never closed" in message


def test_a_one_megabyte_value_is_read_like_any_other(tmp_path):
    big = "x" * 2**20
    path = write(tmp_path / "accounts.csv", f'account_id,domain,notes\nA1,a.com,"{big}"\nA2,b.com,short\n')
    f = AccountsFile(path, SPEC)
    assert f.validate().rows == 2
    assert [r["notes"] for r in f] == [big, "short"]


def test_stray_quote(tmp_path):
    message = error(write(tmp_path / "accounts.csv", 'account_id,domain\nA1,"a"b\n'))
    assert "line 2: malformed CSV" in message and 'doubled: ""' in message


# --- errors: JSONL and Parquet -------------------------------------------------------------

def test_jsonl_invalid_json(tmp_path):
    body = '{"account_id": "A1", "domain": "a"}\n\n{"account_id": "A2", "domain": }\n'
    message = error(write(tmp_path / "accounts.jsonl", body))
    assert "accounts.jsonl: line 3: invalid JSON (Expecting value at column 32)" in message
    assert "each line must hold exactly one JSON object" in message


def test_jsonl_line_not_an_object(tmp_path):
    message = error(write(tmp_path / "accounts.jsonl", '{"account_id": "A1", "domain": "a"}\n["A2"]\n'))
    assert "accounts.jsonl: line 2 is a JSON array, not an object" in message
    assert '{"account_id": "...", ...}' in message


def test_jsonl_missing_key_field(tmp_path):
    message = error(write(tmp_path / "accounts.jsonl", '{"accountid": "A1", "domain": "a"}\n'))
    assert "line 1: no 'account_id' field (input.key); did you mean 'accountid'?" in message


def test_jsonl_missing_required_field(tmp_path):
    message = error(write(tmp_path / "accounts.jsonl", '{"account_id": "A1"}\n'))
    assert "line 1: no 'domain' field (input.required)" in message and "null is fine" in message


def test_jsonl_null_key(tmp_path):
    message = error(write(tmp_path / "accounts.jsonl", '{"account_id": null, "domain": "a"}\n'))
    assert "line 1, column 'account_id': the key is empty" in message


def test_parquet_unreadable(tmp_path):
    path = write(tmp_path / "accounts.parquet", "account_id,domain\nA1,a\n")
    with pytest.raises(InputError) as info:
        AccountsFile(path, SPEC).validate()
    assert "accounts.parquet: cannot be read as Parquet" in str(info.value)
    assert "input.format" in str(info.value)
    assert isinstance(info.value.__cause__, duckdb.Error)


def test_parquet_missing_column_and_duplicate_key(tmp_path):
    path = to_parquet(tmp_path / "a.parquet", "SELECT 1 AS account_id, 'x' AS dom")
    assert "missing required column 'domain'" in error(path)
    path = to_parquet(tmp_path / "b.parquet", "SELECT i % 3 AS account_id, 'x' AS domain FROM range(5) t(i)")
    assert "duplicate key '0' in row 4 (first seen in row 1)" in error(path)


def test_xlsx_saved_as_csv(tmp_path):
    assert "Excel workbook" in error(write(tmp_path / "accounts.csv", b"PK\x03\x04\x14\x00junk\n"))


def test_lower_level_errors_keep_their_cause(tmp_path):
    """Each lower-level failure is translated to InputError ``from`` the original exception."""
    cases = {
        UnicodeDecodeError: write(tmp_path / "a.csv", b"account_id,domain\nA1,\xe9\n"),
        csv.Error: write(tmp_path / "b.csv", 'account_id,domain\nA1,"a"b\n'),
        json.JSONDecodeError: write(tmp_path / "c.jsonl", "{nope\n"),
        duckdb.Error: write(tmp_path / "d.parquet", "not parquet"),
    }
    for cause, path in cases.items():
        with pytest.raises(InputError) as info:
            list(AccountsFile(path, SPEC))  # iterating without validate() fails the same way
        assert isinstance(info.value.__cause__, cause), path


def test_windows_line_endings(tmp_path):
    path = write(tmp_path / "accounts.csv", 'account_id,domain\r\nA1,a.com\r\nA2,"b\r\nc"\r\n')
    f = AccountsFile(path, SPEC)
    assert f.validate().rows == 2
    assert [r["domain"] for r in f] == ["a.com", "b\r\nc"]


def test_old_mac_line_endings_get_a_hint(tmp_path):
    message = error(write(tmp_path / "accounts.csv", "account_id,domain\rA1,a\r"))
    assert "CR-only" in message and "line 1" in message
