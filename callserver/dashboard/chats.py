"""A chat's page (`/dashboard/chats/{id}`): transcript, journey, timeline, orders, CSAT, note and tags.

As with calls, a chat of a site the owner does not see is answered with 404, as if it did not exist.
"""

from __future__ import annotations

from aiohttp import web

from callserver.dashboard import queries
from callserver.dashboard.page import render, signed_in_owner
from callserver.errors import NotFound
from callserver.web.keys import DATABASE


async def chat_page(request: web.Request) -> web.StreamResponse:
    owner = await signed_in_owner(request)
    chat_id = request.match_info["chat_id"]
    async with request.app[DATABASE].session() as session:
        file = await queries.chat_file(session, owner.site_ids, chat_id)
    if file is None:
        raise NotFound("There is no such chat.")
    return render(request, owner, "chat.html", title=f"Chat {chat_id[:8]}", f=file, c=file.chat)
