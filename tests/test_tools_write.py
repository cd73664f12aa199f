"""The side-effect tools: crm_upsert (DuckDB upserts, applied once per idempotency key) and
send_email (an .eml outbox, optional SMTP delivery to a local aiosmtpd server)."""

from __future__ import annotations

import asyncio
import email
import email.policy
import socket
from pathlib import Path

import duckdb
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

from agentctl.errors import ConfigError, SpecError, ToolError
from agentctl.spec.models import ToolSpec
from agentctl.tools import ToolContext
from agentctl.tools.crm_upsert import CrmUpsertTool
from agentctl.tools.send_email import SendEmailTool

pytestmark = pytest.mark.timeout(15)


def ctx(key: str | None = None) -> ToolContext:
    return ToolContext(run_id="run1", item_key="acme", stage_id="outreach", agent="writer", idempotency_key=key)


# --- crm_upsert ----------------------------------------------------------------------------

@pytest.fixture
def crm(tmp_path: Path) -> Path:
    path = tmp_path / "crm.duckdb"
    with duckdb.connect(str(path)) as conn:
        conn.execute("CREATE TABLE contacts (email VARCHAR PRIMARY KEY, name VARCHAR, company VARCHAR, "
                     "score INTEGER, last_contacted DATE, tags VARCHAR[], "
                     "status VARCHAR NOT NULL DEFAULT 'lead' CHECK (status IN ('lead', 'customer')))")
        conn.execute("INSERT INTO contacts VALUES ('old@acme.com', 'Old', 'Acme', 1, NULL, NULL, 'lead')")
    return path


def rows(db: Path, sql: str) -> list[tuple]:
    with duckdb.connect(str(db), read_only=True) as conn:
        return conn.execute(sql).fetchall()


def started_crm(db: Path, **settings) -> CrmUpsertTool:
    tool = CrmUpsertTool.from_spec("crm", ToolSpec(type="crm_upsert", database=str(db), **settings),
                                   spec_dir=db.parent)
    asyncio.run(tool.start())
    return tool


def upsert(tool: CrmUpsertTool, record: dict, key: str | None = None) -> dict:
    return asyncio.run(tool.call(tool.validate_args({"record": record}), ctx(key)))


def test_schema_comes_from_the_table(crm: Path):
    tool = started_crm(crm)
    record = tool.parameters["properties"]["record"]
    assert record["required"] == ["email"] and record["additionalProperties"] is False
    props = record["properties"]
    assert props["email"] == {"type": "string"}
    assert props["score"] == {"type": ["integer", "null"]}
    assert props["last_contacted"] == {"type": ["string", "null"], "format": "date"}
    assert props["tags"] == {"type": ["array", "null"]}
    assert props["status"] == {"type": "string", "enum": ["lead", "customer"]}  # NOT NULL + CHECK IN
    assert "New records also need" not in tool.description  # status has a default
    with pytest.raises(ToolError, match="status"):
        tool.validate_args({"record": {"email": "a@b.co", "status": "vip"}})
    with pytest.raises(ToolError, match="colour"):
        tool.validate_args({"record": {"email": "a@b.co", "colour": "red"}})
    with pytest.raises(ToolError, match="email"):
        tool.validate_args({"record": {"name": "No key"}})


def test_description_names_columns_new_records_need(crm: Path):
    with duckdb.connect(str(crm)) as conn:
        conn.execute("CREATE TABLE deals (id VARCHAR PRIMARY KEY, account_id VARCHAR NOT NULL, amount INTEGER)")
    tool = started_crm(crm, table="deals", key="id")
    assert "New records also need: account_id." in tool.description
    assert tool.parameters["properties"]["record"]["properties"]["account_id"] == {"type": "string"}
    with pytest.raises(ToolError, match="NOT NULL constraint failed"):
        upsert(tool, {"id": "d1", "amount": 5})


def test_insert_then_update_keeps_other_columns(crm: Path):
    tool = started_crm(crm)
    assert upsert(tool, {"email": "ann@globex.io", "name": "Ann", "company": "Globex", "score": 7,
                         "tags": ["lead"]}) == {"upserted": "ann@globex.io", "created": True}
    assert upsert(tool, {"email": "ann@globex.io", "score": 9, "last_contacted": "2024-05-01"}) == \
        {"upserted": "ann@globex.io", "created": False}
    row = rows(crm, "SELECT name, company, score, CAST(last_contacted AS VARCHAR), tags FROM contacts "
                    "WHERE email = 'ann@globex.io'")
    assert row == [("Ann", "Globex", 9, "2024-05-01", ["lead"])]
    assert rows(crm, "SELECT count(*) FROM contacts") == [(2,)]


