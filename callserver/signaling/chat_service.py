"""Wires the chat desk into the app: its lifetime (a `cleanup_ctx`) and its typed app key."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from callserver.chats.desk import ChatDesk
from callserver.chats.records import ChatRecords
from callserver.mail import SmtpOutbox
from callserver.web.keys import DATABASE, SETTINGS, SWITCHBOARD

CHAT_DESK = web.AppKey("chat_desk", ChatDesk)


async def _chat_desk(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    desk = ChatDesk(
        ChatRecords(app[DATABASE]),
        app[SWITCHBOARD],
        SmtpOutbox(settings),
        max_chats=settings.max_chats,
        mail_retry_after=settings.mail_retry_after,
    )
    desk.start_mailing()
    app[CHAT_DESK] = desk
    yield
    await desk.close()


def setup_chat(app: web.Application) -> None:
    """Add the chat desk; call after the database and switchboard contexts (it needs both)."""
    app.cleanup_ctx.append(_chat_desk)
