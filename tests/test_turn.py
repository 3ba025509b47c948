"""TURN through a real coturn run from the hardened sample config (docs/coturn.conf): browsers get
short-lived credentials it accepts (TURN REST API), a relay-only call works both ways over TURN/UDP,
TURN/TCP and TURN/TLS and is recorded as relayed, and an allocation cannot reach loopback or private
addresses."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import socket
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from aioice import stun
from aioice.turn import TurnClientUdpProtocol
from playwright.async_api import BrowserContext, Page, Playwright, expect

from callserver.networks import DEFAULT_DENIED_NETWORKS
from tests.browsers import LISTEN, go_online, hears, launch, sign_in
from tests.servers import TurnServer, hardened_coturn
from tests.stack import PASSWORD, running_stack, settings_for
from tests.test_browser_call import place_call
from tests.test_ice_policy import host_address

SECRET = "turn-shared-secret"
SAMPLE_CONFIG = Path(__file__).resolve().parent.parent / "docs" / "coturn.conf"

# Gathers with TURN only, on the shop's page, with the ICE servers the widget's configuration hands out.
RELAY_CANDIDATES = """
async ([base, key]) => {
  const config = await (await fetch(`${base}/widget/config?site=${key}`)).json();
  const pc = new RTCPeerConnection({ iceServers: config.ice_servers, iceTransportPolicy: 'relay' });
  pc.createDataChannel('probe');
  const types = [];
  const done = new Promise((resolve) => {
    pc.onicecandidate = (e) => (e.candidate ? types.push(e.candidate.type) : resolve());
    setTimeout(resolve, 8000);
  });
  await pc.setLocalDescription(await pc.createOffer());
  await done;
  pc.close();
  return types;
}
"""

# The fake microphone file is per browser process: the operator's context, in the shopper's process,
# speaks a 1000 Hz oscillator instead, so that one Chromium serves both sides.
OSCILLATOR_MICROPHONE = """
(() => {
  if (!navigator.mediaDevices) return;
  navigator.mediaDevices.getUserMedia = async () => {
    const ctx = new AudioContext();
    const tone = ctx.createOscillator();
    tone.frequency.value = 1000;
    const level = ctx.createGain();
    level.gain.value = 0.4;
    const out = ctx.createMediaStreamDestination();
    tone.connect(level).connect(out);
    tone.start();
    await ctx.resume();
    return out.stream;
  };
})();
"""

# Keeps the page's peer connections, to read the selected candidate pair from getStats.
KEEP_PEERS = """
(() => {
  const Original = window.RTCPeerConnection;
  if (!Original) return;
  window.__peers = [];
  window.RTCPeerConnection = class extends Original {
    constructor(...args) { super(...args); window.__peers.push(this); }
  };
})();
"""

# The newest peer connection's selected pair: its local candidate's type and TURN transport, and RTT.
SELECTED_PAIR = """
async () => {
  const pc = window.__peers.at(-1);
  const stats = await pc.getStats();
  let transport = null;
  stats.forEach((s) => { if (s.type === 'transport' && s.selectedCandidatePairId) transport = s; });
  const pair = transport && stats.get(transport.selectedCandidatePairId);
  if (!pair || pair.state !== 'succeeded') return null;
  const local = stats.get(pair.localCandidateId);
  return { type: local.candidateType, relayProtocol: local.relayProtocol || null,
           rtt: pair.currentRoundTripTime ?? null, policy: pc.getConfiguration().iceTransportPolicy };
}
"""


@pytest.fixture(scope="module")
def host() -> str:
    return host_address()


@pytest.fixture(scope="module")
def turn(host: str) -> Iterator[TurnServer]:
    # Relays from this machine's own address, where the server's ICE agent listens; `allowed-peer-ip`
    # for it is what an install whose callserver has a private address adds (docs/coturn.conf).
    with hardened_coturn(SAMPLE_CONFIG, SECRET, relay_ip=host, allowed_peers=(host,), tls=True) as server:
        yield server


@pytest.mark.parametrize(("secret", "relayed"), [(SECRET, True), ("not-the-secret", False)])
async def test_a_browser_allocates_a_relay_with_the_credentials_it_is_given(
    tmp_path: Path, playwright: Playwright, turn: TurnServer, secret: str, relayed: bool
) -> None:
    settings = settings_for(tmp_path, turn_urls=[turn.url], turn_secret=secret, turn_ttl=600)
    async with running_stack(settings) as stack:
        browser = await launch(playwright, None)
        try:
            page = await browser.new_page()
            await page.goto(stack.shop_url)
            types = await page.evaluate(RELAY_CANDIDATES, [stack.url, stack.site.key])
        finally:
            await browser.browser.close()
        # With the server's secret coturn grants an allocation; with another one it refuses.
        assert ("relay" in types) is relayed, types


async def selected_pair(page: Page) -> dict[str, object]:
    """The page's call once ICE has selected a pair (waits for it)."""
    for _ in range(100):
        pair = await page.evaluate(SELECTED_PAIR)
        if pair is not None:
            return dict(pair)
        await asyncio.sleep(0.1)
    raise AssertionError("no candidate pair was selected")


