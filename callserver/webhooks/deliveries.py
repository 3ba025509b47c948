"""The delivery queue in the database: one row per event and subscription, claimed before each try.

A row is written before the first try, with the exact body, so a restart loses nothing and every
retry sends the same bytes under the same delivery id. A try is claimed with one conditional UPDATE
(its next try moved past the attempt), so two processes sharing a database never send it at once
(as `chats/left_mail.py` does for mail).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from callserver.store.database import Database
from callserver.store.models import OutboundDelivery, Site, WebhookSubscription
from callserver.webhooks.subscriptions import wants

PENDING, RETRYING, DELIVERED, FAILED = "pending", "retrying", "delivered", "failed"
TO_TRY = (PENDING, RETRYING)
# The test event of the dashboard's "send test event" button; only the subscription it is sent to hears it.
PING = "ping"


def now() -> datetime:
    return datetime.now(UTC)


def event_body(
    event_id: str, type: str, created_at: datetime, site_key: str, data: Mapping[str, object]
) -> str:
    """The JSON body of every delivery of one event: `{"id", "type", "created_at", "site", "data"}`."""
    return json.dumps(
        {
            "id": event_id,
            "type": type,
            "created_at": created_at.isoformat().replace("+00:00", "Z"),
            "site": site_key,
            "data": data,
        },
        separators=(",", ":"),
        ensure_ascii=False,
    )


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """`sha256=HEX`, HEX being HMAC-SHA256(secret, TIMESTAMP + "." + BODY)."""
    mac = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


@dataclass(frozen=True)
class Job:
    """One claimed try: where it goes, what it says, and how it is signed."""

    delivery_id: str
    type: str
    body: str
    attempts: int  # tries before this one
    url: str
    secret: str
    allow_private_network: bool
    enabled: bool


class DeliveryQueue:
    """Reads and writes the queue; every method is one transaction."""

    def __init__(self, database: Database) -> None:
        self._db = database

    async def enqueue(
        self,
        session: AsyncSession,
        site_id: int,
        type: str,
        data: Mapping[str, object],
        only: int | None = None,
    ) -> list[str]:
        """Queue one event for every subscription of the site that hears it (or just `only`); the ids."""
        query = select(WebhookSubscription).where(WebhookSubscription.site_id == site_id)
        if only is not None:
            query = query.where(WebhookSubscription.id == only)
        hearing = [s for s in await session.scalars(query) if only is not None or wants(s, type)]
        if not hearing:
            return []
        site_key = await session.scalar(select(Site.key).where(Site.id == site_id))
        at = now()
        event_id = uuid.uuid4().hex
        body = event_body(event_id, type, at, site_key or "", data)
        ids = []
        for subscription in hearing:
            delivery_id = uuid.uuid4().hex
            ids.append(delivery_id)
            session.add(
                OutboundDelivery(
                    id=delivery_id,
                    subscription_id=subscription.id,
                    site_id=site_id,
                    event_id=event_id,
                    type=type,
                    body=body,
                    created_at=at,
                    state=PENDING,
                    attempts=0,
                    next_at=at,
                )
            )
        return ids

    async def hearing(self, session: AsyncSession, site_id: int, type: str) -> bool:
        """Whether any subscription of the site hears this event (else nothing is rendered or stored)."""
        rows = await session.scalars(
            select(WebhookSubscription).where(WebhookSubscription.site_id == site_id)
        )
        return any(wants(s, type) for s in rows)

    async def due(self, at: datetime, limit: int = 500) -> list[str]:
        async with self._db.session() as session:
            rows = await session.scalars(
                select(OutboundDelivery.id)
                .where(OutboundDelivery.state.in_(TO_TRY), OutboundDelivery.next_at <= at)
                .order_by(OutboundDelivery.next_at)
                .limit(limit)
            )
            return list(rows)

    async def next_at(self) -> datetime | None:
        async with self._db.session() as session:
            return await session.scalar(
                select(func.min(OutboundDelivery.next_at)).where(OutboundDelivery.state.in_(TO_TRY))
            )

    async def claim(self, delivery_id: str, at: datetime, until: datetime) -> Job | None:
        """Take a due delivery for one try (not due again before `until`); None: not due, or taken."""
        async with self._db.session() as session:
            result = await session.execute(
                update(OutboundDelivery)
                .where(
                    OutboundDelivery.id == delivery_id,
                    OutboundDelivery.state.in_(TO_TRY),
                    OutboundDelivery.next_at <= at,
                )
                .values(next_at=until)
            )
            if not getattr(result, "rowcount", 0):
                return None
            row, subscription = (
                await session.execute(
                    select(OutboundDelivery, WebhookSubscription)
                    .join(WebhookSubscription, WebhookSubscription.id == OutboundDelivery.subscription_id)
                    .where(OutboundDelivery.id == delivery_id)
                )
            ).one()
            return Job(
                delivery_id=row.id,
                type=row.type,
                body=row.body,
                attempts=row.attempts,
                url=subscription.url,
                secret=subscription.secret,
                allow_private_network=subscription.allow_private_network,
                enabled=subscription.enabled,
            )

    async def delivered(self, delivery_id: str, status: int, response_ms: float) -> None:
        at = now()
        await self._outcome(
            delivery_id,
            state=DELIVERED,
            status_code=status,
            response_ms=response_ms,
            error=None,
            next_at=None,
            finished_at=at,
        )

    async def failed(
        self,
        delivery_id: str,
        error: str,
        retry_at: datetime | None,
        status: int | None,
        response_ms: float | None,
    ) -> None:
        """A failed try: `retrying` at `retry_at`, or `failed` (given up) when it is None."""
        await self._outcome(
            delivery_id,
            state=RETRYING if retry_at else FAILED,
            status_code=status,
            response_ms=response_ms,
            error=error[:1000],
            next_at=retry_at,
            finished_at=None if retry_at else now(),
        )

    async def _outcome(self, delivery_id: str, **values: object) -> None:
        async with self._db.session() as session:
            await session.execute(
                update(OutboundDelivery)
                .where(OutboundDelivery.id == delivery_id)
                .values(attempts=OutboundDelivery.attempts + 1, **values)
            )


async def delivery_log(
    session: AsyncSession, site_ids: Sequence[int], subscription_id: int | None = None, limit: int = 100
) -> list[OutboundDelivery]:
    """The latest deliveries of these sites (of one subscription, when given), newest first."""
    query = select(OutboundDelivery).where(OutboundDelivery.site_id.in_(site_ids))
    if subscription_id is not None:
        query = query.where(OutboundDelivery.subscription_id == subscription_id)
    rows = await session.scalars(query.order_by(OutboundDelivery.created_at.desc()).limit(limit))
    return list(rows)
