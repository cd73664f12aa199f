"""``send_email``: write an email to an outbox folder as ``.eml`` and optionally send it by SMTP.

Each message is stored as ``<idempotency key>.eml`` (an RFC 5322 message, written to a temp
file and renamed into place) with a ``<key>.json`` status file beside it. The Message-ID is
derived from the idempotency key, so a re-send is recognisable downstream. A call whose key
already has an ``.eml`` writes nothing new; if SMTP is configured and that message was not
delivered yet (a crash between writing and sending), it is delivered now, exactly once as
far as this outbox can tell. SMTP credentials are read from the environment variables
named in the spec at send time and never stored.
"""

from __future__ import annotations

import asyncio
import email.policy
import email.utils
import hashlib
import json
import os
import re
import smtplib
import ssl
import tempfile
import threading
import uuid
from datetime import datetime, timezone
from email.message import EmailMessage
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from agentctl.errors import ConfigError, ToolError
from agentctl.spec.models import ToolSpec
from agentctl.tools.base import Tool, ToolContext
from agentctl.tools.settings import ToolSettings, check_side_effects, parse_settings, resolve_path

EMAIL = r"^[^@\s<>,;\"]+@[^@\s<>,;\"]+\.[^@\s<>,;\"]+$"
SAFE_FILE_KEY = re.compile(r"^[A-Za-z0-9._-]{1,120}$")

_KEY_LOCKS: dict[Path, threading.Lock] = {}
_KEY_LOCKS_GUARD = threading.Lock()


class SmtpSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    host: str = Field(min_length=1, description="SMTP server")
    port: int = Field(default=25, ge=1, le=65535, description="SMTP port")
    starttls: bool = Field(default=False, description="upgrade the connection with STARTTLS")
    ssl: bool = Field(default=False, description="implicit TLS (SMTPS, usually port 465)")
    username_env: str | None = Field(default=None, description="environment variable holding the user name")
    password_env: str | None = Field(default=None, description="environment variable holding the password")
    timeout: float = Field(default=30, gt=0, description="seconds per SMTP operation")


class SendEmailSettings(ToolSettings):
    outbox: str = Field(min_length=1, description="folder for .eml files (spec-relative, created if missing)")
    from_: str = Field(alias="from", default="agentctl@localhost", pattern=EMAIL, description="sender address")
    smtp: SmtpSettings | None = Field(default=None, description="deliver by SMTP too (else only the outbox)")


