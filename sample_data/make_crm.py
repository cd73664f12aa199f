#!/usr/bin/env python3
"""(Re)build the sample CRM database from the committed CSVs.

    python sample_data/make_crm.py [OUT_PATH]      # default: sample_data/crm.duckdb

Tables: accounts (copy of accounts.csv), contacts (email is the PRIMARY KEY, so
`crm_upsert` can upsert by email), opportunities, and an empty outreach table
(email PRIMARY KEY) that the pipeline's act stage upserts into.

The database is built in a temporary file next to OUT_PATH and moved into place with
os.replace, so readers never see a half-built file and a failed build leaves the old
database untouched. Running it twice yields the same contents. Needs only duckdb + stdlib.
"""
from __future__ import annotations

import csv
import os
import sys
from datetime import date
from pathlib import Path

import duckdb

HERE = Path(__file__).resolve().parent

SCHEMA = """
CREATE TABLE accounts (
    account_id          VARCHAR PRIMARY KEY,
    name                VARCHAR NOT NULL,
    domain              VARCHAR NOT NULL UNIQUE,
    industry            VARCHAR NOT NULL,
    employees           INTEGER NOT NULL,
    country             VARCHAR NOT NULL,
    city                VARCHAR NOT NULL,
    founded             INTEGER,            -- NULL when unknown
    annual_revenue_usd  BIGINT,             -- NULL when undisclosed / pre-revenue
    website             VARCHAR NOT NULL,
    description         VARCHAR NOT NULL,
    tech_stack          VARCHAR,            -- semicolon-separated, e.g. 'AWS;HubSpot;Snowflake'
    linkedin_followers  INTEGER
);
CREATE SEQUENCE contact_id_seq START {next_contact};
CREATE TABLE contacts (
    email           VARCHAR PRIMARY KEY,
    contact_id      VARCHAR NOT NULL DEFAULT ('CON-' || lpad(CAST(nextval('contact_id_seq') AS VARCHAR), 4, '0')),
    account_id      VARCHAR NOT NULL,
    first_name      VARCHAR,
    last_name       VARCHAR,
    title           VARCHAR,
    phone           VARCHAR,
    last_contacted  DATE,
    status          VARCHAR NOT NULL DEFAULT 'lead'
                    CHECK (status IN ('lead', 'contacted', 'customer', 'churned', 'do_not_contact'))
);
CREATE TABLE opportunities (
    opp_id      VARCHAR PRIMARY KEY,
    account_id  VARCHAR NOT NULL,
    stage       VARCHAR NOT NULL
                CHECK (stage IN ('prospecting', 'qualified', 'proposal', 'closed_won', 'closed_lost')),
    amount_usd  BIGINT NOT NULL,
    close_date  DATE NOT NULL,
    owner       VARCHAR NOT NULL
);
CREATE TABLE outreach (
    email         VARCHAR PRIMARY KEY,
    account_id    VARCHAR,
    contact_name  VARCHAR,
    first_line    VARCHAR,
    status        VARCHAR,
    updated_at    TIMESTAMP DEFAULT current_timestamp
);
"""

# column -> converter for non-text columns; empty cells become NULL everywhere
INTS = {"employees", "founded", "annual_revenue_usd", "linkedin_followers", "amount_usd"}
DATES = {"last_contacted", "close_date"}


def read_csv(path: Path, columns: list[str]) -> list[tuple]:
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames != columns:
            raise SystemExit(f"{path}: expected columns {columns}, got {reader.fieldnames}")
        rows = []
        for rec in reader:
            row = []
            for col in columns:
                val = rec[col]
                if val is None:
                    raise SystemExit(f"{path}:{reader.line_num}: missing column {col!r}")
                if val == "":
                    row.append(None)
                elif col in INTS:
                    row.append(int(val))
                elif col in DATES:
                    row.append(date.fromisoformat(val))
                else:
                    row.append(val)
            rows.append(tuple(row))
        return rows


TABLES = {  # table -> (csv file, column order in the CSV)
    "accounts": ("accounts.csv", ["account_id", "name", "domain", "industry", "employees", "country", "city", "founded",
                                  "annual_revenue_usd", "website", "description", "tech_stack", "linkedin_followers"]),
    "contacts": ("crm_seed/contacts.csv", ["contact_id", "account_id", "first_name", "last_name", "title", "email", "phone",
                                           "last_contacted", "status"]),
    "opportunities": ("crm_seed/opportunities.csv", ["opp_id", "account_id", "stage", "amount_usd", "close_date", "owner"]),
}


def _remove(path: Path) -> None:
    for p in (path, path.with_name(path.name + ".wal")):
        try:
            p.unlink()
        except FileNotFoundError:
            pass


def build(out: Path, src: Path = HERE) -> dict[str, int]:
    out = out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    data = {t: read_csv(src / f, cols) for t, (f, cols) in TABLES.items()}
    next_contact = 1 + max((int(r[0].split("-")[1]) for r in data["contacts"]), default=0)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    _remove(tmp)
    try:
        con = duckdb.connect(str(tmp))
        try:
            con.execute(SCHEMA.format(next_contact=next_contact))
            for table, (_, cols) in TABLES.items():
                con.executemany(f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                                data[table])
            counts = {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in [*TABLES, "outreach"]}
            con.execute("CHECKPOINT")
        finally:
            con.close()
        # A WAL left over from an older database must not be replayed onto the new file.
        _remove(out.with_name(out.name + ".wal"))
        os.replace(tmp, out)
    finally:
        _remove(tmp)
    return counts


def main(argv: list[str]) -> int:
    if len(argv) > 1 or (argv and argv[0] in ("-h", "--help")):
        print(__doc__.strip())
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    out = Path(argv[0]) if argv else HERE / "crm.duckdb"
    counts = build(out)
    print(f"wrote {out}: " + ", ".join(f"{t}={n}" for t, n in counts.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