@pytest.fixture
async def one_browser(
    playwright: Playwright, tones: dict[str, Path], turn: TurnServer
) -> AsyncIterator[tuple[Page, Page]]:
    """The shopper's page (440 Hz fake microphone) and the operator's (1000 Hz) in one Chromium, which
    trusts the TURN server's self-signed certificate (by its key) and no other."""
    assert turn.certificate is not None
    pin = f"--ignore-certificate-errors-spki-list={turn.certificate.spki}"
    shopper_context = await launch(playwright, tones["shopper"], flags=[pin])
    try:
        assert shopper_context.browser is not None
        operator_context: BrowserContext = await shopper_context.browser.new_context(
            permissions=["microphone"]
        )
        for context in (shopper_context, operator_context):
            await context.add_init_script(KEEP_PEERS)
        await operator_context.add_init_script(OSCILLATOR_MICROPHONE)
        await operator_context.add_init_script(LISTEN)
        yield await shopper_context.new_page(), await operator_context.new_page()
    finally:
        await shopper_context.browser.close()  # type: ignore[union-attr]


async def test_a_relay_only_call_is_heard_both_ways_over_turn_udp_tcp_and_tls(
    tmp_path: Path, turn: TurnServer, one_browser: tuple[Page, Page]
) -> None:
    shop, operator = one_browser
    assert turn.tls_url is not None
    for protocol, url in (("udp", turn.url), ("tcp", turn.tcp_url), ("tls", turn.tls_url)):
        settings = settings_for(
            tmp_path / protocol,
            turn_urls=[url],
            turn_secret=SECRET,
            ice_transport_policy="relay",
            # The browsers' only candidates are the relay's, on this machine's own address: the default
            # policy (loopback, link-local, multicast and mapped addresses denied) lets them through.
            ice_denied_networks=list(DEFAULT_DENIED_NETWORKS),
        )
        async with running_stack(settings) as stack:
            await stack.add_user(f"anna-{protocol}@shop.example", name="Anna")
            await sign_in(operator, stack.url, "operator", f"anna-{protocol}@shop.example", PASSWORD)
            await go_online(operator)
            await shop.goto(stack.shop_url)

            call_id = await place_call(shop, operator)
            await operator.get_by_test_id("op-incoming").get_by_test_id("op-answer").click()
            await expect(shop.get_by_test_id("cb-status")).to_contain_text("Anna", timeout=15_000)
            await hears(operator, 440)
            await hears(shop, 1000)

            # Both browsers reach the server only through coturn, on the transport they were given.
            for page in (shop, operator):
                pair = await selected_pair(page)
                assert pair["policy"] == "relay"
                assert (pair["type"], pair["relayProtocol"]) == ("relay", protocol), pair

            await shop.get_by_test_id("cb-hangup").click()
            await expect(shop.get_by_test_id("cb-status")).to_contain_text("Call ended", timeout=10_000)
            record = await stack.ended_call(call_id)
            assert record.end_reason == "completed"
            for side in ("shopper", "operator"):
                assert record.quality[side]["relayed"] is True, record.quality
                assert record.quality[side]["packets_received"] > 10, record.quality


def test_relay_only_without_a_turn_server_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="needs a TURN server"):
        settings_for(tmp_path, ice_transport_policy="relay")
    # A TURN server configured by hand is enough.
    settings_for(tmp_path, ice_transport_policy="relay", ice_servers=[{"urls": ["turn:t.example:3478"]}])


