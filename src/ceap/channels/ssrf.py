"""The SSRF guard of the connections CEAP opens (RELIABILITY.md).

http(s) only; the host is resolved and every address is checked, then the
socket connects to a checked address (resolve and pin, so a DNS answer that
changes between check and connect cannot slip through); loopback, private,
CGNAT, unique-local IPv6 and other non-global addresses are refused unless
``allow_private`` (a self-hosted install, tests on loopback); link-local
addresses (cloud metadata at 169.254.169.254) are refused always.
``http_client.HttpClient`` applies it at every connection; ``outbound_guard``
applies ``refusal`` around connections a library makes itself.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import SplitResult, urlsplit

_CGNAT = ipaddress.ip_network("100.64.0.0/10")


class Refused(Exception):
    """The SSRF guard refused a target (scheme or address)."""


def refusal(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, allow_private: bool) -> str | None:
    """Why the guard refuses ``ip``, as a phrase that reads after "<ip> is" (None: allowed).
    Public unicast addresses always pass; other non-link-local unicast ones with
    ``allow_private``; link-local ones (cloud metadata at 169.254.169.254) never."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_link_local:
        return "a link-local address (cloud metadata and the like), refused even with allow_private"
    if ip.is_multicast or ip.is_unspecified:
        return "not a unicast address"
    if allow_private or (ip.is_global and ip not in _CGNAT):
        return None
    return "not a public address (set allow_private for a self-hosted target)"


def address_allowed(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, allow_private: bool) -> bool:
    """Public unicast addresses always; other non-link-local ones with ``allow_private``."""
    return refusal(ip, allow_private) is None


def check_url(url: str, allow_private: bool = False) -> SplitResult:
    """The parts of ``url``; ``Refused`` unless it is http(s) with a host. A literal IP
    address is checked now, a name when the connection is made."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise Refused(f"only http and https URLs are allowed, not {parts.scheme or 'none'!r}")
    host = parts.hostname
    if not host:
        raise Refused("the URL has no host")
    try:
        parts.port  # noqa: B018 (raises on a bad port)
    except ValueError:
        raise Refused("the URL has an invalid port") from None
    if not (host[0].isdigit() or ":" in host):  # a name, not an address
        return parts
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return parts
    why = refusal(ip, allow_private)
    if why:
        raise Refused(f"{ip} is {why}")
    return parts


def connect_checked(host: str, port: int, timeout: float | None, allow_private: bool) -> socket.socket:
    """Resolve ``host``, refuse it if any address is not allowed, connect to a checked one."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    for *_, sockaddr in infos:
        ip = ipaddress.ip_address(str(sockaddr[0]).split("%")[0])
        why = refusal(ip, allow_private)
        if why:
            raise Refused(f"{host} resolves to {ip}, {why}")
    error: OSError = OSError(f"{host}: no address")
    for family, kind, proto, _, sockaddr in infos:
        sock = socket.socket(family, kind, proto)
        try:
            sock.settimeout(timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.connect(sockaddr)
            return sock
        except OSError as exc:
            sock.close()
            error = exc
    raise error


__all__ = ["Refused", "address_allowed", "check_url", "connect_checked", "refusal"]