def test_idempotency_key_is_applied_once(crm: Path):
    tool = started_crm(crm)
    first = upsert(tool, {"email": "bo@acme.com", "name": "Bo", "score": 1}, key="act-1")
    again = upsert(tool, {"email": "bo@acme.com", "name": "Bo", "score": 1}, key="act-1")
    assert first == {"upserted": "bo@acme.com", "created": True}
    assert again == {**first, "already_applied": True}
    # even a different record under the same key is not applied again
    upsert(tool, {"email": "bo@acme.com", "score": 99}, key="act-1")
    assert rows(crm, "SELECT score FROM contacts WHERE email = 'bo@acme.com'") == [(1,)]
    assert rows(crm, "SELECT idempotency_key, tool FROM agentctl_actions") == [("act-1", "crm")]
    upsert(tool, {"email": "bo@acme.com", "score": 5}, key="act-2")
    assert rows(crm, "SELECT score FROM contacts WHERE email = 'bo@acme.com'") == [(5,)]


def test_failed_upsert_rolls_back_the_action_record(crm: Path):
    tool = started_crm(crm)
    with pytest.raises(ToolError, match="upsert into contacts failed"):
        upsert(tool, {"email": "x@y.co", "last_contacted": "not a date"}, key="act-bad")
    assert rows(crm, "SELECT count(*) FROM contacts WHERE email = 'x@y.co'") == [(0,)]
    assert upsert(tool, {"email": "x@y.co", "last_contacted": "2024-01-01"}, key="act-bad")["created"] is True


def test_concurrent_upserts_all_land(crm: Path):
    tool = started_crm(crm)

    async def main():
        return await asyncio.gather(*(tool.call({"record": {"email": f"u{i}@x.co", "score": i}}, ctx(f"k{i}"))
                                      for i in range(12)))

    results = asyncio.run(main())
    assert all(r["created"] for r in results)
    assert rows(crm, "SELECT count(*) FROM contacts WHERE email LIKE 'u%'") == [(12,)]


def test_table_problems_are_config_errors(crm: Path):
    with duckdb.connect(str(crm)) as conn:
        conn.execute("CREATE TABLE leads (email VARCHAR, name VARCHAR)")
    for settings, message in [({"table": "nope"}, "does not exist"), ({"key": "phone"}, "no column 'phone'"),
                              ({"table": "leads"}, "PRIMARY KEY or UNIQUE")]:
        with pytest.raises(ConfigError, match=message):
            started_crm(crm, **settings)
    with pytest.raises(SpecError) as err:
        started_crm(crm, table="contacts; DROP TABLE contacts")
    assert err.value.path == "tools.crm.table"


# --- send_email ----------------------------------------------------------------------------

def mail_tool(tmp_path: Path, **settings) -> SendEmailTool:
    tool = SendEmailTool.from_spec("mail", ToolSpec(type="send_email", outbox="outbox", **settings),
                                   spec_dir=tmp_path)
    asyncio.run(tool.start())
    return tool


def send(tool: SendEmailTool, key: str | None = None, **args) -> dict:
    args = {"to": "ann@globex.io", "subject": "Hello Ann", "body": "Hi Ann,\n\nShall we talk?\n", **args}
    return asyncio.run(tool.call(tool.validate_args(args), ctx(key)))


def parse(path: str | Path) -> email.message.EmailMessage:
    return email.message_from_bytes(Path(path).read_bytes(), policy=email.policy.default)


def test_eml_is_written_and_parseable(tmp_path: Path):
    tool = mail_tool(tmp_path, **{"from": "sales@acme.com"})
    result = send(tool, key="act-abc", cc=["boss@globex.io"])
    path = tmp_path / "outbox" / "act-abc.eml"
    assert result["path"] == str(path) and result["delivered"] is False
    message = parse(path)
    assert message["From"] == "sales@acme.com" and message["To"] == "ann@globex.io"
    assert message["Cc"] == "boss@globex.io" and message["Subject"] == "Hello Ann"
    assert message["Message-ID"] == result["message_id"] and message["Message-ID"].endswith("@acme.com>")
    assert message["Date"] is not None and message["X-Agentctl-Idempotency-Key"] == "act-abc"
    assert message.get_content().replace("\r\n", "\n") == "Hi Ann,\n\nShall we talk?\n"
    assert not [p for p in (tmp_path / "outbox").iterdir() if p.suffix == ".tmp"]


