"""``http_get``: fetch a web page as readable text, only from allowed, public hosts.

Every hop (the first request and each redirect, followed by hand) is checked: http/https
only, host on ``allow_domains`` (exact or subdomain) unless ``allow_any``, and — unless
``allow_private`` — every address the host resolves to must be public (see netguard).
The request is then sent to the checked IP itself, with the original ``Host`` header and
TLS SNI/certificate name, so DNS cannot be re-resolved to a different address between
check and connect (DNS rebinding). Environment proxies are ignored (``trust_env=False``)
for the same reason. The body is streamed and cut at ``max_bytes`` (after decompression).
"""

from __future__ import annotations

import asyncio
import ipaddress
from dataclasses import dataclass
from pathlib import Path

import html2text
import httpx
from pydantic import Field

from agentctl.errors import ToolError
from agentctl.spec.models import ToolSpec
from agentctl.tools import netguard
from agentctl.tools.base import Tool, ToolContext
from agentctl.tools.settings import ToolSettings, check_side_effects, parse_settings, spec_error

REDIRECT_CODES = {301, 302, 303, 307, 308}
TEXT_TYPES = ("text/", "application/json", "application/xml", "application/xhtml+xml",
              "application/javascript", "application/ld+json", "application/rss+xml", "application/atom+xml")
HTML_TYPES = ("text/html", "application/xhtml+xml")


class HttpGetSettings(ToolSettings):
    allow_domains: list[str] = Field(default_factory=list,
                                     description="hosts that may be fetched (exact or subdomain match)")
    allow_any: bool = Field(default=False, description="allow every public host (allow_domains ignored)")
    allow_private: bool = Field(default=False, description="allow loopback/private/link-local addresses")
    timeout: float = Field(default=10, gt=0, le=600, description="seconds for the whole fetch incl. redirects")
    max_bytes: int = Field(default=1_000_000, ge=1, le=100_000_000, description="body bytes read at most (truncated: true)")
    max_redirects: int = Field(default=5, ge=0, le=30, description="redirects followed, each re-checked")
    user_agent: str = Field(default="agentctl-http_get/0.1", description="User-Agent header")


@dataclass(frozen=True)
class _Hop:
    url: httpx.URL  # as given (what the model sees)
    pinned: httpx.URL  # same URL with the checked IP as host
    host_header: str
    host: str


