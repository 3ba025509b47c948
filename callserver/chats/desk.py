"""The chat desk: every live text chat in this process, who handles it, and the queue of those waiting.

Operators handle several chats at once (up to `max_chats`) and one call; a new chat goes to the
least-loaded operator of its site, or waits in a queue that operators can pick from while the shopper
sees their place in it. Every message is stored before it is acknowledged. The desk speaks to sockets
through `ChatChannel` and to operators through the roster's seats, so it imports neither aiohttp
nor aiortc.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from callserver.accounts import Account
from callserver.background import BackgroundTasks
from callserver.calls.records import VisitorContext
from callserver.calls.routing import Router, Seat
from callserver.calls.states import Presence
from callserver.chats.errors import (
    ChatLimitReached,
    EmptyMessage,
    MailUnavailable,
    MessageTooLong,
    NobodyOnline,
    NoChat,
    NotYourChat,
    RateLimited,
    UnknownChat,
)
from callserver.chats.left_mail import LeftMail
from callserver.chats.records import Canned, ChatRecords, Left, StoredMessage
from callserver.errors import InvalidInput, NotOnline
from callserver.hours import WorkingHours
from callserver.limits import RateLimiter
from callserver.mail import Mail

log = logging.getLogger(__name__)

MAX_MESSAGE_CHARS = 4000
MAX_PREVIEW_CHARS = 4000

# What the operator reads first in a chat that a call fell back to: the shopper tried to call.
FALLBACK_NOTES = {
    "microphone_denied": "The visitor tried to call, but their microphone was blocked.",
    "microphone_failed": "The visitor tried to call, but their microphone could not be started.",
    "no_webrtc": "The visitor tried to call, but their browser cannot make calls.",
    "ice_failed": "The visitor tried to call, but the call could not connect.",
    "no_answer": "The visitor called, but nobody answered in time.",
    "all_busy": "The visitor called while every operator was busy.",
    "declined": "The visitor called, but the call was declined.",
    "failed": "The visitor's call was interrupted.",
}


class ChatChannel(Protocol):
    """A socket (widget or softphone) as the desk sees it."""

    async def chat_event(self, type: str, payload: dict[str, Any]) -> None: ...


class Outbox(Protocol):
    @property
    def configured(self) -> bool: ...

    async def send(self, mail: Mail) -> None: ...


class Seats(Protocol):
    """The switchboard's operators: the desk shares their seats (one call, several chats)."""

    def seats(self) -> list[Seat]: ...
    def seat_of(self, operator_id: int) -> Seat | None: ...
    def operators_online(self, site_id: int) -> int: ...
    def on_seat_change(self, listener: Callable[[Seat], Awaitable[None]]) -> Callable[[], None]: ...


@dataclass(frozen=True)
class ChatSite:
    """The parts of a site the desk needs."""

    id: int
    name: str
    notify_email: str | None = None
    hours: WorkingHours | None = None  # None: always open

    def is_open(self) -> bool:
        return self.hours is None or self.hours.is_open(datetime.now(UTC))


@dataclass(eq=False)
class LiveChat:
    id: str
    site: ChatSite
    token: str
    view: dict[str, Any]  # what operators see of the chat: visitor, page, context, fallback, call
    waiting_since: float
    operator: Seat | None = None
    closing: asyncio.TimerHandle | None = None  # the visitor left every page: close unless they return
    preview: str = field(default="", repr=False)

    @property
    def key(self) -> tuple[int, str]:
        return (self.site.id, self.token)


