"""The softphone's socket (`/ws/operator`): presence, ringing, answering and hanging up."""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlsplit

from aiohttp import WSMsgType, web

from callserver.accounts import Account
from callserver.calls.states import Presence
from callserver.errors import CallserverError
from callserver.signaling.messages import (
    BadMessage,
    CallAccept,
    CallDecline,
    CallHold,
    OperatorHangup,
    OperatorMessage,
    Ping,
    PresenceSet,
    decode_operator,
    error,
)
from callserver.web.auth import current_account
from callserver.web.keys import SETTINGS, SWITCHBOARD

log = logging.getLogger(__name__)
CLOSE_LOGIN_REQUIRED = 4401
CLOSE_FORBIDDEN = 4403


class OperatorConnection:
    """The switchboard's view of one open softphone."""

    def __init__(self, ws: web.WebSocketResponse) -> None:
        self.ws = ws

    async def send(self, message: dict[str, Any]) -> None:
        if not self.ws.closed:
            await self.ws.send_json(message)

    async def incoming(self, call: dict[str, object]) -> None:
        await self.send({"type": "call.incoming", "call": call})

    async def withdrawn(self, call_id: str, reason: str) -> None:
        await self.send({"type": "call.withdrawn", "call_id": call_id, "reason": str(reason)})

    async def answer(self, call_id: str, sdp: str) -> None:
        await self.send({"type": "call.answer", "call_id": call_id, "sdp": sdp})

    async def connected(self, call_id: str) -> None:
        await self.send({"type": "call.connected", "call_id": call_id})

    async def ended(self, call_id: str, reason: str) -> None:
        await self.send({"type": "call.ended", "call_id": call_id, "reason": str(reason)})

    async def presence(self, status: Presence) -> None:
        await self.send({"type": "presence", "status": str(status)})


def _same_origin(request: web.Request) -> bool:
    # Browsers send cookies with cross-site WebSocket handshakes in some setups; refuse other pages.
    origin = request.headers.get("Origin")
    return origin is None or urlsplit(origin).netloc == request.host


async def operator_socket(request: web.Request) -> web.WebSocketResponse:
    settings = request.app[SETTINGS]
    switchboard = request.app[SWITCHBOARD]
    ws = web.WebSocketResponse(max_msg_size=settings.max_frame_bytes, heartbeat=25)
    await ws.prepare(request)
    if not _same_origin(request):
        await ws.close(code=CLOSE_FORBIDDEN, message=b"origin_not_allowed")
        return ws
    account = await current_account(request)
    if account is None:
        await ws.close(code=CLOSE_LOGIN_REQUIRED, message=b"login_required")
        return ws

    softphone = OperatorConnection(ws)
    leave = switchboard.operator_joined(account, softphone)
    try:
        await softphone.send(
            {
                "type": "hello",
                "operator": {"id": account.id, "email": account.email, "name": account.display_name},
                "presence": str(switchboard.presence_of(account.id)),
                "incoming": switchboard.ringing_for(account.id),
                "active_call": switchboard.active_call_of(account.id),
            }
        )
        async for frame in ws:
            if frame.type is WSMsgType.TEXT:
                try:
                    await _handle(request, account, softphone, decode_operator(frame.data))
                except BadMessage as e:
                    await softphone.send(error(e.code, e.message))
                except CallserverError as e:
                    await softphone.send(error(e.code, e.message))
            elif frame.type is WSMsgType.BINARY:
                await softphone.send(error("bad_message", "Binary frames are not accepted."))
    finally:
        leave()
    return ws


async def _handle(
    request: web.Request, account: Account, softphone: OperatorConnection, message: OperatorMessage
) -> None:
    switchboard = request.app[SWITCHBOARD]
    match message:
        case Ping():
            await softphone.send({"type": "pong"})
        case PresenceSet(status=status):
            await switchboard.set_presence(account.id, Presence(status))
        case CallAccept(call_id=call_id, sdp=sdp):
            answer = await switchboard.accept(account.id, call_id, sdp)
            await softphone.answer(call_id, answer)
            await switchboard.operator_connected(account.id, call_id)
        case CallDecline(call_id=call_id):
            await switchboard.decline(account.id, call_id)
        case OperatorHangup(call_id=call_id):
            await switchboard.hangup(account.id, call_id)
        case CallHold(call_id=call_id, on=on):
            await switchboard.hold(account.id, call_id, on)