class HttpGetTool(Tool):
    kind = "http_get"

    def __init__(self, name: str, settings: HttpGetSettings, *, description: str | None = None,
                 side_effects: bool = False, resolver: netguard.Resolver | None = None,
                 transport: httpx.AsyncBaseTransport | None = None):
        self.name = name
        self.settings = settings
        self.side_effects = side_effects
        self.allow_domains = [netguard.normalize_domain(d) for d in settings.allow_domains]
        self.resolver = resolver or netguard.system_resolver
        self.transport = transport  # tests inject httpx.MockTransport
        where = "any public web site" if settings.allow_any else ", ".join(self.allow_domains)
        self.description = description or (
            f"Fetch a web page (GET) and return it as readable text with the final URL and HTTP status. "
            f"Allowed hosts: {where}.")
        self.parameters = {
            "type": "object",
            "properties": {"url": {"type": "string", "minLength": 1, "description": "http(s) URL to fetch"}},
            "required": ["url"],
            "additionalProperties": False,
        }

    @classmethod
    def from_spec(cls, name: str, spec: ToolSpec, *, spec_dir: Path, spec_file: str | None = None) -> "HttpGetTool":
        settings = parse_settings(HttpGetSettings, name, spec, spec_file=spec_file)
        if not settings.allow_any and not settings.allow_domains:
            raise spec_error(name, "allow_domains", "list the domains this tool may fetch, "
                             "or set 'allow_any: true'", spec_file=spec_file)
        side_effects = check_side_effects(name, spec, False, spec_file=spec_file)
        return cls(name, settings, description=spec.description, side_effects=side_effects)

    async def call(self, args: dict, ctx: ToolContext) -> dict:
        url = args["url"].strip()
        try:
            async with asyncio.timeout(self.settings.timeout):
                return await self._fetch(url)
        except TimeoutError:
            raise ToolError(f"timed out after {self.settings.timeout:g}s fetching {url}") from None
        except httpx.TimeoutException as exc:
            raise ToolError(f"timed out fetching {url}: {type(exc).__name__}") from exc
        except httpx.HTTPError as exc:
            raise ToolError(f"request to {url} failed: {type(exc).__name__}: {exc}") from exc

    async def _fetch(self, url: str) -> dict:
        # no keep-alive: a pooled TLS connection to one name must not carry a request for another
        # name that happens to resolve to the same address
        client = httpx.AsyncClient(transport=self.transport, follow_redirects=False, trust_env=False,
                                   timeout=self.settings.timeout,
                                   limits=httpx.Limits(max_keepalive_connections=0))
        async with client:
            current = url
            for _ in range(self.settings.max_redirects + 1):
                hop = await self.check_url(current)
                request = client.build_request(
                    "GET", hop.pinned,
                    headers={"Host": hop.host_header, "User-Agent": self.settings.user_agent,
                             "Accept": "text/html,text/plain,application/json;q=0.9,*/*;q=0.5"},
                    extensions={"sni_hostname": hop.host} if hop.url.scheme == "https" else {},
                )
                response = await client.send(request, stream=True)
                try:
                    location = response.headers.get("location")
                    if response.status_code in REDIRECT_CODES and location:
                        current = str(hop.url.join(location))
                        continue
                    body, truncated = await _read_capped(response, self.settings.max_bytes)
                finally:
                    await response.aclose()
                content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
                return {
                    "url": str(hop.url),
                    "status": response.status_code,
                    "content_type": content_type or None,
                    "text": _to_text(body, content_type, response.charset_encoding),
                    "truncated": truncated,
                    "bytes": len(body),
                }
            raise ToolError(f"too many redirects (more than {self.settings.max_redirects}) starting at {url}")

    async def check_url(self, raw: str) -> _Hop:
        """Refuse anything but an http(s) URL to an allowed host with only permitted addresses."""
        try:
            url = httpx.URL(raw)
        except (httpx.InvalidURL, TypeError, ValueError) as exc:
            raise ToolError(f"invalid URL {raw!r}: {exc}") from exc
        if url.scheme not in ("http", "https"):
            raise ToolError(f"refused {raw!r}: only http:// and https:// URLs are allowed")
        host = url.raw_host.decode("ascii").lower().rstrip(".")
        if not host:
            raise ToolError(f"refused {raw!r}: the URL has no host")
        literal = _ip_literal(host)
        if not self.settings.allow_any:
            allowed = host in self.allow_domains if literal else netguard.host_allowed(host, self.allow_domains)
            if not allowed:
                raise ToolError(f"refused {host}: not on this tool's allowed domains "
                                f"({', '.join(self.allow_domains)})")
        port = url.port or (443 if url.scheme == "https" else 80)
        if literal is not None:
            addresses = [str(literal)]
        else:
            try:
                addresses = await self.resolver(host, port)
            except OSError as exc:
                raise ToolError(f"cannot resolve {host}: {exc}") from exc
            if not addresses:
                raise ToolError(f"cannot resolve {host}: no addresses")
        if not self.settings.allow_private:
            for address in addresses:
                reason = netguard.blocked_reason(address)
                if reason:
                    raise ToolError(f"refused {host}: it resolves to {address}, a {reason} address "
                                    "(set allow_private: true to allow internal hosts)")
        default_port = port == (443 if url.scheme == "https" else 80)
        shown_host = f"[{host}]" if ":" in host else host
        return _Hop(
            url=url.copy_with(userinfo=b""),
            pinned=url.copy_with(userinfo=b"", host=addresses[0]),
            host_header=shown_host if default_port else f"{shown_host}:{port}",
            host=host,
        )


def _ip_literal(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


async def _read_capped(response: httpx.Response, max_bytes: int) -> tuple[bytes, bool]:
    body = bytearray()
    async for chunk in response.aiter_bytes():
        room = max_bytes - len(body)
        if len(chunk) > room:
            body += chunk[:room]
            return bytes(body), True
        body += chunk
    return bytes(body), False


def _to_text(body: bytes, content_type: str, charset: str | None) -> str:
    if not body:
        return ""
    textual = content_type.startswith(TEXT_TYPES) or (not content_type and b"\x00" not in body[:1024])
    if not textual:
        return f"[binary content ({content_type or 'unknown type'}, {len(body)} bytes) not shown]"
    try:
        text = body.decode(charset or "utf-8", errors="replace")
    except LookupError:  # an unknown charset name
        text = body.decode("utf-8", errors="replace")
    if content_type.startswith(HTML_TYPES) or (not content_type and "<html" in text[:2000].lower()):
        converter = html2text.HTML2Text()
        converter.body_width = 0
        converter.ignore_images = True
        text = converter.handle(text)
    return text.strip()