class ChatDesk:
    """Live chats, the queue and left messages of this process; `close()` is safe to call twice."""

    def __init__(
        self,
        records: ChatRecords,
        seats: Seats,
        outbox: Outbox,
        max_chats: int = 5,
        visitor_grace: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
        mail_retry_after: float = 60.0,
    ) -> None:
        self._records = records
        self._seats = seats
        self._outbox = outbox
        self._router = Router()
        self.max_chats = max_chats
        self._visitor_grace = visitor_grace
        self._clock = clock
        # Per visitor token: chat messages, call attempts, and the rarer forms (chat start, mail).
        self._limits = {
            "message": RateLimiter(rate=1.0, burst=10, clock=clock),
            "call": RateLimiter(rate=0.1, burst=5, clock=clock),
            "form": RateLimiter(rate=1 / 20, burst=6, clock=clock),
        }
        self._chats: dict[str, LiveChat] = {}
        self._by_visitor: dict[tuple[int, str], LiveChat] = {}
        self._visitors: dict[tuple[int, str], list[ChatChannel]] = {}
        self._background = BackgroundTasks("chat desk")
        self._operators_push: asyncio.Task[Any] | None = None
        # What open widgets were last told per site: (open, someone online). See _site_status_changed.
        self._sites: dict[int, ChatSite] = {}
        self._site_status: dict[int, tuple[bool, bool]] = {}
        self._status_push: asyncio.Task[Any] | None = None
        self._unlisten = seats.on_seat_change(self._seat_changed)
        self._left_mail = LeftMail(records, outbox, self._mail_changed, mail_retry_after)
        self._closed = False

    def start_mailing(self) -> None:
        """Start mailing left messages (what a previous run left due goes out now)."""
        self._left_mail.start()

    def limit(self, kind: str, site_id: int, token: str) -> None:
        """Raise RateLimited when this visitor did `kind` too often (other visitors are unaffected)."""
        if not self._limits[kind].take((site_id, token)):
            raise RateLimited("Too many requests: please wait a moment and try again.")

    # Views ---------------------------------------------------------------------------------------

    def _waiting(self, site_id: int | None = None) -> list[LiveChat]:
        chats = [c for c in self._chats.values() if c.operator is None]
        if site_id is not None:
            chats = [c for c in chats if c.site.id == site_id]
        return sorted(chats, key=lambda c: c.waiting_since)

    def _operator_view(self, chat: LiveChat) -> dict[str, Any]:
        view = dict(chat.view)
        view["state"] = "open" if chat.operator else "waiting"
        view["operator"] = (
            {"id": chat.operator.account.id, "name": chat.operator.account.display_name}
            if chat.operator
            else None
        )
        return view

    def _visitor_view(self, chat: LiveChat, state: str | None = None) -> dict[str, Any]:
        view: dict[str, Any] = {"id": chat.id, "state": state or ("open" if chat.operator else "waiting")}
        if chat.operator is not None:
            view["operator"] = {"name": chat.operator.account.display_name}
        elif state is None:
            view["position"] = self._waiting(chat.site.id).index(chat) + 1
        return view

    def _operators(self, account: Account) -> list[dict[str, Any]]:
        return [
            {
                "id": s.account.id,
                "name": s.account.display_name,
                "presence": str(s.presence if s.channels else Presence.OFFLINE),
                "in_call": s.call_id is not None,
                "chats": len(s.chats),
            }
            for s in sorted(self._seats.seats(), key=lambda s: s.account.display_name)
            if s.account.id != account.id and _share_a_site(account, s.account)
        ]

    def _queue_for(self, account: Account) -> list[dict[str, Any]]:
        return [self._operator_view(c) for c in self._waiting() if account.works_for(c.site.id)]

    async def operator_state(self, seat: Seat) -> dict[str, Any]:
        """Everything a softphone shows besides calls: its chats, the queue, left messages, canned replies."""
        account = seat.account
        chats = []
        for chat_id in sorted(seat.chats):
            chat = self._chats.get(chat_id)
            if chat is not None:
                messages = await self._records.messages(chat.id)
                chats.append({"chat": self._operator_view(chat), "messages": [m.wire() for m in messages]})
        left = await self._records.left_messages(account.site_ids)
        canned = await self._records.canned(account.site_ids)
        return {
            "chats": chats,
            "queue": self._queue_for(account),
            "left_messages": [m.wire() for m in left],
            "canned": [c.wire() for c in canned],
            "operators": self._operators(account),
            "max_chats": self.max_chats,
        }

    # Sending -------------------------------------------------------------------------------------

    async def _send(self, channel: ChatChannel, type: str, payload: dict[str, Any]) -> bool:
        try:
            await channel.chat_event(type, payload)
        except Exception:
            log.warning("could not send %s to a socket", type, exc_info=True)
            return False
        return True

    async def _to_visitor(self, chat: LiveChat, type: str, payload: dict[str, Any]) -> bool:
        sent = False
        for channel in list(self._visitors.get(chat.key, [])):
            sent = await self._send(channel, type, payload) or sent
        return sent

    async def _to_operator(self, seat: Seat | None, type: str, payload: dict[str, Any]) -> bool:
        sent = False
        for channel in list(seat.channels if seat else []):
            sent = await self._send(channel, type, payload) or sent
        return sent

    async def _broadcast_queue(self) -> None:
        """Tell waiting shoppers their place and operators what waits."""
        for chat in self._waiting():
            await self._to_visitor(chat, "chat.state", {"chat": self._visitor_view(chat)})
        for seat in self._seats.seats():
            if seat.channels:
                await self._to_operator(seat, "chat.queue", {"chats": self._queue_for(seat.account)})

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

    def _availability(self, site: ChatSite) -> tuple[bool, int]:
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
            frame = {"open": is_open, "operators_online": online}
            for channel in channels:
                await self._send(channel, "site.status", frame)

    async def _broadcast_operators(self, delay: float = 0.0) -> None:
        await asyncio.sleep(delay)
        for seat in self._seats.seats():
            if seat.channels:
                await self._to_operator(seat, "operators", {"operators": self._operators(seat.account)})

    # Visitors ------------------------------------------------------------------------------------

    async def visitor_joined(self, site: ChatSite, token: str, channel: ChatChannel) -> Callable[[], None]:
        """Register a widget socket; a returning visitor gets their open chat's history at once.

        Returns the function that unregisters the socket.
        """
        key = (site.id, token)
        self._visitors.setdefault(key, []).append(channel)
        self._sites[site.id] = site
        if site.id not in self._site_status:  # what its hello says; changes from here on are pushed
            is_open, online = self._availability(site)
            self._site_status[site.id] = (is_open, online > 0)
        chat = self._by_visitor.get(key) or await self._revive(site, token)
        if chat is not None:
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
                    self._visitor_grace, lambda: self._background.spawn(self._close(live, "visitor_left"))
                )

        return leave

    async def _revive(self, site: ChatSite, token: str) -> LiveChat | None:
        """A chat a previous run of the server left open: back to its operator if they are here, or queued."""
        found = await self._records.find_open(site.id, token)
        if found is None or found.id in self._chats:
            return self._chats.get(found.id) if found else None
        view = {**found.context, "id": found.id, "site": site.name, "site_id": site.id}
        chat = LiveChat(id=found.id, site=site, token=token, view=view, waiting_since=self._clock())
        self._register(chat)
        previous = self._seats.seat_of(found.operator_id) if found.operator_id else None
        await self._assign(chat, previous)
        return chat

    def _register(self, chat: LiveChat) -> None:
        self._chats[chat.id] = chat
        self._by_visitor[chat.key] = chat

    async def _send_history(self, chat: LiveChat, channel: ChatChannel) -> None:
        messages = await self._records.messages(chat.id)
        await self._send(
            channel,
            "chat.history",
            {"chat": self._visitor_view(chat), "messages": [m.wire() for m in messages]},
        )
        ids = await self._records.delivered(chat.id, ("operator", "system"))
        if ids:
            await self._to_operator(
                chat.operator, "chat.status", {"chat_id": chat.id, "ids": ids, "status": "delivered"}
            )

    async def start(
        self,
        site: ChatSite,
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
            await self._to_visitor(chat, "chat.state", {"chat": self._visitor_view(chat)})
            return
        if not self._seats.operators_online(site.id):
            raise NobodyOnline("Nobody is online right now: leave a message and we will get back to you.")
        self.limit("form", site.id, visitor.token)
        view: dict[str, Any] = {
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
        self._register(chat)
        note = FALLBACK_NOTES.get(fallback or "")
        if note:
            await self._records.add_message(chat.id, "system", note)
        await self._assign(
            chat, self._seats.seat_of(prefer_operator) if prefer_operator is not None else None
        )
        for channel in list(self._visitors.get(chat.key, [])):
            await self._send_history(chat, channel)

    async def post_visitor(
        self, site_id: int, token: str, text: str, client_id: str | None, origin: ChatChannel
    ) -> None:
        chat = self._visitor_chat(site_id, token)
        body = self._body(text)
        self.limit("message", site_id, token)
        stored = await self._records.add_message(chat.id, "visitor", body)
        chat.preview = ""
        await self._send(
            origin, "chat.ack", {"chat_id": chat.id, "client_id": client_id, "message": stored.wire()}
        )
        for channel in list(self._visitors.get(chat.key, [])):
            if channel is not origin:
                await self._send(channel, "chat.message", {"chat_id": chat.id, "message": stored.wire()})
        if await self._to_operator(
            chat.operator, "chat.message", {"chat_id": chat.id, "message": stored.wire()}
        ):
            await self._delivered(chat, "visitor")

    async def visitor_typing(self, site_id: int, token: str, text: str) -> None:
        chat = self._visitor_chat(site_id, token)
        chat.preview = text[:MAX_PREVIEW_CHARS]
        await self._to_operator(chat.operator, "chat.typing", {"chat_id": chat.id, "text": chat.preview})

    async def visitor_read(self, site_id: int, token: str, up_to: int) -> None:
        chat = self._visitor_chat(site_id, token)
        ids = await self._records.read(chat.id, ("operator", "system"), up_to)
        if ids:
            await self._to_operator(
                chat.operator, "chat.status", {"chat_id": chat.id, "ids": ids, "status": "read"}
            )

    async def visitor_close(self, site_id: int, token: str) -> None:
        await self._close(self._visitor_chat(site_id, token), "visitor")

    def _visitor_chat(self, site_id: int, token: str) -> LiveChat:
        chat = self._by_visitor.get((site_id, token))
        if chat is None:
            raise NoChat("There is no open chat: start one first.")
        return chat

    def chat_of_visitor(self, site_id: int, token: str) -> LiveChat | None:
        return self._by_visitor.get((site_id, token))

    @staticmethod
    def _body(text: str) -> str:
        body = text.strip()
        if not body:
            raise EmptyMessage("The message is empty.")
        if len(body) > MAX_MESSAGE_CHARS:
            raise MessageTooLong(
                f"The message has {len(body)} characters; at most {MAX_MESSAGE_CHARS} fit in one message."
            )
        return body

    async def _delivered(self, chat: LiveChat, sender: str) -> None:
        ids = await self._records.delivered(chat.id, (sender,))
        if not ids:
            return
        status = {"chat_id": chat.id, "ids": ids, "status": "delivered"}
        if sender == "visitor":
            await self._to_visitor(chat, "chat.status", status)
        else:
            await self._to_operator(chat.operator, "chat.status", status)

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
        chat = self._own(seat, chat_id)
        body = self._body(text)
        account = seat.account
        stored = await self._records.add_message(chat.id, "operator", body, account.id, account.display_name)
        await self._send(
            origin, "chat.ack", {"chat_id": chat.id, "client_id": client_id, "message": stored.wire()}
        )
        for channel in list(seat.channels):
            if channel is not origin:
                await self._send(channel, "chat.message", {"chat_id": chat.id, "message": stored.wire()})
        await self._to_visitor(chat, "chat.typing", {"chat_id": chat.id, "active": False})
        if await self._to_visitor(chat, "chat.message", {"chat_id": chat.id, "message": stored.wire()}):
            await self._delivered(chat, "operator")

    async def operator_typing(self, seat: Seat, chat_id: str, active: bool) -> None:
        chat = self._own(seat, chat_id)
        await self._to_visitor(chat, "chat.typing", {"chat_id": chat.id, "active": active})

    async def operator_read(self, seat: Seat, chat_id: str, up_to: int) -> None:
        chat = self._own(seat, chat_id)
        ids = await self._records.read(chat.id, ("visitor",), up_to)
        if ids:
            await self._to_visitor(chat, "chat.status", {"chat_id": chat.id, "ids": ids, "status": "read"})

    async def operator_close(self, seat: Seat, chat_id: str) -> None:
        await self._close(self._own(seat, chat_id), "operator")

    async def offer_call(self, seat: Seat, chat_id: str) -> None:
        """Invite the shopper to call: one click in the widget rings this operator first."""
        chat = self._own(seat, chat_id)
        await self._note(chat, f"{seat.account.display_name} offered a call.")
        await self._to_visitor(
            chat, "chat.call_offered", {"chat_id": chat.id, "operator": {"name": seat.account.display_name}}
        )

    async def pick(self, seat: Seat, chat_id: str) -> None:
        """Take a waiting chat from the queue."""
        chat = self._chats.get(chat_id)
        if chat is None:
            raise UnknownChat(f"There is no open chat {chat_id!r}.")
        if chat.operator is not None:
            raise NotYourChat("Another operator has taken this chat already.")
        self._check_can_take(seat, chat)
        await self._give(chat, seat)
        await self._broadcast_queue()

    async def transfer(self, seat: Seat, chat_id: str, to_operator_id: int) -> None:
        """Hand a chat to a colleague, with its history; the shopper is told who answers now."""
        chat = self._own(seat, chat_id)
        target = self._seats.seat_of(to_operator_id)
        if target is None or target is seat:
            raise NotOnline("That operator is not online.")
        self._check_can_take(target, chat)
        seat.chats.discard(chat.id)
        chat.operator = None
        await self._to_operator(seat, "chat.closed", {"chat_id": chat.id, "reason": "transferred"})
        await self._note(
            chat, f"{seat.account.display_name} passed the chat to {target.account.display_name}."
        )
        await self._give(chat, target)
        self._operators_changed()

    def _check_can_take(self, seat: Seat, chat: LiveChat) -> None:
        if not seat.account.works_for(chat.site.id):
            raise NotYourChat(f"{seat.account.display_name} does not work for {chat.site.name}.")
        if not seat.reachable:
            raise NotOnline(f"{seat.account.display_name} is not online.")
        if len(seat.chats) >= self.max_chats:
            raise ChatLimitReached(f"{seat.account.display_name} already has {self.max_chats} chats.")

    # Routing -------------------------------------------------------------------------------------

    async def _assign(self, chat: LiveChat, prefer: Seat | None = None) -> bool:
        """Give the chat to `prefer` if they can take it, else the least-loaded operator, else queue it."""
        seat = None
        if prefer is not None and prefer.reachable and len(prefer.chats) < self.max_chats:
            seat = prefer
        seat = seat or self._router.least_loaded(chat.site.id, self._seats.seats(), self.max_chats)
        if seat is None:
            await self._broadcast_queue()
            return False
        await self._give(chat, seat)
        await self._broadcast_queue()
        return True

    async def _give(self, chat: LiveChat, seat: Seat) -> None:
        chat.operator = seat
        seat.chats.add(chat.id)
        await self._records.assign(chat.id, seat.account.id)
        messages = await self._records.messages(chat.id)
        await self._to_operator(
            seat,
            "chat.assigned",
            {
                "chat": self._operator_view(chat),
                "messages": [m.wire() for m in messages],
                "preview": chat.preview,
            },
        )
        await self._to_visitor(chat, "chat.state", {"chat": self._visitor_view(chat)})
        if seat.channels:
            await self._delivered(chat, "visitor")

    async def _drain(self) -> None:
        """Give waiting chats, oldest first, to operators who have room."""
        moved = False
        for chat in self._waiting():
            seat = self._router.least_loaded(chat.site.id, self._seats.seats(), self.max_chats)
            if seat is not None:
                await self._give(chat, seat)
                moved = True
        if moved:
            await self._broadcast_queue()

    async def _seat_changed(self, seat: Seat) -> None:
        if seat.presence is Presence.OFFLINE and seat.chats:
            # Their shoppers should not wait for someone who left: back to the queue, oldest first.
            for chat_id in sorted(seat.chats):
                chat = self._chats.get(chat_id)
                if chat is not None:
                    chat.operator = None
                    await self._records.assign(chat.id, None)
            seat.chats.clear()
            await self._broadcast_queue()
        if seat.presence is Presence.ONLINE or seat.presence is Presence.OFFLINE:
            await self._drain()
        self._operators_changed()
        self._site_status_changed()

    async def _note(self, chat: LiveChat, text: str) -> None:
        """A system line in the conversation, seen by both sides."""
        stored = await self._records.add_message(chat.id, "system", text)
        await self._to_operator(chat.operator, "chat.message", {"chat_id": chat.id, "message": stored.wire()})
        await self._to_visitor(chat, "chat.message", {"chat_id": chat.id, "message": stored.wire()})

    async def _close(self, chat: LiveChat, by: str) -> None:
        if self._chats.get(chat.id) is not chat:
            return
        del self._chats[chat.id]
        self._by_visitor.pop(chat.key, None)
        if chat.closing is not None:
            chat.closing.cancel()
        seat, chat.operator = chat.operator, None
        if seat is not None:
            seat.chats.discard(chat.id)
        await self._records.close(chat.id)
        await self._to_visitor(chat, "chat.state", {"chat": self._visitor_view(chat, "closed")})
        await self._to_operator(seat, "chat.closed", {"chat_id": chat.id, "reason": by})
        if seat is None:
            await self._broadcast_queue()
        else:
            await self._drain()
        self._operators_changed()

    # Left messages, transcripts and canned replies -----------------------------------------------

    async def leave_message(
        self,
        site: ChatSite,
        visitor: VisitorContext,
        name: str | None,
        email: str | None,
        phone: str | None,
        text: str,
        call_id: str | None = None,
    ) -> str:
        """Store the offline form, show it to operators, and mail it to the site in the background.

        The mail is retried until it goes out (see left_mail.py); its state is listed with the message.
        """
        body = self._body(text)
        if not (email or phone):
            raise InvalidInput("Leave an e-mail address or a phone number, so that we can answer.")
        self.limit("form", site.id, visitor.token)
        left = await self._records.leave_message(
            site.id,
            site.name,
            visitor,
            name,
            email,
            phone,
            body,
            call_id,
            mail=bool(site.notify_email and self._outbox.configured),
        )
        for seat in self._seats.seats():
            if seat.account.works_for(site.id):
                await self._to_operator(seat, "message.new", {"message": left.wire()})
        if left.mail is not None:
            self._left_mail.wake()
        return left.id

    async def _mail_changed(self, left: Left) -> None:
        """A mail try ended: operators of the site see the message's mail state."""
        frame = {"id": left.id, "mail": left.mail.wire() if left.mail else None}
        for seat in self._seats.seats():
            if seat.account.works_for(left.site_id):
                await self._to_operator(seat, "message.mail", frame)

    async def mark_handled(self, seat: Seat, message_id: str) -> None:
        if not await self._records.handled(message_id, seat.account.site_ids):
            raise UnknownChat(f"There is no left message {message_id!r}.")
        for other in self._seats.seats():
            await self._to_operator(other, "message.handled", {"id": message_id})

    async def send_transcript(self, site_id: int, token: str, email: str) -> None:
        """Mail the visitor's open chat to the address they gave, in the background."""
        chat = self._visitor_chat(site_id, token)
        if not self._outbox.configured:
            raise MailUnavailable("Transcripts cannot be mailed from this site.")
        self.limit("form", site_id, token)
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
        await self._to_visitor(chat, "chat.transcript", {"chat_id": chat.id, "status": status})

    async def add_canned(self, seat: Seat, site_id: int | None, title: str, text: str) -> Canned:
        if site_id is not None and not seat.account.works_for(site_id):
            raise NotYourChat("You do not work for that site.")
        if site_id is None and seat.account.site_ids:
            site_id = seat.account.site_ids[0]  # an operator of some sites cannot write for every site
        reply = await self._records.add_canned(site_id, title.strip() or text[:40], self._body(text))
        await self._canned_changed()
        return reply

    async def remove_canned(self, seat: Seat, reply_id: int) -> None:
        if not await self._records.remove_canned(reply_id, seat.account.site_ids):
            raise UnknownChat(f"There is no canned reply {reply_id}.")
        await self._canned_changed()

    async def _canned_changed(self) -> None:
        for seat in self._seats.seats():
            if seat.channels:
                replies = await self._records.canned(seat.account.site_ids)
                await self._to_operator(seat, "canned", {"replies": [r.wire() for r in replies]})

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
        await self._left_mail.close(grace=mail_wait)
        await self._background.close(grace=mail_wait)


def _share_a_site(one: Account, other: Account) -> bool:
    """Whether two accounts work for a common site (no sites means every site)."""
    return not one.site_ids or not other.site_ids or bool(set(one.site_ids) & set(other.site_ids))


def _transcript_line(message: StoredMessage) -> str:
    who = {"visitor": "You", "system": "—"}.get(message.sender) or message.operator_name or "Operator"
    return f"[{message.at:%Y-%m-%d %H:%M} UTC] {who}: {message.body}"
