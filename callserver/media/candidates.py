"""Where the server's ICE agent may send connectivity checks: the network policy for offered candidates.

An offer's `a=candidate` lines name the addresses the server's ICE agent will send STUN checks to. A
browser never needs the server to reach its loopback or link-local addresses, and a crafted offer could
otherwise make the server probe them (or anything else it can reach: the classic SSRF shape of a media
server, cf. coturn's `denied-peer-ip`). Candidates whose address lies in a denied network are removed from
the offer before aiortc sees it; hostnames other than mDNS names (`*.local`, RFC 8838's way of hiding a
host address, which aioice resolves on the local link only) are removed too, so that no DNS lookup turns
into a check to an address nobody vetted.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from callserver.media.engine import CallMedia, LegBack, LegFailed, MediaEngine
from callserver.networks import DEFAULT_DENIED_NETWORKS, Network, parse_networks

# The policy's networks are configuration (settings.py reads them): they live in callserver/networks.py.
__all__ = ["DEFAULT_DENIED_NETWORKS", "Network", "PolicedEngine", "drop_denied_candidates", "parse_networks"]

log = logging.getLogger(__name__)


def _allowed(address: str, denied: Sequence[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address.lower().endswith(".local")
    return not any(ip.version == net.version and ip in net for net in denied)


def drop_denied_candidates(sdp: str, denied: Sequence[Network]) -> str:
    """`sdp` without the candidates whose address the policy denies (RFC 8839: the address is field 5)."""
    kept: list[str] = []
    dropped: list[str] = []
    for line in sdp.splitlines(keepends=True):
        if line.startswith("a=candidate:"):
            fields = line.split()
            if len(fields) < 6 or not _allowed(fields[4], denied):
                dropped.append(fields[4] if len(fields) > 4 else line.strip())
                continue
        kept.append(line)
    if dropped:
        log.info("ignored offered ICE candidate(s) outside the network policy: %s", ", ".join(dropped))
    return "".join(kept)


class PolicedCall:
    """A call's media whose offers pass the network policy before either leg is answered."""

    def __init__(self, media: CallMedia, denied: Sequence[Network]) -> None:
        self._media = media
        self._denied = denied

    async def answer_shopper(self, offer_sdp: str) -> str:
        return await self._media.answer_shopper(drop_denied_candidates(offer_sdp, self._denied))

    async def answer_operator(self, offer_sdp: str) -> str:
        return await self._media.answer_operator(drop_denied_candidates(offer_sdp, self._denied))

    async def replace_operator(self, offer_sdp: str) -> str:
        return await self._media.replace_operator(drop_denied_candidates(offer_sdp, self._denied))

    async def replace_leg(self, side: str, offer_sdp: str) -> str:
        return await self._media.replace_leg(side, drop_denied_candidates(offer_sdp, self._denied))

    def connect(self) -> None:
        self._media.connect()

    def hold(self, on: bool) -> None:
        self._media.hold(on)

    async def quality(self) -> dict[str, Any]:
        return await self._media.quality()

    async def close(self) -> None:
        await self._media.close()


class PolicedEngine:
    """Any media engine (in-process or worker pool) behind the network policy for offered candidates."""

    def __init__(self, engine: MediaEngine, denied: Sequence[Network]) -> None:
        self.engine = engine
        self._denied = tuple(denied)

    def check_offer(self, sdp: str) -> None:
        self.engine.check_offer(sdp)

    def open_call(
        self,
        call_id: str,
        on_leg_failed: LegFailed,
        recording_dir: Path | None = None,
        on_leg_back: LegBack | None = None,
    ) -> CallMedia:
        return PolicedCall(
            self.engine.open_call(call_id, on_leg_failed, recording_dir, on_leg_back), self._denied
        )

    async def close(self) -> None:
        await self.engine.close()