def test_same_key_is_not_written_twice(tmp_path: Path):
    tool = mail_tool(tmp_path)
    first = send(tool, key="act-1")
    mtime = Path(first["path"]).stat().st_mtime_ns
    again = send(tool, key="act-1", subject="Changed")
    assert again == {**first, "already_sent": True}
    assert Path(first["path"]).stat().st_mtime_ns == mtime and parse(first["path"])["Subject"] == "Hello Ann"
    other = send(tool, key="act-2")
    assert other["message_id"] != first["message_id"]
    without_key = send(tool)
    assert Path(without_key["path"]).exists()
    assert len(list((tmp_path / "outbox").glob("*.eml"))) == 3


def test_unsafe_keys_and_headers(tmp_path: Path):
    tool = mail_tool(tmp_path)
    result = send(tool, key="../../etc/passwd")
    assert Path(result["path"]).parent == tmp_path / "outbox"
    with pytest.raises(ToolError, match="single line"):
        send(tool, subject="Hi\r\nBcc: everyone@example.com")
    # refused when the model calls, before any action waits for approval
    with pytest.raises(ToolError, match="invalid arguments: subject must be a single line"):
        tool.validate_args({"to": "a@example.com", "subject": "Hi\nBcc: x@example.com", "body": "b"})
    with pytest.raises(ToolError, match="invalid arguments"):
        send(tool, to="not-an-address")


class Recorder:
    def __init__(self):
        self.envelopes = []

    async def handle_DATA(self, server, session, envelope):
        self.envelopes.append(envelope)
        return "250 OK"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def smtp_server():
    recorder = Recorder()
    logins = []

    def authenticator(server, session, envelope, mechanism, auth_data):
        logins.append((auth_data.login.decode(), auth_data.password.decode()))
        return AuthResult(success=auth_data.password == b"s3cret")

    controller = Controller(recorder, hostname="127.0.0.1", port=free_port(),
                            authenticator=authenticator, auth_require_tls=False)
    controller.start()
    yield controller, recorder, logins
    controller.stop()


def test_smtp_delivery_matches_the_eml(tmp_path: Path, smtp_server, monkeypatch):
    controller, recorder, logins = smtp_server
    monkeypatch.setenv("SMTP_USER", "robot")
    monkeypatch.setenv("SMTP_PASS", "s3cret")
    tool = mail_tool(tmp_path, **{"from": "sales@acme.com"}, smtp={
        "host": "127.0.0.1", "port": controller.port, "username_env": "SMTP_USER", "password_env": "SMTP_PASS"})
    result = send(tool, key="act-smtp", cc=["boss@globex.io"])
    assert result["delivered"] is True
    assert logins == [("robot", "s3cret")]
    [envelope] = recorder.envelopes
    assert envelope.mail_from == "sales@acme.com"
    assert sorted(envelope.rcpt_tos) == ["ann@globex.io", "boss@globex.io"]
    received = email.message_from_bytes(envelope.original_content, policy=email.policy.default)
    stored = parse(result["path"])
    for header in ("Message-ID", "Subject", "From", "To", "Cc", "Date"):
        assert received[header] == stored[header]
    assert received.get_content() == stored.get_content()
    assert "s3cret" not in Path(result["path"]).read_text()
    assert "s3cret" not in (tmp_path / "outbox" / "act-smtp.json").read_text()

    again = send(tool, key="act-smtp")
    assert again["already_sent"] is True and again["delivered"] is True
    assert len(recorder.envelopes) == 1


def test_failed_delivery_is_retried_on_the_next_call(tmp_path: Path, smtp_server):
    controller, recorder, _ = smtp_server
    dead = mail_tool(tmp_path, smtp={"host": "127.0.0.1", "port": free_port(), "timeout": 2})
    with pytest.raises(ToolError, match="SMTP delivery .* failed.*kept in the outbox"):
        send(dead, key="act-retry")
    assert (tmp_path / "outbox" / "act-retry.eml").exists()
    live = mail_tool(tmp_path, smtp={"host": "127.0.0.1", "port": controller.port})
    result = send(live, key="act-retry")
    assert result["delivered"] is True and len(recorder.envelopes) == 1
    send(live, key="act-retry")
    assert len(recorder.envelopes) == 1


def test_missing_credential_env_is_a_config_error(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("SMTP_USER", "robot")
    monkeypatch.delenv("NO_SUCH_SMTP_PASS", raising=False)
    with pytest.raises(ConfigError, match="NO_SUCH_SMTP_PASS"):
        mail_tool(tmp_path, smtp={"host": "127.0.0.1", "username_env": "SMTP_USER",
                                  "password_env": "NO_SUCH_SMTP_PASS"})
