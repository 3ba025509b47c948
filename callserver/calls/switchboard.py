"""The live side of calls: ringing operators, answering, bridging, holding, transferring, hanging up.

The switchboard owns every call in progress in this process; operators' presence and load live in the
roster (`callserver/operators/roster.py`), which it reads and tells when an operator takes or leaves a
call. It speaks to the sockets through the small channel protocols and to audio through `MediaEngine`,
so it imports neither aiohttp nor aiortc.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from callserver import events
from callserver.accounts import Account
from callserver.background import BackgroundTasks
from callserver.calls.records import CallRecords, VisitorContext
from callserver.calls.routing import Router
from callserver.calls.states import CallState, EndReason
from callserver.clock import Clock, LoopClock, Timer
from callserver.errors import (
    BadOffer,
    BadResumeToken,
    CallInProgress,
    CallNotRinging,
    NoCall,
    NotOnline,
    NotYourCall,
    OperatorBusy,
    UnknownCall,
)
from callserver.media.engine import CallMedia, MediaEngine
from callserver.operators.roster import OperatorChannel, Presence, Roster, Seat
from callserver.sites import Site
from callserver.wire.outbound import CallDetached, CallReconnected, CallReconnecting, Frame
from callserver.wire.vocabulary import CallSide

log = logging.getLogger(__name__)


class ShopperChannel(Protocol):
    """The widget's socket as the switchboard sees it."""

    async def ringing(self, call_id: str) -> None: ...
    async def connected(self, call_id: str, operator_name: str) -> None: ...
    async def ended(self, call_id: str, reason: EndReason, why: str | None = None) -> None:
        """`why` says what the shopper should hear about a missed call: `no_answer`, `all_busy`, …"""

    async def call_event(self, frame: Frame) -> None:
        """A call frame (`call.reconnecting`, `call.reconnected`) for this page."""

    async def detached(self, call_id: str) -> None:
        """Another socket resumed the shopper's side of this call: this one no longer carries it."""


@dataclass(eq=False)
class Away:
    """A side of a call whose socket or media went away; the call waits `resume_window` for it."""

    socket: bool = False  # its signaling socket closed: it comes back with `call.resume`
    media: bool = False  # its leg's connection failed: it comes back with `call.reoffer`
    timer: Timer | None = None

    @property
    def back(self) -> bool:
        return not (self.socket or self.media)


@dataclass(frozen=True)
class CallSnapshot:
    """A call as it stands, for a socket that resumed it (a reloaded page rebuilds its UI from it)."""

    id: str
    state: CallState
    operator_name: str | None
    held: bool
    view: dict[str, object]


@dataclass(eq=False)
class LiveCall:
    id: str
    site: Site
    view: dict[str, object]  # what operators see of the call while it rings
    shopper: ShopperChannel
    media: CallMedia
    state: CallState = CallState.RINGING
    operator: Seat | None = None
    ringing: set[Seat] = field(default_factory=set)
    declined: set[int] = field(default_factory=set)
    ring_over: asyncio.Event = field(default_factory=asyncio.Event)
    ring_task: asyncio.Task[None] | None = None
    held: bool = False
    prefer: int | None = None  # the operator to ring first (the one the shopper was chatting with)
    only_preferred: bool = False  # ring nobody else (the visitor answers that operator's ring)
    transfer_to: Seat | None = None  # the operator being rung to take over the answered call
    transfer_timer: Timer | None = None
    visitor_token: str = ""
    # The softphone whose peer connection carries the operator's leg: when it goes, the call waits for
    # it to come back (`call.resume`) for the resume window.
    operator_channel: OperatorChannel | None = None
    # Per side, the secret a new socket shows to take that side over (`call.resume`).
    resume_tokens: dict[CallSide, str] = field(default_factory=dict)
    away: dict[CallSide, Away] = field(default_factory=dict)
    reconnects: dict[CallSide, int] = field(default_factory=lambda: dict.fromkeys(CallSide, 0))
    # One re-offer at a time per call: each replaces a leg.
    renegotiating: asyncio.Lock = field(default_factory=asyncio.Lock)


# Why a call ended when one side's connection went away and did not come back (`lost`).
CONNECTION_LOST = "connection_lost"

# What the switchboard tells one softphone (a typed call on the channel, checked by mypy).
Tell = Callable[[OperatorChannel], Awaitable[None]]


