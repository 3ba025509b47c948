"""Where a webhook may go: http(s) URLs whose host resolves to public addresses only (SSRF).

A shop's URL that points at loopback, a private network, link-local (cloud metadata at
169.254.169.254) or another non-public address would let whoever manages a site make this server
talk to the machines behind it. Such URLs are refused unless the subscription allows private
networks explicitly. The host name is resolved when the subscription is added and again at every
delivery, and the connection goes only to the answers that were checked (DNS rebinding: a name can
answer a public address first and a private one later).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from callserver.errors import InvalidInput
from callserver.networks import DEFAULT_DENIED_NETWORKS, parse_networks

MAX_URL = 2000
# What the ICE policy denies (loopback, link-local, multicast, IPv4-mapped …) and what is not public.
_DENIED = parse_networks(DEFAULT_DENIED_NETWORKS)


class PrivateAddress(InvalidInput):
    code = "private_address"


class BadUrl(InvalidInput):
    code = "invalid_url"


def is_public(address: str) -> bool:
    """Whether an IP address is on the public internet (not loopback, private, link-local, reserved)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # an IPv6 zone id is link-local anyway
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast and not any(ip in network for network in _DENIED)


def checked_url(url: str) -> str:
    """The URL, stripped, when it is an absolute http(s) URL with a host; `invalid_url` otherwise."""
    url = url.strip()
    if not url or len(url) > MAX_URL or any(c.isspace() or ord(c) < 32 for c in url):
        raise BadUrl("The webhook URL must be one http:// or https:// address (at most 2000 characters).")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (raises ValueError for a port that is not a number in range)
    except ValueError as e:
        raise BadUrl(f"The webhook URL {url[:100]!r} is not a URL.") from e
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BadUrl(f"The webhook URL {url[:100]!r} must start with http:// or https:// and name a host.")
    if parts.username or parts.password:
        raise BadUrl("The webhook URL must not carry a user name or password; it is signed instead.")
    return url


async def resolve(host: str) -> list[str]:
    """The addresses a host name (or literal address) stands for; `invalid_url` when it has none."""
    try:
        return [str(ipaddress.ip_address(host.strip("[]")))]
    except ValueError:
        pass
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as e:
        raise BadUrl(f"The webhook host {host[:100]!r} does not resolve: {e}") from e
    return sorted({str(info[4][0]) for info in infos})


async def check_destination(url: str, allow_private_network: bool) -> None:
    """Refuse a URL whose host resolves to any non-public address, unless private networks are allowed."""
    host = urlsplit(url).hostname or ""
    addresses = await resolve(host)
    if allow_private_network:
        return
    private = [a for a in addresses if not is_public(a)]
    if private:
        raise PrivateAddress(
            f"{host[:100]} is on a loopback, private or link-local address ({', '.join(private[:3])}); "
            "allow private networks for this webhook if that is meant."
        )


class PublicOnlyResolver(AbstractResolver):
    """aiohttp's resolver, keeping only public answers: the connection goes where the check looked."""

    def __init__(self) -> None:
        self._resolver = DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        answers = [a for a in await self._resolver.resolve(host, port, family) if is_public(a["host"])]
        if not answers:
            raise OSError(f"{host} resolves to no public address (private networks are not allowed)")
        return answers

    async def close(self) -> None:
        await self._resolver.close()
