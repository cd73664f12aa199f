"""http_get: fetching from a loopback server, and every refusal that keeps it off internal hosts.

The real-server tests use ``allow_private: true`` (the server is on 127.0.0.1). Refusals of
public-looking hosts use the tool's injectable resolver and an ``httpx.MockTransport``, so
nothing leaves the machine.
"""

from __future__ import annotations

import asyncio
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from agentctl.errors import SpecError, ToolError
from agentctl.spec.models import ToolSpec
from agentctl.tools import ToolContext
from agentctl.tools.http_get import HttpGetTool
from agentctl.tools.netguard import blocked_reason, host_allowed, normalize_domain

pytestmark = pytest.mark.timeout(10)

CTX = ToolContext(run_id="r", item_key="acme", stage_id="research", agent="researcher")
PUBLIC_IP = "93.184.216.34"


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):  # keep test output quiet
        pass

    def do_GET(self):
        routes = {
            "/page": (200, "text/html; charset=utf-8",
                      b"<html><body><h1>Acme</h1><p>We make <b>anvils</b>.</p><script>x()</script></body></html>"),
            "/plain": (200, "text/plain", "caf\u00e9 menu".encode()),
            "/json": (200, "application/json", b'{"ok": true}'),
            "/binary": (200, "image/png", b"\x89PNG\x00\x00\x00"),
            "/missing": (404, "text/plain", b"not here"),
        }
        if self.path == "/big":
            self._send(200, "text/plain", b"a" * 3_000_000)
        elif self.path == "/slow":
            time.sleep(2)
            self._send(200, "text/plain", b"late")
        elif self.path == "/redirect":
            self._redirect("/page")
        elif self.path == "/loop":
            self._redirect("/loop")
        elif self.path == "/to-loopback":
            self._redirect(f"http://127.0.0.1:{self.server.server_port}/page")
        elif self.path == "/host":
            self._send(200, "text/plain", self.headers["Host"].encode())
        elif self.path in routes:
            self._send(*routes[self.path])
        else:
            self._send(404, "text/plain", b"no route")

    def _send(self, status: int, content_type: str, body: bytes):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _redirect(self, location: str):
        self.send_response(302)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()


@pytest.fixture(scope="module")
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}"
    httpd.shutdown()
    httpd.server_close()


def make_tool(**settings) -> HttpGetTool:
    return HttpGetTool.from_spec("web", ToolSpec(type="http_get", **settings), spec_dir=Path("."))


def fetch(tool: HttpGetTool, url: str) -> dict:
    return asyncio.run(tool.call(tool.validate_args({"url": url}), CTX))


def local(**settings) -> HttpGetTool:
    return make_tool(allow_domains=["127.0.0.1"], allow_private=True, **settings)


def fake_dns(table: dict[str, list[str]]):
    async def resolve(host: str, port: int) -> list[str]:
        if host not in table:
            raise OSError(f"unknown host {host}")
        return table[host]

    return resolve


# --- fetching from the loopback server -----------------------------------------------------

def test_fetch_html_as_text(server: str):
    result = fetch(local(), f"{server}/page")
    assert result["status"] == 200 and result["content_type"] == "text/html"
    assert result["url"] == f"{server}/page" and result["truncated"] is False
    assert "# Acme" in result["text"] and "**anvils**" in result["text"]
    assert "<p>" not in result["text"] and "x()" not in result["text"]


def test_text_json_binary_and_errors(server: str):
    tool = local()
    assert fetch(tool, f"{server}/plain")["text"] == "caf\u00e9 menu"
    assert fetch(tool, f"{server}/json")["text"] == '{"ok": true}'
    assert "binary content (image/png" in fetch(tool, f"{server}/binary")["text"]
    missing = fetch(tool, f"{server}/missing")
    assert missing["status"] == 404 and missing["text"] == "not here"


def test_redirects_are_followed_and_reported(server: str):
    result = fetch(local(), f"{server}/redirect")
    assert result["url"] == f"{server}/page" and result["status"] == 200


def test_redirect_limit(server: str):
    with pytest.raises(ToolError, match="too many redirects"):
        fetch(local(max_redirects=3), f"{server}/loop")


