"""What a shopper starts from the widget — a call, a chat, a left message — and the rules around them.

The sockets decode a frame and call one function here; the rules live here, not in the sockets: the
shop's hours, the call limits (per visitor and per client address), who rings first (the operator the
shopper is chatting with, else the one who invited them), and that an invitation taken up no longer
shows. An operator's invitation is checked here too (their sites only).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Protocol

from callserver.accounts import Account
from callserver.callbacks import Callbacks, VisitorCalls
from callserver.calls.records import VisitorContext
from callserver.calls.switchboard import ShopperChannel, Switchboard
from callserver.chats.desk import ChatDesk
from callserver.chats.errors import RateLimited
from callserver.cluster.admission import Admission
from callserver.errors import CallInProgress, NoCall
from callserver.limits import AddressLimits, RateLimiter
from callserver.logs import for_conversation
from callserver.sites import Site, SiteDirectory
from callserver.visitors.invitations import Invitations, VisitorGone
from callserver.wire.vocabulary import CallSide

# Calls one visitor may start (whatever their address): five at once, then one every ten seconds.
CALLS_PER_VISITOR_BURST = 5.0
CALLS_PER_VISITOR_RATE = 0.1


class Shopper(ShopperChannel, Protocol):
    """The widget's socket: what the switchboard tells it, plus the answer to its offer."""

    async def answer(self, call_id: str, sdp: str, resume_token: str | None = None) -> None:
        """The server's answer to the shopper's offer (sent before anyone rings), with the token
        that lets a new socket of the page resume the call (`call.resume`)."""


class Conversations:
    """Starts shoppers' calls and chats, takes their messages, and sends operators' invitations."""

    def __init__(
        self,
        switchboard: Switchboard,
        desk: ChatDesk,
        invitations: Invitations,
        sites: SiteDirectory,
        address_limits: AddressLimits,
        clock: Callable[[], float] = time.monotonic,
        admission: Admission | None = None,
        callbacks: Callbacks | None = None,
        visitor_calls: VisitorCalls | None = None,
    ) -> None:
        self._switchboard = switchboard
        self._desk = desk
        self._invitations = invitations
        self._sites = sites
        self._address_limits = address_limits
        self._calls = RateLimiter(CALLS_PER_VISITOR_RATE, CALLS_PER_VISITOR_BURST, clock)
        # A full or draining node refuses new calls (the "all busy" fallback) and, draining, new chats.
        self._admission = admission
        self.callbacks = callbacks
        self.visitor_calls = visitor_calls

    async def start_call(
        self,
        site: Site,
        visitor: VisitorContext,
        offer_sdp: str,
        shopper: Shopper,
        address: str,
        chat_id: str | None = None,
        invitation: str | None = None,
    ) -> str:
        """Answer the shopper's offer and ring; returns the call id.

        Refused when this visitor's call already rings, outside the shop's hours, or when the visitor
        or their network called too often. `chat_id` is the chat the shopper calls from: its operator
        rings first; else the operator who invited them does. `invitation` is an operator's ring of
        this page (`visitor.call`) that the shopper answers: only that operator rings.
        """
        token = visitor.token
        if self._switchboard.ringing_call_of(site.id, token) is not None:
            raise CallInProgress("Your call is already ringing.")
        site.check_open()
        if not self._calls.take((site.id, token)):
            raise RateLimited("Too many requests: please wait a moment and try again.")
        if not self._address_limits.call_allowed(address):
            raise RateLimited("Too many calls from your network: please wait a moment and try again.")
        chat = self._desk.chat_of_visitor(site.id, token)
        prefer = None
        if invitation is not None:
            if self.visitor_calls is None:
                raise NoCall("Nobody is ringing this page.")
            prefer = await self.visitor_calls.answered(site.id, token, invitation)
        elif chat is not None and chat.id == chat_id and chat.operator is not None:
            prefer = chat.operator.account.id
        elif (inviter := self._invitations.inviter_of(site.id, token)) is not None:
            prefer = inviter
        with self._admission.admit_call() if self._admission is not None else contextlib.nullcontext():
            self._invitations.answered(site.id, token)
            call_id, answer = await self._switchboard.start_call(
                site, visitor, offer_sdp, shopper, prefer, invitation
            )
        await shopper.answer(call_id, answer, self._switchboard.resume_token(call_id, CallSide.SHOPPER))
        with for_conversation("call", call_id):  # the ringing task's log lines carry the call's id
            self._switchboard.ring(call_id)  # only now: the shopper has the answer
        return call_id

    async def start_chat(
        self,
        site: Site,
        visitor: VisitorContext,
        fallback: str | None = None,
        call_id: str | None = None,
    ) -> None:
        """Open a chat (or show the open one); the operator who invited the visitor gets it first.

        A new chat is refused outside the shop's hours; one already going on may finish after closing.
        """
        if self._desk.chat_of_visitor(site.id, visitor.token) is None:
            site.check_open()
            if self._admission is not None:
                self._admission.check_chat()
        inviter = self._invitations.inviter_of(site.id, visitor.token)
        self._invitations.answered(site.id, visitor.token)
        await self._desk.start(site, visitor, fallback, call_id, inviter)

    async def leave_message(
        self,
        site: Site,
        visitor: VisitorContext,
        name: str | None,
        email: str | None,
        phone: str | None,
        text: str,
        call_id: str | None = None,
    ) -> str:
        """Take the offline form (at any hour); returns the left message's id."""
        return await self._desk.left_messages.leave(site, visitor, name, email, phone, text, call_id)

    async def invite(self, operator: Account, site_id: int, token: str) -> None:
        """An operator invites a visitor of one of their sites from the board."""
        site = self._sites.by_id(site_id)
        if site is None or not operator.works_for(site_id):
            raise VisitorGone("There is no such visitor on your sites.")
        await self._invitations.invite(site, token, operator)

    async def request_callback(
        self, site: Site, visitor: VisitorContext, phone: str, when: str | None
    ) -> str:
        """The shopper asks to be called back (at any hour); returns the request's id."""
        if self.callbacks is None:
            raise NoCall("This server takes no call-back requests.")
        return await self.callbacks.request(site, visitor.token, phone, when, visitor.page)

    async def call_visitor(
        self, operator: Account, site_id: int, token: str, callback_id: str | None = None
    ) -> str:
        """An operator rings a visitor's open page (their sites only); the ring's id."""
        if self.visitor_calls is None:
            raise NoCall("This server can't ring visitors.")
        if callback_id is not None and self.callbacks is not None:
            await self.callbacks.get(operator, callback_id)  # one of their sites' requests
        return await self.visitor_calls.ring(operator, site_id, token, callback_id)

    async def decline_visitor_call(self, site: Site, token: str, ring_id: str) -> None:
        if self.visitor_calls is None:
            raise NoCall("Nobody is ringing this page.")
        await self.visitor_calls.declined(site.id, token, ring_id)
