"""Ending a session across nodes: a sign-out on one node closes that session's sockets on every node.

The softphone's socket may be on any node. Ending a session (sign-out) or all of an account's sessions
(disabled, a new password) deletes them from the database at once, so no node lets the session open a
new socket; what this adds is closing the sockets already open elsewhere (close code 4401). The news
goes out on the shared channel `callserver:sessions` and every node closes its own. A session is
named there by the SHA-256 of its cookie, never the cookie itself.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Protocol

from redis.asyncio import Redis

from callserver.cluster.broadcast import Broadcast

log = logging.getLogger(__name__)

CHANNEL = "callserver:sessions"


def session_digest(session_cookie: str) -> str:
    """How a session is named between nodes."""
    return hashlib.sha256(session_cookie.encode()).hexdigest()


class SignedInHere(Protocol):
    """This node's open sockets by session (`callserver/web/auth.py`, `SignedInSockets`)."""

    async def end_session(self, session_cookie: str) -> int: ...
    async def end_digest(self, digest: str) -> int: ...
    async def end_account(self, account_id: int) -> int: ...


class ClusterSessions:
    """Ends sessions here at once and tells the other nodes; `close()` is idempotent."""

    def __init__(self, redis: Redis, node: str, here: SignedInHere) -> None:
        self._here = here
        self._broadcast = Broadcast(redis, CHANNEL, node, self._heard)
        self.node = node

    async def start(self) -> None:
        await self._broadcast.start()

    async def end_session(self, session_cookie: str) -> int:
        """Close this session's sockets here and on the other nodes; returns how many were here."""
        closed = await self._here.end_session(session_cookie)
        await self._broadcast.publish({"session": session_digest(session_cookie)})
        return closed

    async def end_account(self, account_id: int) -> int:
        """Close every socket of the account here and on the other nodes; returns how many were here."""
        closed = await self._here.end_account(account_id)
        await self._broadcast.publish({"account": account_id})
        return closed

    async def _heard(self, sender: str, body: dict[str, object]) -> None:
        if sender == self.node:
            return
        closed = 0
        if isinstance(session := body.get("session"), str):
            closed = await self._here.end_digest(session)
        elif isinstance(account := body.get("account"), int):
            closed = await self._here.end_account(account)
        if closed:
            log.info("closed %d socket(s) whose session ended on %s", closed, sender)

    async def close(self) -> None:
        await self._broadcast.close()
