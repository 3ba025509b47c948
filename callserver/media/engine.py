"""The small interface between calls and their audio, so that the media engine can be replaced."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

LegFailed = Callable[[str], None]
"""Called with "shopper" or "operator" when that leg's connection fails or closes by itself or nothing
arrives from it any more (`callserver.media.media_watch`), or with "media_worker" when the worker
process that held both legs died."""
LegBack = Callable[[str], None]
"""Called with "shopper" or "operator" when packets arrive again on a leg reported gone for want of
them (its ICE consent recovered before any re-offer)."""


class CallMedia(Protocol):
    """The two legs of one call and the bridge between them."""

    async def answer_shopper(self, offer_sdp: str) -> str:
        """Terminate the shopper's leg; it hears the waiting tone until `connect()`."""

    async def answer_operator(self, offer_sdp: str) -> str:
        """Terminate the operator's leg."""

    async def replace_operator(self, offer_sdp: str) -> str:
        """Terminate a new operator leg and bridge it in place of the current one, which is closed."""

    async def replace_leg(self, side: str, offer_sdp: str) -> str:
        """Terminate a new peer connection for `side` ("shopper" or "operator") in place of its current
        leg, which is closed; the other leg keeps playing (silence meanwhile) and the call keeps its
        state (ringing, bridged or held) and its recording."""

    def connect(self) -> None:
        """Bridge the legs: each hears the other from now on."""

    def hold(self, on: bool) -> None:
        """On hold the shopper hears the hold tone and the operator hears silence."""

    async def quality(self) -> dict[str, Any]:
        """Loss, jitter, RTT and whether media was relayed, per leg."""

    async def close(self) -> None:
        """Hang up both legs; safe to call twice."""


class MediaEngine(Protocol):
    def check_offer(self, sdp: str) -> None:
        """Raise BadOffer unless `sdp` is an offer with audio this engine can answer."""

    def open_call(
        self,
        call_id: str,
        on_leg_failed: LegFailed,
        recording_dir: Path | None = None,
        on_leg_back: LegBack | None = None,
    ) -> CallMedia:
        """The media of a new call; with `recording_dir`, the call is recorded there once bridged."""

    async def close(self) -> None: ...


class RecordingStore(Protocol):
    """Where recordings go and who is told when one is ready (the engine asks when a call is answered)."""

    async def directory_for(self, call_id: str) -> Path | None:
        """The directory for this call's recording, or None when its site does not record calls."""

    async def saved(self, call_id: str, playback: Path) -> None:
        """The call's playback file (both voices, mixed) is ready at `playback`."""