class SendEmailTool(Tool):
    kind = "send_email"
    side_effects = True
    accepts_idempotency_key = True

    def __init__(self, name: str, outbox: Path, settings: SendEmailSettings, *, description: str | None = None):
        self.name = name
        self.outbox = outbox
        self.settings = settings
        how = f"and sends it via {settings.smtp.host}" if settings.smtp else "to the outbox (not delivered)"
        self.description = description or (
            f"Write one email from {settings.from_} {how}. Returns {{message_id, path, delivered}}.")
        address = {"type": "string", "pattern": EMAIL, "maxLength": 254}
        self.parameters = {
            "type": "object",
            "properties": {
                "to": {**address, "description": "recipient email address"},
                "subject": {"type": "string", "minLength": 1, "maxLength": 300},
                "body": {"type": "string", "minLength": 1, "description": "plain-text body"},
                "cc": {"type": "array", "items": address, "maxItems": 20},
            },
            "required": ["to", "subject", "body"],
            "additionalProperties": False,
        }

    @classmethod
    def from_spec(cls, name: str, spec: ToolSpec, *, spec_dir: Path, spec_file: str | None = None) -> "SendEmailTool":
        settings = parse_settings(SendEmailSettings, name, spec, spec_file=spec_file)
        check_side_effects(name, spec, True, fixed=True, spec_file=spec_file)
        return cls(name, resolve_path(spec_dir, settings.outbox), settings, description=spec.description)

    async def start(self) -> None:
        try:
            self.outbox.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"tool {self.name!r}: cannot create outbox {str(self.outbox)!r}: {exc}") from exc
        smtp = self.settings.smtp
        for var in (smtp.username_env, smtp.password_env) if smtp else ():
            if var and var not in os.environ:
                raise ConfigError(f"tool {self.name!r}: environment variable {var} (smtp credentials) is not set")

    def validate_args(self, args: dict) -> dict:
        """Also refuses a multi-line `to` or `subject` here, when the model calls, rather than
        after a human has approved the action."""
        args = super().validate_args(args)
        _single_line_headers(args, "invalid arguments: ")
        return args

    async def call(self, args: dict, ctx: ToolContext) -> dict:
        _single_line_headers(args)  # again: an approved action's stored arguments come here
        key = ctx.idempotency_key or uuid.uuid4().hex
        return await asyncio.to_thread(self._send, args, key, ctx)

    def _send(self, args: dict, key: str, ctx: ToolContext) -> dict:
        stem = key if SAFE_FILE_KEY.match(key) else hashlib.sha256(key.encode()).hexdigest()[:40]
        eml, status_file = self.outbox / f"{stem}.eml", self.outbox / f"{stem}.json"
        with _key_lock(eml):
            if eml.exists():
                status = json.loads(status_file.read_text()) if status_file.exists() else _status_of(eml)
                if self.settings.smtp and not status.get("delivered"):
                    status = self._deliver(eml, status, status_file)
                return {**status, "already_sent": True}
            message = self._compose(args, key, ctx)
            _write_atomic(eml, bytes(message))
            status = {"message_id": message["Message-ID"], "path": str(eml), "to": args["to"],
                      "subject": args["subject"], "delivered": False}
            _write_atomic(status_file, json.dumps(status).encode())
            if self.settings.smtp:
                status = self._deliver(eml, status, status_file)
            return status

    def _compose(self, args: dict, key: str, ctx: ToolContext) -> EmailMessage:
        message = EmailMessage(policy=email.policy.SMTP)
        domain = self.settings.from_.rsplit("@", 1)[1]
        try:
            message["From"] = self.settings.from_
            message["To"] = args["to"]
            if args.get("cc"):
                message["Cc"] = ", ".join(args["cc"])
            message["Subject"] = args["subject"]
        except (ValueError, TypeError) as exc:
            raise ToolError(f"invalid header: {exc}") from exc
        message["Date"] = email.utils.formatdate(localtime=False, usegmt=True)
        message["Message-ID"] = f"<{hashlib.sha256(key.encode()).hexdigest()[:32]}@{domain}>"
        message["X-Agentctl-Idempotency-Key"] = key
        message["X-Agentctl-Run"] = ctx.run_id
        if ctx.item_key is not None:
            message["X-Agentctl-Item"] = str(ctx.item_key)
        message.set_content(args["body"])
        return message

    def _deliver(self, eml: Path, status: dict, status_file: Path) -> dict:
        smtp = self.settings.smtp
        assert smtp is not None
        message = email.message_from_bytes(eml.read_bytes(), policy=email.policy.SMTP)
        try:
            if smtp.ssl:
                client = smtplib.SMTP_SSL(smtp.host, smtp.port, timeout=smtp.timeout,
                                          context=ssl.create_default_context())
            else:
                client = smtplib.SMTP(smtp.host, smtp.port, timeout=smtp.timeout)
            with client:
                if smtp.starttls:
                    client.starttls(context=ssl.create_default_context())
                if smtp.username_env:
                    client.login(os.environ.get(smtp.username_env, ""),
                                 os.environ.get(smtp.password_env or "", ""))
                refused = client.send_message(message)
        except (smtplib.SMTPException, OSError) as exc:
            raise ToolError(f"SMTP delivery via {smtp.host}:{smtp.port} failed: {exc}; the message is "
                            f"kept in the outbox as {eml.name} and is sent on the next call with this key") from exc
        status = {**status, "delivered": True,
                  "delivered_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        if refused:
            status["refused"] = {addr: str(reason) for addr, reason in refused.items()}
        _write_atomic(status_file, json.dumps(status).encode())
        return status


def _status_of(eml: Path) -> dict:
    """Rebuild the status of an .eml whose status file is missing (written by hand or lost)."""
    message = email.message_from_bytes(eml.read_bytes(), policy=email.policy.default)
    return {"message_id": message["Message-ID"], "path": str(eml), "to": message["To"],
            "subject": message["Subject"], "delivered": False}


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _key_lock(path: Path) -> threading.Lock:
    with _KEY_LOCKS_GUARD:
        return _KEY_LOCKS.setdefault(path, threading.Lock())


def _single_line_headers(args: dict, prefix: str = "") -> None:
    """A newline in `to` or `subject` would let a value add headers of its own."""
    for field in ("to", "subject"):
        if "\r" in args[field] or "\n" in args[field]:
            raise ToolError(f"{prefix}{field} must be a single line")