class OtherNodes(Protocol):
    """The calls held by the other nodes of a cluster (`callserver/cluster/calls.py`); none when alone."""

    async def forward(
        self,
        action: str,
        operator_id: int,
        call_id: str,
        channel: OperatorChannel | None = None,
        **args: object,
    ) -> dict[str, Any]:
        """Run an operator's action on the node that holds the call; UnknownCall when none does.

        `channel`: the softphone here that answers, resumes or re-offers (it carries the call from then on).
        """

    async def for_shopper(
        self, action: str, call_id: str, channel: ShopperChannel | None, **args: object
    ) -> dict[str, Any]:
        """Run a widget socket's action (`reoffer`, `hangup`, `gone`) on the node that holds the call."""

    async def resume_shopper(
        self, site_id: int, call_id: str, token: str, channel: ShopperChannel
    ) -> CallSnapshot: ...
    async def resume_operator(
        self, operator_id: int, call_id: str, token: str, channel: OperatorChannel
    ) -> CallSnapshot: ...
    def resume_token(self, call_id: str, side: CallSide) -> str | None:
        """The token the call's node handed out with its answer to a socket here."""

    async def softphone_left(self, operator_id: int, channel: OperatorChannel) -> None:
        """A softphone here closed: the call's node hears of it if it carried a call held there."""

    async def claim_answer(self, call_id: str, operator_id: int) -> bool:
        """Whether this operator is the one who answers (the first claim wins, cluster-wide)."""

    async def holding(self, call_id: str) -> None: ...
    async def released(self, call_id: str) -> None: ...


