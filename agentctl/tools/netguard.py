"""Which hosts and addresses an outbound HTTP request may reach (SSRF protection).

``blocked_reason`` classifies an IP address; addresses embedded in IPv6 forms (IPv4-mapped,
6to4, Teredo, NAT64) are unwrapped first so ``::ffff:127.0.0.1`` is treated as loopback.
``Resolver`` is the injectable DNS lookup: the http_get tool resolves once, checks every
address, then connects to the checked address itself, so a second (rebinding) lookup
cannot send it elsewhere.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Awaitable[list[str]]]

CGNAT = ipaddress.ip_network("100.64.0.0/10")
NAT64 = ipaddress.ip_network("64:ff9b::/96")


async def system_resolver(host: str, port: int) -> list[str]:
    """All addresses ``host`` resolves to, via the event loop's getaddrinfo."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    seen: list[str] = []
    for info in infos:
        address = str(info[4][0]).split("%", 1)[0]  # drop an IPv6 zone id
        if address not in seen:
            seen.append(address)
    return seen


def blocked_reason(address: str | IPAddress) -> str | None:
    """Why a request must not go to ``address`` ("loopback", "private"...), or None if public."""
    ip = ipaddress.ip_address(address) if isinstance(address, str) else address
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(ip)
        if embedded is not None:
            return blocked_reason(embedded)
    checks = (
        ("unspecified", ip.is_unspecified),
        ("loopback", ip.is_loopback),
        ("link-local", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("shared (CGNAT)", isinstance(ip, ipaddress.IPv4Address) and ip in CGNAT),
        ("reserved", ip.is_reserved),
        ("private", ip.is_private),
        ("non-public", not ip.is_global),
    )
    for label, hit in checks:
        if hit:
            return label
    return None


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if ip in NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def normalize_domain(domain: str) -> str:
    """``*.Example.COM.`` -> ``example.com``; internationalised names in their IDNA form."""
    domain = domain.strip().lower().rstrip(".")
    if domain.startswith("*."):
        domain = domain[2:]
    domain = domain.lstrip(".")
    if domain.startswith("[") and domain.endswith("]"):
        domain = domain[1:-1]
    try:
        return domain.encode("idna").decode("ascii")
    except UnicodeError:
        return domain


def host_allowed(host: str, allow_domains: list[str]) -> bool:
    """Exact match or a subdomain of an allowed domain (``api.example.com`` under ``example.com``)."""
    host = host.lower().rstrip(".")
    return any(host == d or host.endswith("." + d) for d in allow_domains)