def test_size_limit_truncates(server: str):
    result = fetch(local(max_bytes=1000), f"{server}/big")
    assert result["truncated"] is True and result["bytes"] == 1000 and result["text"] == "a" * 1000


def test_timeout(server: str):
    started = time.monotonic()
    with pytest.raises(ToolError, match="timed out"):
        fetch(local(timeout=0.3), f"{server}/slow")
    assert time.monotonic() - started < 1.5


def test_default_refuses_the_loopback_server(server: str):
    with pytest.raises(ToolError, match="loopback"):
        fetch(make_tool(allow_domains=["127.0.0.1"]), f"{server}/page")


# --- refusals ------------------------------------------------------------------------------

@pytest.mark.parametrize("url, reason", [
    ("file:///etc/passwd", "only http"),
    ("ftp://example.com/file", "only http"),
    ("gopher://example.com/", "only http"),
    ("javascript:alert(1)", "only http"),
    ("http://10.0.0.1/", "private"),
    ("http://192.168.1.1/admin", "private"),
    ("http://172.16.0.1/", "private"),
    ("http://169.254.169.254/latest/meta-data/", "link-local"),
    ("http://[::1]/", "loopback"),
    ("http://[::ffff:127.0.0.1]/", "loopback"),
    ("http://[fe80::1]/", "link-local"),
    ("http://[fd00::1]/", "private"),
    ("http://100.64.0.1/", "CGNAT"),
    ("http://0.0.0.0/", "unspecified"),
    ("http://224.0.0.1/", "multicast"),
    ("http://127.0.0.1:8080/", "loopback"),
])
def test_private_and_odd_urls_are_refused_even_with_allow_any(url: str, reason: str):
    with pytest.raises(ToolError, match=reason):
        fetch(make_tool(allow_any=True), url)


def test_hosts_resolving_to_private_addresses_are_refused():
    tool = make_tool(allow_any=True)
    tool.resolver = fake_dns({"intranet.example.com": [PUBLIC_IP, "10.1.2.3"],
                              "rebind.example.com": ["::ffff:169.254.169.254"]})
    with pytest.raises(ToolError, match="10.1.2.3, a private address"):
        fetch(tool, "http://intranet.example.com/")
    with pytest.raises(ToolError, match="link-local"):
        fetch(tool, "http://rebind.example.com/")
    with pytest.raises(ToolError, match="cannot resolve"):
        fetch(tool, "http://unknown.example.com/")


def test_allowlist_exact_and_subdomains():
    seen = []
    tool = make_tool(allow_domains=["Example.com", "*.partner.io"])
    tool.resolver = fake_dns({"example.com": [PUBLIC_IP], "api.example.com": [PUBLIC_IP],
                              "partner.io": [PUBLIC_IP]})
    tool.transport = httpx.MockTransport(lambda r: seen.append(r) or httpx.Response(200, text="ok"))
    assert fetch(tool, "https://example.com/")["text"] == "ok"
    assert fetch(tool, "https://api.example.com/x")["url"] == "https://api.example.com/x"
    assert fetch(tool, "http://partner.io/")["status"] == 200
    for url in ("http://evil.com/", "http://example.com.evil.com/", "http://notexample.com/",
                "http://user@evil.com/", "http://example.com@evil.com/"):
        with pytest.raises(ToolError, match="not on this tool's allowed domains"):
            fetch(tool, url)
    assert len(seen) == 3


def test_connection_is_pinned_to_the_checked_address():
    seen: list[httpx.Request] = []
    tool = make_tool(allow_domains=["example.com"])
    tool.resolver = fake_dns({"example.com": [PUBLIC_IP]})
    tool.transport = httpx.MockTransport(lambda r: seen.append(r) or httpx.Response(200, text="ok"))
    result = fetch(tool, "https://user:pw@example.com:8443/a?b=1")
    request = seen[0]
    assert request.url.host == PUBLIC_IP and request.url.port == 8443 and request.url.path == "/a"
    assert request.headers["host"] == "example.com:8443"
    assert request.extensions["sni_hostname"] == "example.com"  # TLS is verified against the name
    assert "authorization" not in request.headers and request.url.userinfo == b""
    assert result["url"] == "https://example.com:8443/a?b=1"


