"""Orders as shops report them (API, Shopify, WooCommerce): stored once per (site, order id), attributed,
and kept up to date through their life (paid, refunded, cancelled); an older report never undoes a newer one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from enum import StrEnum

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from callserver.errors import InvalidInput, NotFound
from callserver.orders.attribution import AttributedBy, Attribution, attribute_order
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


class OrderStatus(StrEnum):
    """Where an order is in its life: a cancelled order sold nothing, a refunded one total less refunds."""

    PENDING = "pending"
    PAID = "paid"
    PARTIALLY_REFUNDED = "partially_refunded"
    REFUNDED = "refunded"
    CANCELLED = "cancelled"


# Statuses whose refund figures decide between paid, partially refunded and refunded.
SETTLED = (OrderStatus.PAID, OrderStatus.PARTIALLY_REFUNDED, OrderStatus.REFUNDED)


class Ignored(StrEnum):
    """Why a report changed nothing stored."""

    STALE = "stale"  # older than what is stored (an out-of-order delivery)


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
    # None: as stored (a new order is paid, or refunded as far as its refunds say).
    status: OrderStatus | None = None
    # All refunds so far as one amount (the API), or the platform's refunds by id (merged with the
    # ones known: a refund is never taken back). At most one of the two.
    refunded_total: Decimal | None = None
    refunds: Mapping[str, Decimal] | None = None
    # When the shop last changed the order; None: now.
    updated_at: datetime | None = None


@dataclass(frozen=True)
class RefundReport:
    """One refund of a known order as a platform reports it on its own (Shopify `refunds/create`)."""

    order_id: str
    refund_id: str
    amount: Decimal
    created_at: datetime | None = None


@dataclass(frozen=True)
class Intake:
    """The stored order, whether this report created it, why it changed nothing (if so), and whether
    the order is now credited to another conversation than before (`order.attributed` is due)."""

    order: Order
    created: bool
    ignored: Ignored | None = None
    attributed: bool = False


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
    for name in ("created_at", "updated_at"):
        when: datetime | None = getattr(report, name)
        if when is None:
            continue
        if when.tzinfo is None:
            raise InvalidInput(f"{name}: an order's time needs a UTC offset.")
        if not EARLIEST_ORDER <= when <= now + CLOCK_SKEW:
            raise InvalidInput(
                f"{name}: {when.isoformat()} is not a time an order was placed or changed "
                f"(from {EARLIEST_ORDER:%Y-%m-%d} until now)."
            )
    if report.created_at and report.updated_at and report.updated_at < report.created_at:
        raise InvalidInput("updated_at: before the order's created_at.")
    if report.refunded_total is not None and report.refunds is not None:
        raise InvalidInput("refunded_total: give the refunds or their total, not both.")
    amounts = [report.refunded_total] if report.refunded_total is not None else []
    for amount in [*amounts, *(report.refunds or {}).values()]:
        if not amount.is_finite() or not 0 <= amount < MAX_TOTAL:
            raise InvalidInput(f"refunded_total: from 0 up to (not including) {MAX_TOTAL:,.0f}.")


def _check_refunded(refunded: Decimal, total: Decimal) -> None:
    if refunded > total:
        raise InvalidInput(f"refunded_total: {refunded:.2f} is more than the order's total {total:.2f}.")


def settled_status(status: OrderStatus, total: Decimal, refunded: Decimal) -> OrderStatus:
    """A paid order with refunds is (partially) refunded; pending and cancelled stay as they are."""
    if status not in SETTLED:
        return status
    if refunded <= 0:
        # A platform may say "refunded" before its refund arrives: trust it over a missing figure.
        return status if status is not OrderStatus.PARTIALLY_REFUNDED else OrderStatus.PAID
    return OrderStatus.REFUNDED if refunded >= total else OrderStatus.PARTIALLY_REFUNDED


def _refund_map(refunds: Mapping[str, Decimal]) -> dict[str, str]:
    return {refund_id: f"{amount:.2f}" for refund_id, amount in refunds.items()}


def _refunded_by_map(refunds: Mapping[str, object]) -> Decimal:
    return sum((Decimal(str(amount)) for amount in refunds.values()), Decimal(0))


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

    Reporting an order again may change its total, currency, display number, status and refunds,
    and fills in a visitor token, e-mail or phone it lacked; its creation time and source stay as
    first reported. A report whose `updated_at` is older than the stored one changes nothing
    (`Intake.ignored` is `stale`): deliveries arrive out of order. Attribution runs again (new
    contact details may find the conversation) unless it was set by hand.
    Raises InvalidInput for a report that cannot be stored (see `check_report`).
    """
    now = now or datetime.now(UTC)
    check_report(report, now)
    # Stored times are UTC: SQLite keeps no offset, so another one would compare wrongly.
    created_at = report.created_at.astimezone(UTC) if report.created_at else now
    updated_at = report.updated_at.astimezone(UTC) if report.updated_at else None
    order = await find_order(session, site.id, report.order_id)
    if order is None:
        refunds = _refund_map(report.refunds) if report.refunds is not None else None
        refunded = _refunded(report, refunds, report.total)
        _check_refunded(refunded, report.total)
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
            status=settled_status(report.status or OrderStatus.PAID, report.total, refunded),
            refunded_total=refunded,
            refunds=refunds,
            # Not changed since it was placed, unless the shop says when it was.
            updated_at=max(updated_at or created_at, created_at),
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
            attribution = await attribute_order(session, site, order)
            await session.flush()
            return Intake(order, created=True, attributed=attribution.conversation_id is not None)

    if updated_at is not None and updated_at < _last_change(order):
        return Intake(order, created=False, ignored=Ignored.STALE)
    refunds = order.refunds
    if report.refunds is not None:
        refunds = {**(order.refunds or {}), **_refund_map(report.refunds)}
    refunded = _refunded(report, refunds, report.total, order.refunded_total)
    _check_refunded(refunded, report.total)
    before = Attribution.of(order)
    order.total = report.total
    order.currency = report.currency
    order.number = report.number or order.number
    order.visitor_token = report.visitor_token or order.visitor_token
    order.email = report.email or order.email
    order.phone = report.phone or order.phone
    order.refunds = refunds
    order.refunded_total = refunded
    order.status = settled_status(report.status or OrderStatus(order.status), report.total, refunded)
    order.updated_at = max(updated_at or now, _last_change(order))
    if order.attributed_by != AttributedBy.MANUAL:
        await attribute_order(session, site, order)
    await session.flush()
    return Intake(order, created=False, attributed=_newly_attributed(before, order))