def credentials(secret: str, who: str) -> tuple[str, str]:
    """TURN REST API credentials, as callserver hands them out (callserver/media/ice.py)."""
    username = f"{int(time.time()) + 600}:{who}"
    password = base64.b64encode(hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest())
    return username, password.decode()


# RFC 6156's REQUESTED-ADDRESS-FAMILY (one byte, 0x02 for IPv6, then three reserved), which aioice's
# STUN tables do not name: an IPv6 relay is needed to ask for IPv4-mapped peers.
REQUESTED_ADDRESS_FAMILY = (0x0017, "REQUESTED-ADDRESS-FAMILY", stun.pack_unsigned, stun.unpack_unsigned)
UDP = 17 << 24  # REQUESTED-TRANSPORT: protocol number, then three reserved bytes (RFC 8656 §18.7)


async def permission_refusals(
    turn: TurnServer, peers: list[str], ipv6: bool = False
) -> dict[str, int | None]:
    """For each peer, the error code coturn answers a CreatePermission toward it with (None: granted),
    from an allocation with an IPv4 relay address (or an IPv6 one)."""
    host, port = turn.url.split(":")[1], int(turn.url.split(":")[2].split("?")[0])
    username, password = credentials(SECRET, "probe")
    loop = asyncio.get_running_loop()
    transport, client = await loop.create_datagram_endpoint(
        lambda: TurnClientUdpProtocol((host, port), username, password, 600, 500), remote_addr=(host, port)
    )
    stun.ATTRIBUTES_BY_NAME[REQUESTED_ADDRESS_FAMILY[1]] = REQUESTED_ADDRESS_FAMILY
    answers: dict[str, int | None] = {}
    try:
        allocate = stun.Message(message_method=stun.Method.ALLOCATE, message_class=stun.Class.REQUEST)
        allocate.attributes.update({"LIFETIME": 600, "REQUESTED-TRANSPORT": UDP})
        if ipv6:
            allocate.attributes["REQUESTED-ADDRESS-FAMILY"] = 0x02 << 24
        await client.request_with_retry(allocate)
        for peer in peers:
            request = stun.Message(
                message_method=stun.Method.CREATE_PERMISSION, message_class=stun.Class.REQUEST
            )
            request.attributes["XOR-PEER-ADDRESS"] = (peer, 9)
            try:
                await client.request_with_retry(request)
                answers[peer] = None
            except stun.TransactionFailed as e:
                answers[peer] = e.response.attributes["ERROR-CODE"][0]
    finally:
        stun.ATTRIBUTES_BY_NAME.pop(REQUESTED_ADDRESS_FAMILY[1], None)
        transport.close()  # the allocation expires with its credentials' lifetime
    return answers


async def test_the_sample_config_refuses_relaying_to_loopback_and_private_addresses(
    turn: TurnServer, host: str
) -> None:
    denied = [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "100.64.0.1",
        "169.254.169.254",
        "0.0.0.1",
    ]
    denied = [peer for peer in denied if peer != host]
    answers = await permission_refusals(turn, [*denied, "198.51.100.1", host])
    # 403 Forbidden IP (RFC 8656 §9.1) for every address that is not the public Internet; a
    # public-looking address is granted, and so is the one allowed-peer-ip names (callserver's own).
    assert answers == {**dict.fromkeys(denied, 403), "198.51.100.1": None, host: None}


def has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not has_ipv6_loopback(), reason="this machine has no IPv6 loopback to relay from")
async def test_the_sample_config_refuses_ipv4_mapped_and_private_ipv6_peers() -> None:
    # Debian's coturn 4.6 lets ::ffff:127.0.0.1 through as an IPv6 peer (checked without the sample's
    # ::ffff:0:0/96 line: granted); the sample refuses every mapped address, and ::1 and fc00::/7.
    with hardened_coturn(SAMPLE_CONFIG, SECRET, relay_ip="::1") as turn6:
        denied = ["::ffff:127.0.0.1", "::ffff:10.0.0.1", "::1", "fd00::1", "fe80::1"]
        answers = await permission_refusals(turn6, [*denied, "2001:db8::1"], ipv6=True)
    assert answers == {**dict.fromkeys(denied, 403), "2001:db8::1": None}
