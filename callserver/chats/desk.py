"""The chat desk: every live text chat in this process, who handles it, and the queue of those waiting.

Operators handle several chats at once (up to `max_chats`) and one call; a new chat goes to the
least-loaded operator of its site, or waits in a queue that operators can pick from while the shopper
sees their place in it. Every message is stored before it is acknowledged. The desk speaks to sockets
through `ChatChannel` and to operators through the roster's seats, so it imports neither aiohttp
nor aiortc. In a cluster each node's desk holds the chats whose visitor's socket is on that node;
what it cannot see itself (a chat held elsewhere, other nodes' queues) it asks `ChatPlaces`
(`chats/places.py`; the Redis one is `cluster/chats.py`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from callserver import events
from callserver.accounts import Account
from callserver.background import BackgroundTasks
from callserver.calls.records import VisitorContext
from callserver.calls.routing import Router
from callserver.chats.canned import CannedReplies
from callserver.chats.channels import ChatChannel, send, to_seats
from callserver.chats.errors import (
    ChatLimitReached,
    MailUnavailable,
    NobodyOnline,
    NoChat,
    NotYourChat,
    UnknownChat,
)
from callserver.chats.left_mail import Outbox
from callserver.chats.left_messages import LeftMessages
from callserver.chats.limits import ChatLimits, message_body
from callserver.chats.places import ChatPlaces, LocalPlaces, WaitingChat
from callserver.chats.records import ChatRecords, StoredMessage
from callserver.errors import NotOnline
from callserver.jsontypes import Json
from callserver.mail import Mail
from callserver.operators.roster import Presence, Roster, Seat
from callserver.sites import Site
from callserver.wire import outbound as wire
from callserver.wire.outbound import Frame, JsonObject
from callserver.wire.vocabulary import ChatClosedReason, ChatState, Fallback, MessageStatus

log = logging.getLogger(__name__)

MAX_PREVIEW_CHARS = 4000

# What the operator reads first in a chat that a call fell back to: the shopper tried to call.
FALLBACK_NOTES: dict[str, str] = {
    Fallback.MICROPHONE_DENIED: "The visitor tried to call, but their microphone was blocked.",
    Fallback.MICROPHONE_FAILED: "The visitor tried to call, but their microphone could not be started.",
    Fallback.NO_WEBRTC: "The visitor tried to call, but their browser cannot make calls.",
    Fallback.ICE_FAILED: "The visitor tried to call, but the call could not connect.",
    Fallback.NO_ANSWER: "The visitor called, but nobody answered in time.",
    Fallback.ALL_BUSY: "The visitor called while every operator was busy.",
    Fallback.DECLINED: "The visitor called, but the call was declined.",
    Fallback.FAILED: "The visitor's call was interrupted.",
}


@dataclass(eq=False)
class LiveChat:
    id: str
    site: Site
    token: str
    view: JsonObject  # what operators see of the chat: visitor, page, context, fallback, call
    waiting_since: float
    operator: Seat | None = None
    closing: asyncio.TimerHandle | None = None  # the visitor left every page: close unless they return
    preview: str = field(default="", repr=False)
    # Since when it waits as Unix time: the queues of several nodes are ordered by it.
    waiting_wall: float = field(default_factory=time.time)
    told_place: int | None = None  # the place in the queue the visitor's sockets were last told
    passing_to: Seat | None = None  # being transferred: not in the queue meanwhile

    @property
    def key(self) -> tuple[int, str]:
        return (self.site.id, self.token)


class ChatDesk:
    """Live chats, the queue and left messages of this process; `close()` is safe to call twice."""

    def __init__(
        self,
        records: ChatRecords,
        seats: Roster,
        outbox: Outbox,
        max_chats: int = 5,
        visitor_grace: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
        mail_retry_after: float = 60.0,
        sink: events.EventSink | None = None,
        places: ChatPlaces | None = None,
    ) -> None:
        self._records = records
        # Chats other nodes hold (a cluster); a node alone has none.
        self._places: ChatPlaces = places or LocalPlaces()
        self._sink = sink or events.NoEvents()  # who hears `chat.closed` and `message.left`
        self._seats = seats
        self._outbox = outbox
        self._router = Router()
        self.max_chats = max_chats
        self._visitor_grace = visitor_grace
        self._clock = clock
        self.limits = ChatLimits(clock)
        self.left_messages = LeftMessages(records, seats, outbox, self.limits, mail_retry_after, self._sink)
        self.canned = CannedReplies(records, seats)
        self._chats: dict[str, LiveChat] = {}
        self._by_visitor: dict[tuple[int, str], LiveChat] = {}
        self._visitors: dict[tuple[int, str], list[ChatChannel]] = {}
        self._background = BackgroundTasks("chat desk")
        self._operators_push: asyncio.Task[None] | None = None
        # What open widgets were last told per site: (open, someone online). See _site_status_changed.
        self._sites: dict[int, Site] = {}
        self._site_status: dict[int, tuple[bool, bool]] = {}
        self._status_push: asyncio.Task[None] | None = None
        self._unlisten = seats.on_change(self._seat_changed)
        self._closed = False

    # Views ---------------------------------------------------------------------------------------

    def _waiting(self, site_id: int | None = None) -> list[LiveChat]:
        chats = [c for c in self._chats.values() if c.operator is None and c.passing_to is None]
        if site_id is not None:
            chats = [c for c in chats if c.site.id == site_id]
        return sorted(chats, key=lambda c: c.waiting_since)

    def _operator_view(self, chat: LiveChat) -> wire.OperatorChat:
        seat = chat.operator
        return wire.OperatorChat(
            card=chat.view,
            state=ChatState.OPEN if seat else ChatState.WAITING,
            operator=wire.OperatorRef(seat.account.id, seat.account.display_name) if seat else None,
        )

    def _visitor_view(
        self, chat: LiveChat, closed: bool = False, elsewhere: Sequence[WaitingChat] = ()
    ) -> wire.VisitorChat:
        """The chat as the widget sees it; a waiting one's place counts `elsewhere` (other nodes' queues)."""
        if closed:
            return wire.VisitorChat(chat.id, ChatState.CLOSED)
        if chat.operator is not None:
            return wire.VisitorChat(chat.id, ChatState.OPEN, operator_name=chat.operator.account.display_name)
        return wire.VisitorChat(chat.id, ChatState.WAITING, position=self._place(chat, elsewhere))

    def _place(self, chat: LiveChat, elsewhere: Sequence[WaitingChat]) -> int:
        """The chat's place in its site's queue on every node: by when each started waiting."""
        mine = (chat.waiting_wall, chat.id)
        ahead = sum(1 for c in self._waiting(chat.site.id) if (c.waiting_wall, c.id) < mine)
        ahead += sum(1 for w in elsewhere if w.site_id == chat.site.id and (w.since, w.chat_id) < mine)
        return ahead + 1

    async def _visitor_state(self, chat: LiveChat) -> wire.VisitorChat:
        """The chat as its widget sees it now, other nodes' queues counted; remembered as told."""
        elsewhere = await self._places.waiting_elsewhere() if chat.operator is None else []
        view = self._visitor_view(chat, elsewhere=elsewhere)
        chat.told_place = view.position
        return view

    async def _tell_place(self, chat: LiveChat, elsewhere: Sequence[WaitingChat]) -> None:
        view = self._visitor_view(chat, elsewhere=elsewhere)
        chat.told_place = view.position
        await self._to_visitor(chat, wire.ChatStateChanged(view))

    def _operators(self, account: Account) -> tuple[wire.Colleague, ...]:
        return tuple(
            wire.Colleague(
                id=s.account.id,
                name=s.account.display_name,
                presence=str(s.presence if s.channels else Presence.OFFLINE),
                in_call=s.call_id is not None,
                chats=len(s.chats),
            )
            for s in sorted(self._seats.seats(), key=lambda s: s.account.display_name)
            if s.account.id != account.id and _share_a_site(account, s.account)
        )

    def _queue_for(
        self, account: Account, elsewhere: list[WaitingChat] | None = None
    ) -> tuple[wire.OperatorChat, ...]:
        """The queue as `account` sees it: the waiting chats of their sites, here and on other nodes."""
        here = [(c, self._operator_view(c)) for c in self._waiting() if account.works_for(c.site.id)]
        if not elsewhere:
            return tuple(view for _, view in here)
        mine = [w for w in elsewhere if account.works_for(w.site_id)]
        merged = [(c.waiting_wall, view) for c, view in here] + [
            (w.since, wire.OperatorChat(card=w.card, state=ChatState.WAITING, operator=None)) for w in mine
        ]
        return tuple(view for _, view in sorted(merged, key=lambda pair: pair[0]))

    def waiting_here(self) -> list[WaitingChat]:
        """This node's queue, oldest first, as other nodes show it."""
        return [WaitingChat(c.id, c.site.id, c.view, c.waiting_wall) for c in self._waiting()]

    def assignments(self) -> list[tuple[int, str]]:
        """(operator id, chat id) of every chat here that has an operator."""
        return [(c.operator.account.id, c.id) for c in self._chats.values() if c.operator is not None]

    def holds(self, chat_id: str) -> bool:
        """Whether this desk holds the chat (in a cluster, another node may)."""
        return chat_id in self._chats

    def chat_ids(self) -> list[str]:
        return list(self._chats)

    async def hand_over(self, chat_id: str) -> bool:
        """Let another node take the chat (the visitor's socket is there now); it stays open.

        This node's sockets of that visitor see no more of it until they reconnect.
        """
        chat = self._chats.pop(chat_id, None)
        if chat is None:
            return False
        if self._by_visitor.get(chat.key) is chat:
            del self._by_visitor[chat.key]
        if chat.closing is not None:
            chat.closing.cancel()
            chat.closing = None
        seat, chat.operator = chat.operator, None
        if seat is not None:
            # The claim stays: the node taking the chat gives it back to them under it (or it expires).
            self._seats.released_chat(seat.account.id, chat.id)
        else:
            await self._broadcast_queue()
        return True

    async def entries_for(self, operator_id: int) -> list[JsonObject]:
        """The operator's chats held here, as `hello` lists them."""
        entries = []
        for chat in sorted(self._chats.values(), key=lambda c: c.id):
            if chat.operator is not None and chat.operator.account.id == operator_id:
                entry = wire.OperatorChatEntry(self._operator_view(chat), await self._messages(chat))
                entries.append(entry.encode())
        return entries

    async def _messages(self, chat: LiveChat) -> tuple[wire.Message, ...]:
        return tuple(m.wire() for m in await self._records.messages(chat.id))

    async def operator_state(self, seat: Seat) -> JsonObject:
        """Everything a softphone shows besides calls: its chats, the queue, left messages, canned replies."""
        account = seat.account
        chats = []
        for chat_id in sorted(seat.chats):
            chat = self._chats.get(chat_id)
            if chat is not None:
                chats.append(wire.OperatorChatEntry(self._operator_view(chat), await self._messages(chat)))
        elsewhere = await self._places.waiting_elsewhere()
        listed: list[Json] = [c.encode() for c in chats]
        listed.extend(await self._places.chats_elsewhere(seat))
        return {
            "chats": listed,
            "queue": [c.encode() for c in self._queue_for(account, elsewhere)],
            "left_messages": [m.encode() for m in await self.left_messages.listed(account)],
            "canned": [c.encode() for c in await self.canned.replies(account)],
            "operators": [c.encode() for c in self._operators(account)],
            "max_chats": self.max_chats,
        }

    # Sending -------------------------------------------------------------------------------------

    async def _send(self, channel: ChatChannel, frame: Frame) -> bool:
        return await send(channel, frame)

    async def _to_visitor(self, chat: LiveChat, frame: Frame) -> bool:
        sent = False
        for channel in list(self._visitors.get(chat.key, [])):
            sent = await send(channel, frame) or sent
        return sent

    async def _to_operator(self, seat: Seat | None, frame: Frame) -> bool:
        return await to_seats([seat], frame)

    async def _broadcast_queue(self) -> None:
        """Tell waiting shoppers their place and operators what waits (here and on other nodes)."""
        await self._places.waiting_here(self.waiting_here())
        elsewhere = await self._places.waiting_elsewhere()
        for chat in self._waiting():
            await self._tell_place(chat, elsewhere)
        for seat in self._seats.seats():
            if seat.channels:
                await self._to_operator(seat, wire.ChatQueue(self._queue_for(seat.account, elsewhere)))

    def _operators_changed(self) -> None:
        """Colleagues' presence or load changed: tell every softphone once, a moment later.

        Each softphone gets the whole list, so sending it on every change costs operators squared;
        changes that come together (a busy shop answering many calls) go out as one.
        """
        if self._operators_push is None or self._operators_push.done():
            self._operators_push = self._background.spawn(self._broadcast_operators(delay=0.25))

    def _site_status_changed(self) -> None:
        """Presence changed: open widgets learn, a moment later, whether someone can answer now.

        Only a change of "can anyone answer" goes out (not every operator coming and going), and
        changes that come together go out as one: a flapping softphone must not flood every widget.
        """
        if self._status_push is None or self._status_push.done():
            self._status_push = self._background.spawn(self._push_site_status(delay=0.25))

    def _availability(self, site: Site) -> tuple[bool, int]:
        return site.is_open(), self._seats.operators_online(site.id)

    async def _push_site_status(self, delay: float = 0.0) -> None:
        await asyncio.sleep(delay)
        by_site: dict[int, list[ChatChannel]] = {}
        for (site_id, _token), channels in self._visitors.items():
            by_site.setdefault(site_id, []).extend(channels)
        for site_id in set(self._site_status) - set(by_site):
            del self._site_status[site_id]  # no widget open: the next one starts from its hello
            self._sites.pop(site_id, None)
        for site_id, channels in by_site.items():
            is_open, online = self._availability(self._sites[site_id])
            if self._site_status.get(site_id) == (is_open, online > 0):
                continue
            self._site_status[site_id] = (is_open, online > 0)
            frame = wire.SiteStatus(open=is_open, operators_online=online)
            for channel in channels:
                await self._send(channel, frame)

    async def _broadcast_operators(self, delay: float = 0.0) -> None:
        await asyncio.sleep(delay)
        for seat in self._seats.seats():
            if seat.channels:
                await self._to_operator(seat, wire.Operators(self._operators(seat.account)))

    # Visitors ------------------------------------------------------------------------------------

    async def visitor_joined(
        self, site: Site, token: str, channel: ChatChannel, told_online: int | None = None
    ) -> Callable[[], None]:
        """Register a widget socket; a returning visitor gets their open chat's history at once.

        `told_online` is what the socket's hello said of the operators online: presence that changed
        between the hello and this registration reaches the widget now (later changes are pushed).
        Returns the function that unregisters the socket.
        """
        key = (site.id, token)
        self._visitors.setdefault(key, []).append(channel)
        self._sites[site.id] = site
        is_open, online = self._availability(site)
        if site.id not in self._site_status:  # changes from here on are pushed
            self._site_status[site.id] = (is_open, online > 0)
        if told_online is not None and (told_online > 0) != (online > 0):
            await self._send(channel, wire.SiteStatus(open=is_open, operators_online=online))
        chat = self._by_visitor.get(key)
        if chat is None:
            await self._revive(site, token)  # shows its history to the visitor's sockets itself
        else:
            if chat.closing is not None:
                chat.closing.cancel()
                chat.closing = None
            await self._send_history(chat, channel)

        def leave() -> None:
            channels = self._visitors.get(key, [])
            if channel in channels:
                channels.remove(channel)
            if channels:
                return
            self._visitors.pop(key, None)
            live = self._by_visitor.get(key)
            if live is not None and live.closing is None and not self._closed:
                # Moving to another page of the shop closes this socket for a moment only.
                live.closing = asyncio.get_running_loop().call_later(
                    self._visitor_grace,
                    lambda: self._background.spawn(self._close(live, ChatClosedReason.VISITOR_LEFT)),
                )

        return leave

    async def _revive(self, site: Site, token: str) -> LiveChat | None:
        """A chat a previous run of the server left open: back to its operator if they are here, or queued."""
        found = await self._records.find_open(site.id, token)
        if found is None or found.id in self._chats:
            return self._chats.get(found.id) if found else None
        # In a cluster another node may hold it (the visitor's last page went there): it moves here.
        await self._places.take_over(found.id)
        if found.id in self._chats:  # taken meanwhile by another socket of this visitor
            return self._chats[found.id]
        view = {**found.context, "id": found.id, "site": site.name, "site_id": site.id}
        chat = LiveChat(id=found.id, site=site, token=token, view=view, waiting_since=self._clock())
        await self._register(chat)
        previous = self._seats.seat_of(found.operator_id) if found.operator_id else None
        await self._assign(chat, previous, show_history=True)
        return chat

    async def _register(self, chat: LiveChat) -> None:
        self._chats[chat.id] = chat
        self._by_visitor[chat.key] = chat
        await self._places.holding(chat.id)

    async def _send_history(self, chat: LiveChat, channel: ChatChannel) -> None:
        view = await self._visitor_state(chat)
        await self._send(channel, wire.ChatHistory(view, await self._messages(chat)))
        ids = await self._records.delivered(chat.id, ("operator", "system"))
        if ids:
            await self._to_operator(
                chat.operator, wire.ChatReceipt(chat.id, tuple(ids), MessageStatus.DELIVERED)
            )

    async def start(
        self,
        site: Site,
        visitor: VisitorContext,
        fallback: str | None = None,
        call_id: str | None = None,
        prefer_operator: int | None = None,
    ) -> None:
        """Open a chat for this visitor (or show them the one they have), routed to an operator or queued.

        `prefer_operator` gets it first when they can take it (the operator who invited the visitor).
        """
        chat = self._by_visitor.get((site.id, visitor.token)) or await self._revive(site, visitor.token)
        if chat is not None:
            await self._to_visitor(chat, wire.ChatStateChanged(await self._visitor_state(chat)))
            return
        if not self._seats.operators_online(site.id):
            raise NobodyOnline("Nobody is online right now: leave a message and we will get back to you.")
        self.limits.form(site.id, visitor.token)
        view: JsonObject = {
            "site": site.name,
            "site_id": site.id,
            "started_at": datetime.now(UTC).isoformat(),
            **visitor.card(),
            "fallback": fallback,
        }
        chat_id, linked_call = await self._records.open(
            site.id, visitor, call_id, {**view, "call_id": call_id}
        )
        view.update(id=chat_id, call_id=linked_call)
        chat = LiveChat(id=chat_id, site=site, token=visitor.token, view=view, waiting_since=self._clock())
        await self._register(chat)
        note = FALLBACK_NOTES.get(fallback or "")
        if note:
            await self._records.add_message(chat.id, "system", note)
        await self._assign(
            chat,
            self._seats.seat_of(prefer_operator) if prefer_operator is not None else None,
            show_history=True,
        )

    async def post_visitor(
        self, site_id: int, token: str, text: str, client_id: str | None, origin: ChatChannel
    ) -> None:
        chat = self._visitor_chat(site_id, token)
        body = message_body(text)
        self.limits.message(site_id, token)
        stored = await self._records.add_message(chat.id, "visitor", body)
        chat.preview = ""
        message = stored.wire()
        await self._send(origin, wire.ChatAck(chat.id, client_id, message))
        for channel in list(self._visitors.get(chat.key, [])):
            if channel is not origin:
                await self._send(channel, wire.ChatMessage(chat.id, message))
        if await self._to_operator(chat.operator, wire.ChatMessage(chat.id, message)):
            await self._delivered(chat, "visitor")

    async def visitor_typing(self, site_id: int, token: str, text: str) -> None:
        chat = self._visitor_chat(site_id, token)
        chat.preview = text[:MAX_PREVIEW_CHARS]
        await self._to_operator(chat.operator, wire.VisitorTyping(chat.id, chat.preview))

    async def visitor_read(self, site_id: int, token: str, up_to: int) -> None:
        chat = self._visitor_chat(site_id, token)
        ids = await self._records.read(chat.id, ("operator", "system"), up_to)
        if ids:
            await self._to_operator(chat.operator, wire.ChatReceipt(chat.id, tuple(ids), MessageStatus.READ))

    async def visitor_close(self, site_id: int, token: str) -> None:
        await self._close(self._visitor_chat(site_id, token), ChatClosedReason.VISITOR)

    def _visitor_chat(self, site_id: int, token: str) -> LiveChat:
        chat = self._by_visitor.get((site_id, token))
        if chat is None:
            raise NoChat("There is no open chat: start one first.")
        return chat

    def chat_of_visitor(self, site_id: int, token: str) -> LiveChat | None:
        return self._by_visitor.get((site_id, token))

    def counts(self) -> tuple[int, int]:
        """(chats with an operator, chats waiting in the queue) in this process: node load, metrics."""
        waiting = sum(1 for c in self._chats.values() if c.operator is None)
        return len(self._chats) - waiting, waiting

    async def _delivered(self, chat: LiveChat, sender: str) -> None:
        ids = await self._records.delivered(chat.id, (sender,))
        if not ids:
            return
        receipt = wire.ChatReceipt(chat.id, tuple(ids), MessageStatus.DELIVERED)
        if sender == "visitor":
            await self._to_visitor(chat, receipt)
        else:
            await self._to_operator(chat.operator, receipt)

    # Operators -----------------------------------------------------------------------------------

    def _own(self, seat: Seat, chat_id: str) -> LiveChat:
        chat = self._chats.get(chat_id)
        if chat is None:
            raise UnknownChat(f"There is no open chat {chat_id!r}.")
        if chat.operator is not seat:
            raise NotYourChat("This chat is not yours.")
        return chat

    async def operator_joined(self, seat: Seat) -> None:
        """A softphone opened: the queue may drain to it, and colleagues see it."""
        await self._drain()
        self._operators_changed()
        self._site_status_changed()

    async def post_operator(
        self, seat: Seat, chat_id: str, text: str, client_id: str | None, origin: ChatChannel
    ) -> None:
        if chat_id not in self._chats:
            await self._places.forward(seat, "send", chat_id, origin, {"text": text, "client_id": client_id})
            return
        chat = self._own(seat, chat_id)
        body = message_body(text)
        account = seat.account
        stored = await self._records.add_message(chat.id, "operator", body, account.id, account.display_name)
        message = stored.wire()
        await self._send(origin, wire.ChatAck(chat.id, client_id, message))
        for channel in self._places.echo_channels(seat, origin):
            await self._send(channel, wire.ChatMessage(chat.id, message))
        await self._to_visitor(chat, wire.OperatorTyping(chat.id, active=False))
        if await self._to_visitor(chat, wire.ChatMessage(chat.id, message)):
            await self._delivered(chat, "operator")

    async def operator_typing(self, seat: Seat, chat_id: str, active: bool) -> None:
        if chat_id not in self._chats:
            await self._places.forward(seat, "typing", chat_id, None, {"active": active})
            return
        chat = self._own(seat, chat_id)
        await self._to_visitor(chat, wire.OperatorTyping(chat.id, active))

    async def operator_read(self, seat: Seat, chat_id: str, up_to: int) -> None:
        if chat_id not in self._chats:
            await self._places.forward(seat, "read", chat_id, None, {"up_to": up_to})
            return
        chat = self._own(seat, chat_id)
        ids = await self._records.read(chat.id, ("visitor",), up_to)
        if ids:
            await self._to_visitor(chat, wire.ChatReceipt(chat.id, tuple(ids), MessageStatus.READ))

    async def operator_close(self, seat: Seat, chat_id: str) -> None:
        if chat_id not in self._chats:
            await self._places.forward(seat, "close", chat_id, None, {})
            return
        await self._close(self._own(seat, chat_id), ChatClosedReason.OPERATOR)

    async def offer_call(self, seat: Seat, chat_id: str) -> None:
        """Invite the shopper to call: one click in the widget rings this operator first."""
        if chat_id not in self._chats:
            await self._places.forward(seat, "offer_call", chat_id, None, {})
            return
        chat = self._own(seat, chat_id)
        await self._note(chat, f"{seat.account.display_name} offered a call.")
        await self._to_visitor(chat, wire.CallOffered(chat.id, wire.Name(seat.account.display_name)))

    async def pick(self, seat: Seat, chat_id: str) -> None:
        """Take a waiting chat from the queue (of this node or another)."""
        chat = self._chats.get(chat_id)
        if chat is None:
            await self._places.forward(seat, "pick", chat_id, None, {})
            return
        if chat.operator is not None:
            raise NotYourChat("Another operator has taken this chat already.")
        self._check_can_take(seat, chat)
        if not await self._give(chat, seat):
            if chat.operator is not None:
                raise NotYourChat("Another operator has taken this chat already.")
            raise ChatLimitReached(f"{seat.account.display_name} already has {self.max_chats} chats.")
        await self._broadcast_queue()

    async def transfer(self, seat: Seat, chat_id: str, to_operator_id: int) -> None:
        """Hand a chat to a colleague, with its history; the shopper is told who answers now."""
        if chat_id not in self._chats:
            await self._places.forward(seat, "transfer", chat_id, None, {"to": to_operator_id})
            return
        chat = self._own(seat, chat_id)
        target = self._seats.seat_of(to_operator_id)
        if target is None or target is seat:
            raise NotOnline("That operator is not online.")
        self._check_can_take(target, chat)
        if not await self._places.claim(target, chat.id, self.max_chats):  # full on another node's count
            raise ChatLimitReached(f"{target.account.display_name} already has {self.max_chats} chats.")
        if chat.operator is not seat:  # closed or moved while the claim was on its way
            await self._places.unclaim(target.account.id, chat.id)
            raise NotYourChat("This chat is not yours.")
        chat.operator, chat.passing_to = None, target
        try:
            await self._release(seat, chat)
            await self._to_operator(seat, wire.ChatClosed(chat.id, ChatClosedReason.TRANSFERRED))
            await self._note(
                chat, f"{seat.account.display_name} passed the chat to {target.account.display_name}."
            )
        finally:
            chat.passing_to = None
        if not await self._give(chat, target):  # claimed above: only if the chat closed meanwhile
            await self._places.unclaim(target.account.id, chat.id)
        self._operators_changed()

    def _check_can_take(self, seat: Seat, chat: LiveChat) -> None:
        if not seat.account.works_for(chat.site.id):
            raise NotYourChat(f"{seat.account.display_name} does not work for {chat.site.name}.")
        if not seat.reachable:
            raise NotOnline(f"{seat.account.display_name} is not online.")
        if len(seat.chats) >= self.max_chats:
            raise ChatLimitReached(f"{seat.account.display_name} already has {self.max_chats} chats.")

    # Routing -------------------------------------------------------------------------------------

    async def _assign(
        self, chat: LiveChat, prefer: Seat | None = None, *, show_history: bool = False
    ) -> bool:
        """Give the chat to `prefer` if they can take it, else the least-loaded operator, else queue it.

        `show_history`: a chat new to the visitor's sockets gets its whole history there first.
        """
        if not await self._give_to_someone(chat, prefer, show_history=show_history):
            if show_history:
                await self._show_history(chat)
            await self._broadcast_queue()
            return False
        await self._broadcast_queue()
        return True

    async def _give_to_someone(
        self,
        chat: LiveChat,
        prefer: Seat | None = None,
        *,
        show_history: bool = False,
        elsewhere: list[WaitingChat] | None = None,
    ) -> bool:
        """Give the chat to `prefer` if they can take it, else to the least-loaded operator whose claim
        holds (the seats here may not know yet of chats another node gave them); False: nobody."""
        full: set[int] = set()  # operators whose claim failed: full, whatever the seat here says
        if prefer is not None and prefer.reachable and len(prefer.chats) < self.max_chats:
            if await self._give(chat, prefer, show_history=show_history):
                return True
            full.add(prefer.account.id)
        if await self._others_first(chat, elsewhere):
            return False
        while chat.operator is None and self._chats.get(chat.id) is chat:
            seats = [s for s in self._seats.seats() if s.account.id not in full]
            seat = self._router.least_loaded(chat.site.id, seats, self.max_chats)
            if seat is None:
                return False
            if await self._give(chat, seat, show_history=show_history):
                return True
            full.add(seat.account.id)
        return False

    async def _show_history(self, chat: LiveChat) -> None:
        for channel in list(self._visitors.get(chat.key, [])):
            await self._send_history(chat, channel)

    async def _give(self, chat: LiveChat, seat: Seat, *, show_history: bool = False) -> bool:
        """Give the chat to `seat` once their claim holds; False when they are full (or the chat was
        taken or closed while the claim was on its way)."""
        if not await self._places.claim(seat, chat.id, self.max_chats):
            return False
        if chat.operator is not None or self._chats.get(chat.id) is not chat:
            if chat.operator is not seat:
                await self._places.unclaim(seat.account.id, chat.id)
            return False
        chat.operator = seat
        self._seats.took_chat(seat.account.id, chat.id)
        await self._records.assign(chat.id, seat.account.id)
        # The visitor's sockets hear of the chat before the operator can write into it: a reply
        # sent the moment it is assigned must not reach the widget ahead of the history it follows.
        # `chat.state` says it was assigned either way (docs/signaling.md).
        if show_history:
            await self._show_history(chat)
        await self._to_visitor(chat, wire.ChatStateChanged(self._visitor_view(chat)))
        await self._to_operator(
            seat, wire.ChatAssigned(self._operator_view(chat), await self._messages(chat), chat.preview)
        )
        if seat.channels:
            await self._delivered(chat, "visitor")
        return True

    async def _release(self, seat: Seat, chat: LiveChat) -> None:
        """`seat` no longer handles the chat: its seat here and its claim (every node's count)."""
        self._seats.released_chat(seat.account.id, chat.id)
        await self._places.unclaim(seat.account.id, chat.id)

    async def drain(self) -> None:
        """Give waiting chats to operators who have room (another node's operator freed up)."""
        if self._waiting() and not self._closed:
            await self._drain()

    async def _others_first(self, chat: LiveChat, elsewhere: list[WaitingChat] | None = None) -> bool:
        """Whether a chat of the same site has waited longer on another node: that one is served first
        (its node is asked to give it now), so the queue moves in the order its places say.

        `elsewhere`: the other nodes' queues, when the caller has read them already."""
        if self._router.least_loaded(chat.site.id, self._seats.seats(), self.max_chats) is None:
            return False  # nobody has room: nothing to ask
        if elsewhere is None:
            elsewhere = await self._places.waiting_elsewhere()
        mine = (chat.waiting_wall, chat.id)
        if any(w.site_id == chat.site.id and (w.since, w.chat_id) < mine for w in elsewhere):
            await self._places.serve_older()
            return True
        return False

    async def _drain(self) -> None:
        """Give waiting chats, oldest first, to operators who have room."""
        moved = False
        waiting = self._waiting()
        elsewhere = await self._places.waiting_elsewhere() if waiting else []
        for chat in waiting:
            if chat.operator is None and await self._give_to_someone(chat, elsewhere=elsewhere):
                moved = True
        if moved:
            await self._broadcast_queue()

    async def queue_moved(self) -> None:
        """The queue moved on another node: the visitors waiting here whose place changed are told."""
        waiting = self._waiting()
        if not waiting or self._closed:
            return
        elsewhere = await self._places.waiting_elsewhere()
        for chat in waiting:
            if chat.operator is None and self._place(chat, elsewhere) != chat.told_place:
                await self._tell_place(chat, elsewhere)

    async def _seat_changed(self, seat: Seat) -> None:
        if seat.presence is Presence.OFFLINE and seat.chats:
            # Their shoppers should not wait for someone who left: back to the queue, oldest first.
            for chat_id in sorted(seat.chats):
                chat = self._chats.get(chat_id)
                if chat is not None and chat.operator is seat:
                    chat.operator = None
                    await self._places.unclaim(seat.account.id, chat.id)
                    await self._records.assign(chat.id, None)
            self._seats.released_chats(seat.account.id)
            await self._broadcast_queue()
        if seat.presence is Presence.ONLINE or seat.presence is Presence.OFFLINE:
            await self._drain()
        self._operators_changed()
        self._site_status_changed()

    async def _note(self, chat: LiveChat, text: str) -> None:
        """A system line in the conversation, seen by both sides."""
        stored = await self._records.add_message(chat.id, "system", text)
        frame = wire.ChatMessage(chat.id, stored.wire())
        await self._to_operator(chat.operator, frame)
        await self._to_visitor(chat, frame)

    async def _close(self, chat: LiveChat, by: ChatClosedReason) -> None:
        if self._chats.get(chat.id) is not chat:
            return
        del self._chats[chat.id]
        self._by_visitor.pop(chat.key, None)
        await self._places.released(chat.id)
        if chat.closing is not None:
            chat.closing.cancel()
        seat, chat.operator = chat.operator, None
        if seat is not None:
            await self._release(seat, chat)
        await self._records.close(chat.id)
        await self._to_visitor(chat, wire.ChatStateChanged(self._visitor_view(chat, closed=True)))
        await self._to_operator(seat, wire.ChatClosed(chat.id, by))
        if seat is None:
            await self._broadcast_queue()
        else:
            await self._drain()
        self._operators_changed()
        await self._sink.publish(chat.site.id, events.CHAT_CLOSED, {"id": chat.id})

    # Transcripts ---------------------------------------------------------------------------------

    async def send_transcript(self, site_id: int, token: str, email: str) -> None:
        """Mail the visitor's open chat to the address they gave, in the background."""
        chat = self._visitor_chat(site_id, token)
        if not self._outbox.configured:
            raise MailUnavailable("Transcripts cannot be mailed from this site.")
        self.limits.form(site_id, token)
        messages = await self._records.messages(chat.id)
        mail = Mail(
            to=email,
            subject=f"Your chat with {chat.site.name}",
            body="\n".join(_transcript_line(m) for m in messages) or "(no messages yet)",
        )
        self._background.spawn(self._mail_transcript(chat, mail))

    async def _mail_transcript(self, chat: LiveChat, mail: Mail) -> None:
        try:
            await self._outbox.send(mail)
            status = "sent"
        except Exception as e:
            log.warning("transcript of chat %s was not mailed: %s", chat.id, e)
            status = "failed"
        await self._to_visitor(chat, wire.Transcript(status, chat.id))

    # Lifecycle -----------------------------------------------------------------------------------

    async def close(self, mail_wait: float = 10.0) -> None:
        """Stop listening, give mail in flight a moment, and cancel the rest; chats stay open in the store."""
        if self._closed:
            return
        self._closed = True
        self._unlisten()
        for chat in self._chats.values():
            if chat.closing is not None:
                chat.closing.cancel()
        await self.left_messages.close(mail_wait)
        await self._background.close(grace=mail_wait)


def _share_a_site(one: Account, other: Account) -> bool:
    """Whether two accounts work for a common site (no sites means every site)."""
    return not one.site_ids or not other.site_ids or bool(set(one.site_ids) & set(other.site_ids))


def _transcript_line(message: StoredMessage) -> str:
    who = {"visitor": "You", "system": "—"}.get(message.sender) or message.operator_name or "Operator"
    return f"[{message.at:%Y-%m-%d %H:%M} UTC] {who}: {message.body}"