def _refunded(
    report: OrderReport, refunds: Mapping[str, object] | None, total: Decimal, stored: Decimal | None = None
) -> Decimal:
    """The order's refunds in all, after this report."""
    if report.refunded_total is not None:
        return report.refunded_total
    if report.refunds is not None and refunds is not None:
        return _refunded_by_map(refunds)
    if report.status is OrderStatus.REFUNDED and not stored:
        return total  # "refunded" with no figure: all of it
    return stored if stored is not None else Decimal(0)


def _last_change(order: Order) -> datetime:
    return order.updated_at or order.received_at


def _newly_attributed(before: Attribution, order: Order) -> bool:
    now = Attribution.of(order)
    return now.conversation_id is not None and (now.channel, now.conversation_id) != (
        before.channel,
        before.conversation_id,
    )


async def record_refund(
    session: AsyncSession, site: Site, refund: RefundReport, now: datetime | None = None
) -> Intake | None:
    """Add one refund to a known order (once per refund id); None when the order is not known (yet).

    A refund is never stale: it only ever adds. The order's `updated_at` moves on to the refund's
    time, so an order update from before the refund, arriving later, cannot take it back.
    """
    now = now or datetime.now(UTC)
    if not refund.amount.is_finite() or not 0 <= refund.amount < MAX_TOTAL:
        raise InvalidInput(f"transactions.amount: from 0 up to (not including) {MAX_TOTAL:,.0f}.")
    if refund.created_at is not None and not EARLIEST_ORDER <= refund.created_at <= now + CLOCK_SKEW:
        raise InvalidInput(f"created_at: {refund.created_at.isoformat()} is not a time a refund was made.")
    order = await find_order(session, site.id, refund.order_id)
    if order is None:
        return None
    refunds = {**(order.refunds or {}), refund.refund_id: f"{refund.amount:.2f}"}
    refunded = _refunded_by_map(refunds)
    _check_refunded(refunded, order.total)
    order.refunds = refunds
    order.refunded_total = refunded
    order.status = settled_status(OrderStatus(order.status), order.total, refunded)
    when = refund.created_at.astimezone(UTC) if refund.created_at else now
    order.updated_at = max(when, _last_change(order))
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
