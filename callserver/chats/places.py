"""Where chats live: in this process only, or on the nodes of a cluster.

A chat lives in the desk of the node that took it (the node of the visitor's socket). The desk asks
`ChatPlaces` what it cannot see itself: which node holds a chat an operator acts on, what waits in the
queues of other nodes, and which of an operator's chats other nodes hold. `LocalPlaces` is a node
alone (nothing is elsewhere); `callserver/cluster/chats.py` is the Redis one (LiveKit's local and
Redis routers are the model, as for the roster).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from callserver.chats.channels import ChatChannel
from callserver.chats.errors import UnknownChat
from callserver.operators.roster import Seat
from callserver.wire.outbound import JsonObject


@dataclass(frozen=True)
class WaitingChat:
    """A chat in a queue: its card for operators, its site, and since when it waits (Unix time)."""

    chat_id: str
    site_id: int
    card: JsonObject
    since: float

    def encode(self) -> JsonObject:
        return {"chat_id": self.chat_id, "site_id": self.site_id, "card": self.card, "since": self.since}

    @classmethod
    def decode(cls, data: dict[str, Any]) -> WaitingChat:
        return cls(str(data["chat_id"]), int(data["site_id"]), dict(data["card"]), float(data["since"]))


class ChatPlaces(Protocol):
    """What the desk needs to know of chats that are not its own."""

    async def holding(self, chat_id: str) -> None:
        """This node's desk holds the chat from now on."""

    async def released(self, chat_id: str) -> None:
        """The chat closed here (or left this node)."""

    async def take_over(self, chat_id: str) -> None:
        """The visitor's socket is here now: the node that held the chat lets it go (none: nothing)."""

    async def forward(
        self, seat: Seat, action: str, chat_id: str, origin: ChatChannel | None, args: JsonObject
    ) -> None:
        """Run an operator's action on the node that holds the chat; UnknownChat when none does."""

    def echo_channels(self, seat: Seat, origin: ChatChannel) -> list[ChatChannel]:
        """The operator's other softphones, which see what `origin` sent."""
        ...

    async def claim(self, seat: Seat, chat_id: str, limit: int) -> bool:
        """Count the chat against the operator's `limit` (on every node at once); False when they are
        full. Claiming a chat the operator already has is true."""
        ...

    async def unclaim(self, operator_id: int, chat_id: str) -> None:
        """The operator no longer handles the chat (closed, passed on, back to the queue, moved)."""

    async def waiting_here(self, waiting: list[WaitingChat]) -> None:
        """This node's queue now (other nodes' operators see it, and its waiting visitors' places)."""

    async def serve_older(self) -> None:
        """An operator has room and chats that waited longer are on other nodes: they drain now."""

    async def waiting_elsewhere(self) -> list[WaitingChat]:
        """The chats waiting in the queues of the other nodes."""
        ...

    async def chats_elsewhere(self, seat: Seat) -> list[JsonObject]:
        """The operator's chats that other nodes hold, as `hello` lists them (with their messages)."""
        ...


class LocalPlaces:
    """A node alone: every chat is in its own desk."""

    async def holding(self, chat_id: str) -> None:
        return None

    async def released(self, chat_id: str) -> None:
        return None

    async def take_over(self, chat_id: str) -> None:
        return None

    async def forward(
        self, seat: Seat, action: str, chat_id: str, origin: ChatChannel | None, args: JsonObject
    ) -> None:
        raise UnknownChat(f"There is no open chat {chat_id!r}.")

    def echo_channels(self, seat: Seat, origin: ChatChannel) -> list[ChatChannel]:
        return [c for c in seat.channels if c is not origin]

    async def claim(self, seat: Seat, chat_id: str, limit: int) -> bool:
        return chat_id in seat.chats or len(seat.chats) < limit

    async def unclaim(self, operator_id: int, chat_id: str) -> None:
        return None

    async def waiting_here(self, waiting: list[WaitingChat]) -> None:
        return None

    async def serve_older(self) -> None:
        return None

    async def waiting_elsewhere(self) -> list[WaitingChat]:
        return []

    async def chats_elsewhere(self, seat: Seat) -> list[JsonObject]:
        return []