class Switchboard:
    """Every call in progress in this process; presence and load are the roster's."""

    def __init__(
        self,
        records: CallRecords,
        media: MediaEngine,
        roster: Roster,
        ring_timeout: float = 30.0,
        clock: Clock | None = None,
        sink: events.EventSink | None = None,
    ) -> None:
        self._records = records
        self._sink = sink or events.NoEvents()  # who hears `call.ended` (outbound webhooks)
        self._media = media
        self._roster = roster
        self._router = Router()
        self._ring_timeout = ring_timeout  # a site's own timeout, when set, wins
        # Seconds a side whose socket or media went away may take to come back (`resume_window`).
        self.resume_window = 30.0
        self._clock = clock or LoopClock()
        self._calls: dict[str, LiveCall] = {}
        self._placing: set[tuple[int, str]] = set()  # (site, visitor token) whose offer is being recorded
        self._ending: set[str] = set()  # calls whose end is being written and told (`ending`)
        self._background = BackgroundTasks("switchboard")
        self._unlisten = roster.on_change(self._presence_changed)
        self._closed = False
        # In a cluster: where operators' actions on calls held by other nodes go (set by the cluster).
        self.other_nodes: OtherNodes | None = None

    @property
    def roster(self) -> Roster:
        return self._roster

    @property
    def ending(self) -> int:
        """Calls that ended but whose record is still being written or whose sides are still being told.

        Their media is already closed, so a draining node counts them too: it must not stop before
        both sides heard `call.ended`.
        """
        return len(self._ending)

    # Operators ---------------------------------------------------------------------------------

    async def _presence_changed(self, seat: Seat) -> None:
        if seat.presence is not Presence.ONLINE:
            self._stop_ringing(seat)

    def operator_joined(self, account: Account, channel: OperatorChannel) -> Callable[[], None]:
        """Register an open softphone with the roster; returns the function that unregisters it."""
        seat = self._roster.seat(account)
        leave_roster = self._roster.join(account, channel)

        def leave() -> None:
            leave_roster()
            call = self._calls.get(seat.call_id) if seat.call_id is not None else None
            if (
                call is not None
                and call.operator is seat
                and (call.operator_channel is channel or not seat.channels)
            ):
                # The softphone that held the call's peer connection is gone: it may come back
                # (`call.resume`) within the resume window, else the call ends `lost`.
                self._background.spawn(self._went_away(call, CallSide.OPERATOR, socket=True))
            elif call is None and self.other_nodes is not None:  # it may carry a call held elsewhere
                self._background.spawn(self.other_nodes.softphone_left(account.id, channel))
            if not seat.channels:
                self._stop_ringing(seat)

        return leave

    def ringing_for(self, operator_id: int) -> list[dict[str, object]]:
        """The calls ringing this operator right now (for a softphone that just connected)."""
        ringing = [
            c.view for c in self._calls.values() if any(s.account.id == operator_id for s in c.ringing)
        ]
        return ringing + [
            self._transfer_view(c)
            for c in self._calls.values()
            if c.transfer_to is not None and c.transfer_to.account.id == operator_id
        ]

    def active_call_of(self, operator_id: int) -> str | None:
        seat = self._roster.seat_of(operator_id)
        return seat.call_id if seat else None

    def _stop_ringing(self, seat: Seat) -> None:
        """Take an operator who went away or offline out of every call ringing them."""
        for call in self._calls.values():
            if call.transfer_to is seat:
                self._background.spawn(self._transfer_over(call, "unavailable"))
            if seat in call.ringing:
                call.ringing.discard(seat)
                if not call.ringing:
                    call.ring_over.set()

    # Shopper side ------------------------------------------------------------------------------

    async def start_call(
        self,
        site: Site,
        visitor: VisitorContext,
        offer_sdp: str,
        shopper: ShopperChannel,
        prefer_operator: int | None = None,
        invitation: str | None = None,
    ) -> tuple[str, str]:
        """Record the call as ringing, then answer the shopper's offer; returns (call id, answer SDP).

        `prefer_operator` rings first (a chat's operator who offered the call), then the site's routing.
        With `invitation` (the visitor answers that operator's ring) only `prefer_operator` rings.
        """
        self._media.check_offer(offer_sdp)
        visitor_key = (site.id, visitor.token)
        if visitor_key in self._placing or self.ringing_call_of(site.id, visitor.token) is not None:
            raise CallInProgress("Your call is already ringing.")
        # Held from before the record is written until the call is in `_calls`: two offers of one
        # visitor on two sockets cannot both pass the check above.
        self._placing.add(visitor_key)
        try:
            call_id = await self._records.open(site.id, visitor)
        finally:
            self._placing.discard(visitor_key)
        media = self._media.open_call(
            call_id,
            lambda leg: self._leg_failed(call_id, leg),
            on_leg_back=lambda leg: self._leg_back(call_id, leg),
        )
        call = LiveCall(
            id=call_id,
            site=site,
            shopper=shopper,
            media=media,
            prefer=prefer_operator,
            only_preferred=invitation is not None,
            visitor_token=visitor.token,
            view={
                "id": call_id,
                "site": site.name,
                "ringing_since": datetime.now(UTC).isoformat(),
                **visitor.card(),
                **({"invitation": invitation} if invitation is not None else {}),
            },
        )
        call.resume_tokens[CallSide.SHOPPER] = _new_token()
        self._calls[call_id] = call
        if self.other_nodes is not None:
            await self.other_nodes.holding(call_id)
        try:
            answer = await media.answer_shopper(offer_sdp)
        except Exception as e:
            await self._end(call, EndReason.FAILED, error=str(e))
            raise BadOffer(f"The call's offer could not be answered: {e}") from e
        return call_id, answer

    def ring(self, call_id: str) -> None:
        """Start ringing operators (after the shopper has the answer)."""
        call = self._calls.get(call_id)
        if call is not None and call.ring_task is None:
            call.ring_task = self._background.spawn(self._ring(call))

    def ringing_call_of(self, site_id: int, visitor_token: str) -> str | None:
        """The id of this visitor's call that is ringing now, if any (a visitor rings one at a time)."""
        for call in self._calls.values():
            if (
                call.state is CallState.RINGING
                and call.site.id == site_id
                and call.visitor_token == visitor_token
            ):
                return call.id
        return None

    async def shopper_hangup(self, call_id: str) -> None:
        if (nodes := self._elsewhere(call_id)) is not None:
            await nodes.for_shopper("hangup", call_id, None)
            return
        call = self._calls.get(call_id)
        if call is None:
            return
        reason = EndReason.ABANDONED if call.state is CallState.RINGING else EndReason.COMPLETED
        await self._end(call, reason, by="shopper")

    async def shopper_gone(self, call_id: str, channel: ShopperChannel | None = None) -> None:
        """The shopper's socket closed without hanging up: the call waits for the resume window (a
        reloaded page or a new network resumes it); then a ringing call is abandoned, an answered one
        `lost`. With `channel`, only if that socket still carries the shopper's side."""
        if (nodes := self._elsewhere(call_id)) is not None:
            await nodes.for_shopper("gone", call_id, channel)
            return
        call = self._calls.get(call_id)
        if call is not None and (channel is None or call.shopper is channel):
            await self._went_away(call, CallSide.SHOPPER, socket=True)

    # Resuming and renegotiating ----------------------------------------------------------------

    def resume_token(self, call_id: str, side: CallSide) -> str | None:
        """The secret that lets a new socket take over `side` of this call (sent with `call.answer`)."""
        call = self._calls.get(call_id)
        if call is None and self.other_nodes is not None:
            return self.other_nodes.resume_token(call_id, side)
        return call.resume_tokens.get(side) if call is not None else None

    def _resumable(self, call_id: str, side: CallSide, token: str) -> LiveCall:
        call = self._calls.get(call_id)
        if call is None:
            raise NoCall(f"There is no call {call_id!r} in progress to resume.")
        expected = call.resume_tokens.get(side)
        if expected is None or not secrets.compare_digest(expected.encode(), token.encode()):
            raise BadResumeToken("This resume token does not belong to that call.")
        return call

    async def resume_shopper(
        self, site_id: int, call_id: str, token: str, channel: ShopperChannel
    ) -> CallSnapshot:
        """A new widget socket takes the shopper's side of the call over; the old one is detached."""
        if (nodes := self._elsewhere(call_id)) is not None:
            return await nodes.resume_shopper(site_id, call_id, token, channel)
        call = self._resumable(call_id, CallSide.SHOPPER, token)
        if call.site.id != site_id:
            raise BadResumeToken("This resume token does not belong to that call.")
        old, call.shopper = call.shopper, channel
        if old is not channel:
            with contextlib.suppress(Exception):
                await old.detached(call.id)
        await self._came_back(call, CallSide.SHOPPER, socket=True)
        return self._snapshot(call)

    async def resume_operator(
        self, operator_id: int, call_id: str, token: str, channel: OperatorChannel
    ) -> CallSnapshot:
        """A new softphone socket of the call's operator takes their side over; the old one is detached."""
        if (nodes := self._elsewhere(call_id)) is not None:
            return await nodes.resume_operator(operator_id, call_id, token, channel)
        call = self._resumable(call_id, CallSide.OPERATOR, token)
        if call.operator is None or call.operator.account.id != operator_id:
            raise NotYourCall("This call is not yours.")
        old, call.operator_channel = call.operator_channel, channel
        if old is not None and old is not channel:
            with contextlib.suppress(Exception):
                await old.call_event(CallDetached(call.id))
        await self._came_back(call, CallSide.OPERATOR, socket=True)
        return self._snapshot(call)

    async def softphone_gone(self, operator_id: int, call_id: str, channel: OperatorChannel) -> None:
        """The softphone (on another node: `channel` relays to it) that carried the operator's side
        closed: the call waits the resume window for it, as for one of this node's."""
        call = self._calls.get(call_id)
        if (
            call is not None
            and call.operator is not None
            and call.operator.account.id == operator_id
            and call.operator_channel is channel
        ):
            await self._went_away(call, CallSide.OPERATOR, socket=True)

    def _snapshot(self, call: LiveCall) -> CallSnapshot:
        name = call.operator.account.display_name if call.operator is not None else None
        return CallSnapshot(call.id, call.state, name, call.held, call.view)

    async def reoffer_shopper(self, call_id: str, offer_sdp: str, channel: ShopperChannel) -> str:
        """The shopper's fresh offer on a new peer connection replaces their leg; returns the answer."""
        if (nodes := self._elsewhere(call_id)) is not None:
            return str((await nodes.for_shopper("reoffer", call_id, channel, sdp=offer_sdp))["sdp"])
        call = self._calls.get(call_id)
        if call is None or call.shopper is not channel:
            raise NoCall("This page has no such call in progress.")
        return await self._reoffer(call, CallSide.SHOPPER, offer_sdp)

    async def reoffer_operator(
        self, operator_id: int, call_id: str, offer_sdp: str, channel: OperatorChannel
    ) -> str:
        """The operator's fresh offer replaces their leg (the softphone that sent it carries it now)."""
        if (nodes := self._elsewhere(call_id)) is not None:
            return str((await nodes.forward("reoffer", operator_id, call_id, channel, sdp=offer_sdp))["sdp"])
        call = self._own_call(operator_id, call_id)
        if call.state is not CallState.ANSWERED:
            raise CallNotRinging(f'Cannot renegotiate call {call_id} in state "{call.state}".')
        answer = await self._reoffer(call, CallSide.OPERATOR, offer_sdp)
        call.operator_channel = channel
        return answer

    async def _reoffer(self, call: LiveCall, side: CallSide, offer_sdp: str) -> str:
        # Checked before anything changes: a bad offer leaves the call (and the leg it has) as it was.
        self._media.check_offer(offer_sdp)
        async with call.renegotiating:
            if call.state is CallState.ENDED:
                raise NoCall("The call has ended.")
            try:
                answer = await call.media.replace_leg(str(side), offer_sdp)
            except Exception as e:
                raise BadOffer(f"Your offer could not be answered: {e}") from e
            if side not in call.away:
                # Told only now that the new leg is there: a refused offer changes nothing.
                await self._went_away(call, side, media=True, cause="reoffer")
            await self._came_back(call, side, media=True)
        return answer

    async def _went_away(
        self, call: LiveCall, side: CallSide, socket: bool = False, media: bool = False, cause: str = ""
    ) -> None:
        """One side's socket or media is gone: tell the other side, and wait the resume window."""
        if call.state is CallState.ENDED:
            return
        away = call.away.get(side)
        first = away is None
        if away is None:
            away = call.away[side] = Away()

            def too_long() -> None:
                self._background.spawn(self._not_back(call, side, away))

            away.timer = self._clock.call_later(self.resume_window, too_long)
        away.socket |= socket
        away.media |= media
        if first:
            log.info("call %s: the %s's %s went away", call.id, side, "socket" if socket else "media")
            cause = cause or ("socket" if socket else "media")
            await self._records.event(
                call.id, events.CALL_RECONNECTING, self._operator_id(call, side), side=str(side), cause=cause
            )
            await self._tell_other(call, side, CallReconnecting(call.id, side))

    async def _came_back(
        self, call: LiveCall, side: CallSide, socket: bool = False, media: bool = False
    ) -> None:
        away = call.away.get(side)
        if away is None or call.state is CallState.ENDED:
            return
        if socket:
            away.socket = False
        if media:
            away.media = False
        if not away.back:
            return
        del call.away[side]
        if away.timer is not None:
            away.timer.cancel()
        call.reconnects[side] += 1
        log.info("call %s: the %s is back", call.id, side)
        await self._records.event(
            call.id, events.CALL_RECONNECTED, self._operator_id(call, side), side=str(side)
        )
        await self._tell_other(call, side, CallReconnected(call.id, side))

    async def _not_back(self, call: LiveCall, side: CallSide, away: Away) -> None:
        """The resume window passed and `side` did not come back."""
        if call.away.get(side) is not away or call.state is CallState.ENDED:
            return
        if call.state is CallState.RINGING and side is CallSide.SHOPPER:
            await self._end(call, EndReason.ABANDONED, by="shopper")
        else:
            await self._end(call, EndReason.LOST, by=str(side), why=CONNECTION_LOST)

    def _operator_id(self, call: LiveCall, side: CallSide) -> int | None:
        return call.operator.account.id if side is CallSide.OPERATOR and call.operator else None

    async def _tell_other(self, call: LiveCall, side: CallSide, frame: Frame) -> None:
        """Tell the side that did not move: the operator's softphones, or the shopper's page."""
        if side is CallSide.SHOPPER:
            if call.operator is not None:
                await self._tell(call.operator, call.id, lambda c: c.call_event(frame))
        else:
            with contextlib.suppress(Exception):
                await call.shopper.call_event(frame)

    # Operator side -----------------------------------------------------------------------------

    def holds(self, call_id: str) -> bool:
        """Whether this node holds the call (its media lives here)."""
        return call_id in self._calls

    def _elsewhere(self, call_id: str) -> OtherNodes | None:
        """The other nodes, when the call is not held here and this node is in a cluster."""
        return self.other_nodes if call_id not in self._calls else None

    def _call_for(self, call_id: str) -> LiveCall:
        call = self._calls.get(call_id)
        if call is None:
            raise UnknownCall(f"There is no call {call_id!r} in progress.")
        return call

    async def accept(
        self, operator_id: int, call_id: str, offer_sdp: str, channel: OperatorChannel | None = None
    ) -> str:
        """The operator answers on `channel`: their leg is terminated and bridged; returns the answer SDP."""
        if (nodes := self._elsewhere(call_id)) is not None:
            return str((await nodes.forward("accept", operator_id, call_id, channel, sdp=offer_sdp))["sdp"])
        call = self._call_for(call_id)
        seat = self._roster.seat_of(operator_id)
        if seat is None or seat.presence is not Presence.ONLINE:
            raise NotOnline("Set yourself online to answer calls.")
        if call.transfer_to is seat:
            return await self._take_over(call, seat, offer_sdp, channel)
        if call.state is not CallState.RINGING or call.operator is not None:
            raise CallNotRinging(f'Cannot answer call {call_id} in state "{call.state}".')
        if seat.call_id is not None:
            raise OperatorBusy("Hang up your current call before answering another.")
        if seat not in call.ringing:
            raise NotYourCall("This call is not ringing for you.")
        self._media.check_offer(offer_sdp)
        if self.other_nodes is not None:
            # Operators on several nodes may answer at once: one claim in Redis decides.
            won = await self.other_nodes.claim_answer(call.id, operator_id)
            if not won or call.state is not CallState.RINGING or call.operator is not None:
                raise CallNotRinging(f'Cannot answer call {call_id} in state "{call.state}": taken.')
        call.operator = seat
        call.operator_channel = channel
        call.resume_tokens[CallSide.OPERATOR] = _new_token()
        self._roster.took_call(operator_id, call.id)
        others = call.ringing - {seat}
        call.ringing.clear()
        call.ring_over.set()
        for other in others:
            await self._tell(other, call.id, lambda c: c.withdrawn(call.id, "answered_elsewhere"))
        try:
            answer = await call.media.answer_operator(offer_sdp)
        except Exception as e:
            await self._end(call, EndReason.FAILED, error=str(e))
            raise BadOffer(f"Your offer could not be answered: {e}") from e
        call.state = CallState.ANSWERED
        await self._records.answered(call.id, operator_id)
        call.media.connect()
        await self._records.event(call.id, events.CALL_CONNECTED, operator_id)
        await call.shopper.connected(call.id, seat.account.display_name)
        return answer

    async def operator_connected(self, operator_id: int, call_id: str) -> None:
        """Tell the operator's softphones the call is bridged (after they have the answer)."""
        if (nodes := self._elsewhere(call_id)) is not None:
            await nodes.forward("connected", operator_id, call_id)
            return
        call = self._calls.get(call_id)
        if call and call.operator and call.operator.account.id == operator_id:
            await self._tell(call.operator, call_id, lambda c: c.connected(call_id))

    async def decline(self, operator_id: int, call_id: str) -> None:
        if (nodes := self._elsewhere(call_id)) is not None:
            await nodes.forward("decline", operator_id, call_id)
            return
        call = self._call_for(call_id)
        seat = self._roster.seat_of(operator_id)
        if seat is not None and call.transfer_to is seat:
            await self._transfer_over(call, "declined")
            return
        if seat is None or seat not in call.ringing:
            raise NotYourCall("This call is not ringing for you.")
        call.ringing.discard(seat)
        call.declined.add(operator_id)
        await self._records.event(call.id, events.CALL_DECLINED, operator_id)
        await self._tell(seat, call.id, lambda c: c.withdrawn(call.id, "declined"))
        if not call.ringing:
            call.ring_over.set()

    def _own_call(self, operator_id: int, call_id: str) -> LiveCall:
        call = self._call_for(call_id)
        if call.operator is None or call.operator.account.id != operator_id:
            raise NotYourCall("This call is not yours.")
        return call

    async def hangup(self, operator_id: int, call_id: str) -> None:
        if (nodes := self._elsewhere(call_id)) is not None:
            await nodes.forward("hangup", operator_id, call_id)
            return
        await self._end(self._own_call(operator_id, call_id), EndReason.COMPLETED, by="operator")

    async def hold(self, operator_id: int, call_id: str, on: bool) -> None:
        if (nodes := self._elsewhere(call_id)) is not None:
            await nodes.forward("hold", operator_id, call_id, on=on)
            return
        call = self._own_call(operator_id, call_id)
        if call.state is not CallState.ANSWERED or call.held == on:
            return
        call.held = on
        call.media.hold(on)
        await self._records.event(call.id, events.CALL_HELD if on else events.CALL_RESUMED, operator_id)

    # Transfer ----------------------------------------------------------------------------------

    def _transfer_view(self, call: LiveCall) -> dict[str, object]:
        operator = call.operator
        return {
            **call.view,
            "transfer_from": {"id": operator.account.id, "name": operator.account.display_name}
            if operator
            else None,
        }

    async def transfer(self, operator_id: int, call_id: str, to_operator_id: int) -> None:
        """Ring another operator for an answered call; on their answer their leg replaces this one."""
        if (nodes := self._elsewhere(call_id)) is not None:
            await nodes.forward("transfer", operator_id, call_id, to=to_operator_id)
            return
        call = self._own_call(operator_id, call_id)
        if call.state is not CallState.ANSWERED:
            raise CallNotRinging(f'Cannot transfer call {call_id} in state "{call.state}".')
        if call.transfer_to is not None:
            raise CallInProgress("A transfer of this call is already ringing.")
        target = self._roster.seat_of(to_operator_id)
        if target is None or to_operator_id == operator_id or not target.account.works_for(call.site.id):
            raise NotYourCall("That operator cannot take calls of this site.")
        if not target.free:
            raise OperatorBusy(f"{target.account.display_name} is not free to take the call.")
        call.transfer_to = target

        def timed_out() -> None:
            self._background.spawn(self._transfer_over(call, "timeout"))

        call.transfer_timer = self._clock.call_later(self._ring_timeout_of(call), timed_out)
        await self._records.event(
            call.id, events.CALL_TRANSFER_RANG, to_operator_id, from_operator=operator_id
        )
        for channel in list(target.channels):
            await channel.incoming(self._transfer_view(call))

    async def _transfer_over(self, call: LiveCall, reason: str) -> None:
        """A transfer that rang and was not taken: the first operator keeps the call."""
        target = call.transfer_to
        if target is None:
            return
        call.transfer_to = None
        if call.transfer_timer is not None:
            call.transfer_timer.cancel()
        await self._tell(target, call.id, lambda c: c.withdrawn(call.id, reason))
        if call.operator is not None and call.state is CallState.ANSWERED:
            await self._tell(call.operator, call.id, lambda c: c.transfer_failed(call.id, reason))

    async def _take_over(
        self, call: LiveCall, seat: Seat, offer_sdp: str, channel: OperatorChannel | None
    ) -> str:
        if seat.call_id is not None:
            raise OperatorBusy("Hang up your current call before taking another.")
        self._media.check_offer(offer_sdp)
        first = call.operator
        call.transfer_to = None
        if call.transfer_timer is not None:
            call.transfer_timer.cancel()
        try:
            answer = await call.media.replace_operator(offer_sdp)
        except Exception as e:
            if first is not None:
                await self._tell(first, call.id, lambda c: c.transfer_failed(call.id, "failed"))
            raise BadOffer(f"Your offer could not be answered: {e}") from e
        call.operator = seat
        call.operator_channel = channel
        call.resume_tokens[CallSide.OPERATOR] = _new_token()  # the first operator's no longer resumes
        call.away.pop(CallSide.OPERATOR, None)
        call.held = False
        self._roster.took_call(seat.account.id, call.id)
        if first is not None:
            self._roster.released_call(first.account.id)
            await self._records.transferred(call.id, first.account.id, seat.account.id)
            to_name = seat.account.display_name
            await self._tell(first, call.id, lambda c: c.transferred(call.id, to_name))
        await call.shopper.connected(call.id, seat.account.display_name)
        return answer

    # Ringing and ending ------------------------------------------------------------------------

    async def _ring(self, call: LiveCall) -> None:
        tried: set[int] = set()
        await call.shopper.ringing(call.id)
        while call.state is CallState.RINGING and call.operator is None:
            seats = self._roster.seats()
            batch = self._router.next_to_ring(call.site.id, call.site.strategy, seats, tried)
            preferred = self._roster.seat_of(call.prefer) if call.prefer is not None and not tried else None
            if preferred is not None and preferred.free and preferred.account.works_for(call.site.id):
                batch = [preferred]
            elif call.only_preferred:
                batch = []  # the operator who rang the visitor is gone, busy, or did not take it
            if not batch:
                everyone_declined = bool(tried) and tried <= call.declined
                if everyone_declined:
                    await self._end(call, EndReason.DECLINED, why="declined")
                else:
                    nobody = "all_busy" if self._roster.operators_online(call.site.id) else "nobody_online"
                    await self._end(call, EndReason.MISSED, why="no_answer" if tried else nobody)
                return
            call.ring_over.clear()
            call.ringing = set(batch)
            for seat in batch:
                tried.add(seat.account.id)
                await self._records.event(call.id, events.CALL_RANG, seat.account.id)
                for channel in list(seat.channels):
                    await channel.incoming(call.view)
            # The clock's timer ends the wait (a test's clock can move it on without sleeping).
            timeout = self._clock.call_later(self._ring_timeout_of(call), call.ring_over.set)
            try:
                await call.ring_over.wait()
            finally:
                timeout.cancel()
            if call.operator is not None:
                return
            for seat in list(call.ringing):
                await self._records.event(call.id, events.CALL_RING_TIMEOUT, seat.account.id)
                await self._tell(seat, call.id, lambda c: c.withdrawn(call.id, "timeout"))
            call.ringing.clear()

    def _leg_failed(self, call_id: str, leg: str) -> None:
        call = self._calls.get(call_id)
        if call is None:
            return
        if leg in list(CallSide):
            # Its browser may re-offer on a new peer connection (`call.reoffer`) within the window.
            self._background.spawn(self._went_away(call, CallSide(leg), media=True))
        else:  # the media worker that held both legs died: nothing of the call is left to resume
            self._background.spawn(self._end(call, EndReason.FAILED, failed_leg=leg))

    def _leg_back(self, call_id: str, leg: str) -> None:
        """Packets flow again on a leg whose media was reported gone (no re-offer was needed)."""
        call = self._calls.get(call_id)
        if call is not None and leg in list(CallSide):
            self._background.spawn(self._came_back(call, CallSide(leg), media=True))

    async def _end(self, call: LiveCall, reason: EndReason, **detail: str) -> None:
        """End a call once: free the operator, close the media, write the record, tell both sides."""
        if call.state is CallState.ENDED:
            return
        was_answered = call.state is CallState.ANSWERED
        call.state = CallState.ENDED
        self._calls.pop(call.id, None)
        self._ending.add(call.id)
        try:
            await self._ended(call, reason, was_answered, detail)
        finally:
            self._ending.discard(call.id)

    async def _ended(
        self, call: LiveCall, reason: EndReason, was_answered: bool, detail: dict[str, str]
    ) -> None:
        if self.other_nodes is not None:
            await self.other_nodes.released(call.id)
        current = asyncio.current_task()
        if call.ring_task is not None and call.ring_task is not current:
            call.ring_task.cancel()
        await self._transfer_over(call, str(reason))
        for away in call.away.values():
            if away.timer is not None:
                away.timer.cancel()
        call.away.clear()
        still_ringing = list(call.ringing)
        call.ringing.clear()
        quality: dict[str, object] | None = None
        if was_answered:
            try:
                quality = await call.media.quality()
            except Exception:
                log.exception("could not read the quality figures of call %s", call.id)
            if quality is not None:
                for side, count in call.reconnects.items():
                    figures = quality.setdefault(str(side), {})
                    if isinstance(figures, dict):
                        figures["reconnects"] = count
        await call.media.close()
        try:
            await self._records.ended(call.id, reason, quality, **detail)
        finally:
            # Told only once the record is written: whoever reacts reads the final state.
            for seat in still_ringing:
                await self._tell(seat, call.id, lambda c: c.withdrawn(call.id, reason))
            operator = call.operator
            if operator is not None:
                self._roster.released_call(operator.account.id)
                await self._tell(operator, call.id, lambda c: c.ended(call.id, reason))
            with contextlib.suppress(Exception):
                await call.shopper.ended(call.id, reason, detail.get("why"))
        await self._sink.publish(call.site.id, events.CALL_ENDED, {"id": call.id})
        log.info("call %s ended: %s %s", call.id, reason, detail or "")

    def _ring_timeout_of(self, call: LiveCall) -> float:
        return call.site.ring_timeout or self._ring_timeout

    async def _tell(self, seat: Seat, call_id: str, what: Tell) -> None:
        """Tell each of the operator's softphones; one that fails is logged, the others still hear."""
        for channel in list(seat.channels):
            try:
                await what(channel)
            except Exception:
                log.warning("could not tell operator %s about call %s", seat.account.email, call_id)

    async def close(self) -> None:
        """End every call in progress as `dropped` (the server is going away); safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self._unlisten()
        for call in list(self._calls.values()):
            await self._end(call, EndReason.DROPPED)
        await self._background.close()


def _new_token() -> str:
    return secrets.token_urlsafe(24)
