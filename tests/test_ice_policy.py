"""The server sends ICE checks only to addresses its network policy allows, whatever an offer names."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest

from callserver.media.candidates import DEFAULT_DENIED_NETWORKS, drop_denied_candidates, parse_networks
from callserver.settings import ConfigError, load_settings
from tests.stack import running_stack, settings_for

STUN_MAGIC_COOKIE = bytes.fromhex("2112a442")


def candidate(address: str, port: int = 50000) -> str:
    return f"a=candidate:1 1 udp 2130706431 {address} {port} typ host\r\n"


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "127.1.2.3",
        "::1",
        "fe80::1",
        "169.254.10.20",
        "::ffff:127.0.0.1",
        "0.0.0.0",
        "224.0.0.1",
        "metadata.internal.example",
    ],
)
def test_denied_addresses_leave_the_offer(address: str) -> None:
    sdp = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n" + candidate(address) + candidate("192.0.2.7")
    kept = drop_denied_candidates(sdp, parse_networks(DEFAULT_DENIED_NETWORKS))
    assert address not in kept
    assert candidate("192.0.2.7") in kept
    assert kept.startswith("v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n")


@pytest.mark.parametrize(
    "address", ["10.1.2.3", "192.168.1.20", "203.0.113.9", "2001:db8::5", "a1b2c3.local"]
)
def test_ordinary_addresses_stay(address: str) -> None:
    sdp = "v=0\r\n" + candidate(address)
    assert drop_denied_candidates(sdp, parse_networks(DEFAULT_DENIED_NETWORKS)) == sdp


def test_the_policy_is_configurable_and_checked(tmp_path: Path) -> None:
    settings = load_settings(environ={"CALLSERVER_ICE_DENIED_NETWORKS": '["10.0.0.0/8"]'})
    assert drop_denied_candidates(candidate("10.9.9.9"), settings.denied_networks) == ""
    assert drop_denied_candidates(candidate("127.0.0.1"), settings.denied_networks) != ""
    with pytest.raises(ConfigError, match="not-a-network"):
        load_settings(environ={"CALLSERVER_ICE_DENIED_NETWORKS": '["not-a-network"]'})


class StunListener(asyncio.DatagramProtocol):
    """A UDP port on loopback that counts the STUN requests it receives."""

    def __init__(self) -> None:
        self.requests = 0
        self.arrived = asyncio.Event()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if len(data) >= 20 and data[4:8] == STUN_MAGIC_COOKIE:
            self.requests += 1
            self.arrived.set()


def host_address() -> str:
    """This machine's first non-loopback IPv4 address, where the server's ICE agent listens too."""
    from aioice.ice import get_host_addresses

    addresses = [a for a in get_host_addresses(use_ipv4=True, use_ipv6=False) if not a.startswith("127.")]
    if not addresses:
        pytest.skip("this machine has no address but loopback")
    return addresses[0]


@pytest.mark.parametrize("allowed", [False, True], ids=["denied by policy", "allowed"])
async def test_an_offer_naming_a_denied_address_gets_no_checks_there(tmp_path: Path, allowed: bool) -> None:
    # Loopback can't serve as the target here (a socket on the host address can't reach it anyway), so
    # the test's policy denies the host address itself; the default policy is checked above.
    address = host_address()
    policy = [] if allowed else [f"{address}/32"]
    loop = asyncio.get_running_loop()
    transport, listener = await loop.create_datagram_endpoint(StunListener, local_addr=(address, 0))
    port = transport.get_extra_info("sockname")[1]
    try:
        async with running_stack(settings_for(tmp_path, ice_denied_networks=policy)) as stack:
            # Someone is online, so that the call rings (and its media lives) while the test listens.
            await stack.sockets.operator("anna@shop.example", online=True)
            shopper = await stack.sockets.shopper()
            sdp = await shopper.offer(440)
            lines = [line for line in sdp.splitlines(keepends=True) if not line.startswith("a=candidate:")]
            at = next(i for i, line in enumerate(lines) if line.startswith("a=end-of-candidates"))
            crafted = "".join([*lines[:at], candidate(address, port), *lines[at:]])
            await shopper.send(
                {"type": "call.offer", "sdp": crafted, "context": {"page": "https://shop.example/"}}
            )
            await shopper.receive("call.answer")
            # The allowed case shows how soon checks come; the denied case waits as long.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(listener.arrived.wait(), timeout=5)
    finally:
        transport.close()
    if allowed:
        assert listener.requests > 0
    else:
        assert listener.requests == 0
