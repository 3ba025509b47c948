"""What came of a conversation, as the operator writes it down: a note, tags, the order number taken.

The order number attributes that order to the conversation by hand (`set_attribution`, audited, as the
dashboard's form does), now when the shop reported it already, else when it arrives
(`orders/attribution.py` looks for a conversation that claimed it).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from callserver.accounts import Account
from callserver.csat import conversation_of, outcome_of
from callserver.errors import CallserverError, InvalidInput
from callserver.events import ORDER_ATTRIBUTED, EventSink, NoEvents
from callserver.orders.attribution import order_ref, set_attribution
from callserver.store.database import Database
from callserver.store.models import Call, Chat, ConversationOutcome, ConversationTag, Order
from callserver.wire.outbound import JsonObject

MAX_TAGS = 20
TAG = re.compile(r"^[\w][\w .&/+-]{0,49}$")
# How many of a site's tags the softphone suggests.
SUGGESTED = 50


class NotYourSite(CallserverError):
    code = "not_your_site"


def clean_tags(tags: Sequence[str]) -> list[str]:
    """Tags as stored: trimmed, lower case, each once, in the order given; InvalidInput for odd ones."""
    kept: list[str] = []
    for raw in tags:
        tag = " ".join(raw.split()).lower()
        if not tag:
            continue
        if not TAG.match(tag):
            raise InvalidInput(f"A tag is letters, digits, spaces and . & / + -, up to 50: not {raw!r}.")
        if tag not in kept:
            kept.append(tag)
    if len(kept) > MAX_TAGS:
        raise InvalidInput(f"At most {MAX_TAGS} tags.")
    return kept


async def tags_of(session: AsyncSession, conversation_ids: Sequence[str]) -> dict[str, list[str]]:
    """Each conversation's tags, sorted."""
    found: dict[str, list[str]] = {}
    if not conversation_ids:
        return found
    rows = await session.execute(
        select(ConversationTag.conversation_id, ConversationTag.tag)
        .where(ConversationTag.conversation_id.in_(list(conversation_ids)))
        .order_by(ConversationTag.tag)
    )
    for conversation_id, tag in rows:
        found.setdefault(conversation_id, []).append(tag)
    return found


async def site_tags(session: AsyncSession, site_ids: Sequence[int]) -> list[str]:
    """The tags used on these sites, most used first (the softphone's suggestions, the log's filter)."""
    query = select(ConversationTag.tag).group_by(ConversationTag.tag)
    if site_ids:
        query = query.where(ConversationTag.site_id.in_(list(site_ids)))
    used = func.count().desc()
    rows = await session.execute(query.order_by(used, ConversationTag.tag).limit(SUGGESTED))
    return [tag for (tag,) in rows]


def outcome_json(
    conversation_id: str,
    channel: str,
    outcome: ConversationOutcome | None,
    tags: list[str],
    suggested: list[str],
) -> JsonObject:
    return {
        "conversation_id": conversation_id,
        "channel": channel,
        "note": (outcome.note if outcome else None) or "",
        "tags": list(tags),
        "order": (outcome.order_ref if outcome else None) or "",
        "suggested_tags": list(suggested),
    }


class Outcomes:
    """The operator's side of what came of a call or chat."""

    def __init__(self, db: Database, sink: EventSink | None = None) -> None:
        self._db = db
        self._sink = sink or NoEvents()

    async def get(self, account: Account, conversation_id: str) -> JsonObject:
        async with self._db.session() as session:
            channel, row = await conversation_of_operator(session, account, conversation_id)
            outcome = await session.get(ConversationOutcome, conversation_id)
            tags = (await tags_of(session, [conversation_id])).get(conversation_id, [])
            return outcome_json(
                conversation_id, channel, outcome, tags, await site_tags(session, [row.site_id])
            )

    async def save(
        self, account: Account, conversation_id: str, note: str, tags: Sequence[str], order: str
    ) -> JsonObject:
        """Store the note, the tags and the order number; an order reported already is attributed now."""
        cleaned = clean_tags(tags)
        ref = order_ref(order)
        if order.strip() and not ref:
            raise InvalidInput(f"{order!r} is not an order number.")
        attributed: str | None = None
        async with self._db.session() as session:
            channel, row = await conversation_of_operator(session, account, conversation_id)
            outcome = await outcome_of(session, row.site_id, channel, conversation_id)
            outcome.note = note.strip() or None
            outcome.order_ref = ref
            outcome.updated_by = account.id
            outcome.updated_at = datetime.now(UTC)
            await session.execute(
                delete(ConversationTag).where(ConversationTag.conversation_id == conversation_id)
            )
            for tag in cleaned:
                session.add(ConversationTag(conversation_id=conversation_id, tag=tag, site_id=row.site_id))
            if ref is not None:
                known = await session.scalar(
                    select(Order).where(
                        Order.site_id == row.site_id,
                        (func.lower(Order.order_id) == ref)
                        | (func.lower(func.ltrim(Order.number, "#")) == ref),
                    )
                )
                if known is not None and known.conversation_id != conversation_id:
                    await set_attribution(session, known, channel, conversation_id, account.id)
                    attributed = known.order_id
            await session.flush()
            suggested = await site_tags(session, [row.site_id])
            site_id = row.site_id
        if attributed is not None:
            await self._sink.publish(site_id, ORDER_ATTRIBUTED, {"id": attributed})
        return outcome_json(conversation_id, channel, outcome, cleaned, suggested)


async def conversation_of_operator(
    session: AsyncSession, account: Account, conversation_id: str
) -> tuple[str, Call | Chat]:
    """The call or chat, when it is on one of the operator's sites (NotYourSite otherwise)."""
    channel, row = await conversation_of(session, None, conversation_id)
    if not account.works_for(row.site_id):
        raise NotYourSite("That conversation is on a site you do not work for.")
    return channel, row