def test_redirect_to_a_private_address_is_refused():
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["host"])
        targets = {"/to-internal": "http://internal.example.com/admin",
                   "/to-metadata": "http://169.254.169.254/latest/meta-data/",
                   "/to-file": "file:///etc/passwd",
                   "/to-other": "https://elsewhere.org/"}
        return httpx.Response(302, headers={"Location": targets[request.url.path]})

    tool = make_tool(allow_domains=["example.com", "169.254.169.254"])
    tool.resolver = fake_dns({"example.com": [PUBLIC_IP], "internal.example.com": ["10.0.0.7"]})
    tool.transport = httpx.MockTransport(handler)
    with pytest.raises(ToolError, match="10.0.0.7, a private address"):
        fetch(tool, "http://example.com/to-internal")
    with pytest.raises(ToolError, match="link-local"):
        fetch(tool, "http://example.com/to-metadata")
    with pytest.raises(ToolError, match="only http"):
        fetch(tool, "http://example.com/to-file")
    with pytest.raises(ToolError, match="not on this tool's allowed domains"):
        fetch(tool, "http://example.com/to-other")
    assert seen == ["example.com"] * 4  # the refused hops were never requested


def test_redirect_from_a_real_server_to_loopback_is_refused(server: str):
    """An allowed public name served (via the test transport) by the loopback server, which
    redirects to 127.0.0.1: the second hop is checked and refused."""
    port = int(server.rsplit(":", 1)[1])

    class ToLoopback(httpx.AsyncBaseTransport):
        def __init__(self):
            self.inner = httpx.AsyncHTTPTransport()

        async def handle_async_request(self, request):
            assert request.url.host == PUBLIC_IP
            request.url = request.url.copy_with(host="127.0.0.1", port=port)
            return await self.inner.handle_async_request(request)

        async def aclose(self):
            await self.inner.aclose()

    tool = make_tool(allow_domains=["shop.example.com", "127.0.0.1"])
    tool.resolver = fake_dns({"shop.example.com": [PUBLIC_IP]})
    tool.transport = ToLoopback()
    assert fetch(tool, "http://shop.example.com/host")["text"] == "shop.example.com"
    with pytest.raises(ToolError, match="127.0.0.1, a loopback address"):
        fetch(tool, "http://shop.example.com/to-loopback")


def test_allow_domains_is_required():
    with pytest.raises(SpecError) as err:
        make_tool()
    assert err.value.path == "tools.web.allow_domains"
    assert make_tool(allow_any=True).settings.allow_any


# --- the address classifier ----------------------------------------------------------------

@pytest.mark.parametrize("address, reason", [
    ("127.0.0.1", "loopback"), ("127.8.8.8", "loopback"), ("10.255.0.1", "private"),
    ("172.31.255.255", "private"), ("192.168.0.10", "private"), ("169.254.169.254", "link-local"),
    ("100.100.100.100", "shared (CGNAT)"), ("0.0.0.0", "unspecified"), ("255.255.255.255", "reserved"),
    ("240.0.0.1", "reserved"), ("::1", "loopback"), ("::", "unspecified"), ("fe80::abcd", "link-local"),
    ("fc00::1", "private"), ("ff02::1", "multicast"), ("::ffff:10.0.0.1", "private"),
    ("2002:7f00:1::", "loopback"), ("64:ff9b::a00:1", "private"), ("192.0.2.1", "private"),
])
def test_blocked_addresses(address: str, reason: str):
    assert blocked_reason(address) == reason


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111", "::ffff:8.8.8.8"])
def test_public_addresses(address: str):
    assert blocked_reason(address) is None


def test_domain_matching():
    allowed = [normalize_domain(d) for d in ["Example.COM.", "*.docs.io", "bücher.de"]]
    assert allowed == ["example.com", "docs.io", "xn--bcher-kva.de"]
    assert host_allowed("example.com", allowed) and host_allowed("a.b.example.com", allowed)
    assert host_allowed("xn--bcher-kva.de", allowed)
    assert not host_allowed("badexample.com", allowed) and not host_allowed("example.com.evil", allowed)
