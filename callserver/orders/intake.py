"""Orders as shops report them (API, Shopify, WooCommerce): stored once per (site, order id), attributed."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from enum import StrEnum

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from callserver.errors import InvalidInput, NotFound
from callserver.orders.attribution import AttributedBy, attribute_order
from callserver.store.models import Order, Site, WebhookDelivery

# `orders.total` is Numeric(14, 2): twelve digits before the point. A larger total would overflow
# the column (PostgreSQL refuses it, SQLite keeps a float) and is no real order anyway.
MAX_TOTAL = Decimal("1e12")
# Orders are placed after this service existed and not in the future; a shop's clock may be a
# little ahead of ours. Far-off times would also overflow the attribution window's arithmetic.
EARLIEST_ORDER = datetime(2000, 1, 1, tzinfo=UTC)
CLOCK_SKEW = timedelta(days=1)
# Column widths (callserver/store/models.py `Order`).
TEXT_LIMITS = {"order_id": 100, "number": 100, "currency": 3, "visitor_token": 64, "email": 320, "phone": 50}


class Source(StrEnum):
    API = "api"
    SHOPIFY = "shopify"
    WOOCOMMERCE = "woocommerce"


@dataclass(frozen=True)
class OrderReport:
    """An order as a shop reports it, already validated at the edge (total rounded to cents)."""

    order_id: str
    total: Decimal
    currency: str
    created_at: datetime | None = None
    visitor_token: str | None = None
    email: str | None = None
    phone: str | None = None
    number: str | None = None


@dataclass(frozen=True)
class Intake:
    """The stored order, and whether this report created it (False: it was known already)."""

    order: Order
    created: bool


def check_report(report: OrderReport, now: datetime) -> None:
    """Raise InvalidInput, naming the field, for a report that cannot be stored as it is."""
    if not report.order_id:
        raise InvalidInput("order_id: an order needs its id.")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in report.order_id):
        raise InvalidInput("order_id: contains a control character.")
    for name, limit in TEXT_LIMITS.items():
        value: str | None = getattr(report, name)
        if value is not None and len(value) > limit:
            raise InvalidInput(f"{name}: at most {limit} characters.")
        if value is not None and "\x00" in value:
            # PostgreSQL text cannot hold NUL, and no real id or address contains one.
            raise InvalidInput(f"{name}: contains a NUL character.")
    if not report.total.is_finite() or not 0 <= report.total < MAX_TOTAL:
        raise InvalidInput(f"total: from 0 up to (not including) {MAX_TOTAL:,.0f}.")
    if report.created_at is not None:
        if report.created_at.tzinfo is None:
            raise InvalidInput("created_at: an order's time needs a UTC offset.")
        if not EARLIEST_ORDER <= report.created_at <= now + CLOCK_SKEW:
            raise InvalidInput(
                f"created_at: {report.created_at.isoformat()} is not a time an order was placed "
                f"(from {EARLIEST_ORDER:%Y-%m-%d} until now)."
            )


async def find_order(session: AsyncSession, site_id: int, order_id: str) -> Order | None:
    return await session.scalar(select(Order).where(Order.site_id == site_id, Order.order_id == order_id))


async def order_of_site(session: AsyncSession, site_id: int, order_id: str) -> Order:
    """The site's order with this id; raises NotFound (another site's order is not found either)."""
    order = await find_order(session, site_id, order_id)
    if order is None:
        raise NotFound(f"No order {order_id!r} has been reported for this site.")
    return order


async def record_order(
    session: AsyncSession, site: Site, report: OrderReport, source: Source, now: datetime | None = None
) -> Intake:
    """Store a reported order once and attribute it; a known order is updated, never duplicated.

    Reporting an order again may change its total, currency and display number, and fills in a
    visitor token, e-mail or phone it lacked; its creation time and source stay as first reported.
    Attribution runs again (new contact details may find the conversation) unless it was set by hand.
    Raises InvalidInput for a report that cannot be stored (see `check_report`).
    """
    now = now or datetime.now(UTC)
    check_report(report, now)
    # Stored times are UTC: SQLite keeps no offset, so another one would compare wrongly.
    created_at = report.created_at.astimezone(UTC) if report.created_at else now
    order = await find_order(session, site.id, report.order_id)
    if order is None:
        order = Order(
            site_id=site.id,
            order_id=report.order_id,
            number=report.number,
            total=report.total,
            currency=report.currency,
            visitor_token=report.visitor_token,
            email=report.email,
            phone=report.phone,
            created_at=created_at,
            received_at=now,
            source=source.value,
        )
        try:
            async with session.begin_nested():
                session.add(order)
        except IntegrityError:
            # The same order arrived twice at once (webhook and API, or a fast retry): the other won.
            known = await find_order(session, site.id, report.order_id)
            if known is None:
                raise
            order = known
        else:
            await attribute_order(session, site, order)
            await session.flush()
            return Intake(order, created=True)

    order.total = report.total
    order.currency = report.currency
    order.number = report.number or order.number
    order.visitor_token = report.visitor_token or order.visitor_token
    order.email = report.email or order.email
    order.phone = report.phone or order.phone
    if order.attributed_by != AttributedBy.MANUAL:
        await attribute_order(session, site, order)
    await session.flush()
    return Intake(order, created=False)


async def first_delivery(
    session: AsyncSession, site: Site, source: Source, delivery_id: str, now: datetime | None = None
) -> bool:
    """Remember a webhook delivery; False when it was handled before (a redelivery to ignore).

    Call it in the transaction that stores the order, so a delivery that fails is not remembered.
    """
    try:
        async with session.begin_nested():
            session.add(
                WebhookDelivery(
                    site_id=site.id,
                    source=source.value,
                    delivery_id=delivery_id[:100],
                    received_at=now or datetime.now(UTC),
                )
            )
    except IntegrityError:
        return False
    return True
