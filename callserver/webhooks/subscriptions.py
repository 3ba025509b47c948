"""A site's webhook subscriptions: added (CLI or dashboard), secret rotated, disabled, deleted.

The secret is shown once, when it is made; the owner keeps it in the receiving system.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from callserver import events
from callserver.errors import InvalidInput, NotFound
from callserver.store.models import WebhookSubscription
from callserver.webhooks.addresses import check_destination, checked_url

# At most this many URLs per site: each event is sent to every one.
MAX_PER_SITE = 20


class UnknownEvent(InvalidInput):
    code = "unknown_event"


@dataclass(frozen=True)
class NewSubscription:
    id: int
    secret: str


def new_secret() -> str:
    return "whsec_" + secrets.token_urlsafe(32)


def checked_events(names: Iterable[str]) -> list[str]:
    """The events asked for, each once and in the public list's order; none asked for: every event."""
    wanted = {n.strip() for n in names if n.strip()}
    unknown = sorted(wanted - set(events.PUBLISHED))
    if unknown:
        raise UnknownEvent(
            f"Unknown event {unknown[0][:60]!r}; the events are {', '.join(events.PUBLISHED)}."
        )
    return [e for e in events.PUBLISHED if e in wanted]


def wants(subscription: WebhookSubscription, type: str) -> bool:
    """Whether a subscription hears an event (no events listed: every event)."""
    return subscription.enabled and (not subscription.events or type in subscription.events)


async def add_subscription(
    session: AsyncSession,
    site_id: int,
    url: str,
    event_names: Sequence[str] = (),
    allow_private_network: bool = False,
) -> NewSubscription:
    """Store a subscription after checking its URL (resolved: private answers refused unless allowed)."""
    url = checked_url(url)
    names = checked_events(event_names)
    await check_destination(url, allow_private_network)
    count = len(
        list(
            await session.scalars(
                select(WebhookSubscription.id).where(WebhookSubscription.site_id == site_id)
            )
        )
    )
    if count >= MAX_PER_SITE:
        raise InvalidInput(f"A site has at most {MAX_PER_SITE} webhooks; delete one first.")
    row = WebhookSubscription(
        site_id=site_id,
        url=url,
        events=names,
        secret=new_secret(),
        allow_private_network=allow_private_network,
        enabled=True,
        created_at=datetime.now(UTC),
    )
    session.add(row)
    await session.flush()
    return NewSubscription(row.id, row.secret)


async def subscriptions_of(session: AsyncSession, site_ids: Sequence[int]) -> list[WebhookSubscription]:
    """The subscriptions of these sites, oldest first."""
    rows = await session.scalars(
        select(WebhookSubscription)
        .where(WebhookSubscription.site_id.in_(site_ids))
        .order_by(WebhookSubscription.id)
    )
    return list(rows)


async def subscription_of(
    session: AsyncSession, site_ids: Sequence[int], subscription_id: int
) -> WebhookSubscription:
    row = await session.get(WebhookSubscription, subscription_id)
    if row is None or row.site_id not in site_ids:
        raise NotFound(f"There is no webhook {subscription_id}.")
    return row


async def rotate_secret(session: AsyncSession, site_ids: Sequence[int], subscription_id: int) -> str:
    """A new secret for the subscription (deliveries from now on are signed with it); returns it."""
    row = await subscription_of(session, site_ids, subscription_id)
    row.secret = new_secret()
    return row.secret


async def set_enabled(
    session: AsyncSession, site_ids: Sequence[int], subscription_id: int, enabled: bool
) -> None:
    row = await subscription_of(session, site_ids, subscription_id)
    row.enabled = enabled


async def delete_subscription(session: AsyncSession, site_ids: Sequence[int], subscription_id: int) -> None:
    """Delete the subscription and its delivery log."""
    await session.delete(await subscription_of(session, site_ids, subscription_id))
