"""Google Ads offline conversions (`/dashboard/export/google-ads.csv?from=DATE&to=DATE`).

Google's upload template for conversions from clicks ("Import conversions from ad clicks into Google
Ads using files (legacy)", support.google.com/google-ads/answer/7014069, the CSV template of
"Conversions from clicks"): a `Parameters:TimeZone=…` line, then the header row `Google Click ID,
Conversion Name, Conversion Time, Conversion Value, Conversion Currency`, then one conversion a row.
Times are written in UTC (`yyyy-MM-dd HH:mm:ss`, the zone given once as `+0000`), so no row depends
on daylight-saving rules. Checked against that page on 2026-12-02: "If all of your conversion times
are in the same time zone, set the time zone once in the 'Parameters' row" (a Conversion Time without
a zone then takes the row's), the zone written either as a time zone ID from Google's list or as the
GMT offset, `+` or `-` and four digits (`-0500` New York, `+0100` Berlin, `+0000` GMT). The zone
could instead follow each Conversion Time; once in the Parameters row is the page's own advice for
times that share one zone, as these do.

One row per attributed order placed in the period whose conversation carried a `gclid` (its last
touch's, else its first touch's), the value being the order's total net of refunds
(`orders.revenue.net_revenue()`). Orders worth nothing any more (cancelled or refunded in full) are
left out: uploaded, Google would count them as conversions all the same.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import and_, select
from sqlalchemy.ext.asyncio import AsyncSession

from callserver.orders.revenue import cents, in_sites, net_revenue
from callserver.store.models import Call, Chat, LeftMessage, Order, Site

TIME_ZONE_LINE = "Parameters:TimeZone=+0000"
COLUMNS = ["Google Click ID", "Conversion Name", "Conversion Time", "Conversion Value", "Conversion Currency"]
# A site's `google_ads_conversion` when it has none: the name of the conversion action the owner
# creates in Google Ads (Goals → Conversions → Import → "Conversions from clicks").
DEFAULT_CONVERSION_NAME = "callserver conversation order"
CONVERSATIONS: tuple[tuple[Any, str], ...] = ((Call, "call"), (Chat, "chat"), (LeftMessage, "message"))


def conversion_time(at: datetime) -> str:
    """`yyyy-MM-dd HH:mm:ss` in UTC, the zone `TIME_ZONE_LINE` declares for every row."""
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


async def conversion_rows(
    session: AsyncSession, site_ids: Sequence[int], start: datetime | None, end: datetime | None
) -> AsyncIterator[list[str]]:
    """The file's lines: the time zone, the header, then the conversions by order time."""
    yield [TIME_ZONE_LINE]
    yield COLUMNS
    found: list[tuple[datetime, int, list[str]]] = []
    for table, channel in CONVERSATIONS:
        stmt = (
            select(
                table.gclid,
                Site.google_ads_conversion,
                Order.created_at,
                Order.id,
                net_revenue(),
                Order.currency,
            )
            .join(table, and_(Order.channel == channel, table.id == Order.conversation_id))
            .join(Site, Site.id == Order.site_id)
            .where(in_sites(Order.site_id, site_ids), table.gclid.is_not(None))
        )
        if start is not None:
            stmt = stmt.where(Order.created_at >= start)
        if end is not None:
            stmt = stmt.where(Order.created_at < end)
        for gclid, name, at, order_key, value, currency in await session.execute(stmt):
            net = cents(value)
            if net <= 0:
                continue
            found.append(
                (
                    at,
                    order_key,
                    [gclid, name or DEFAULT_CONVERSION_NAME, conversion_time(at), f"{net:.2f}", currency],
                )
            )
    for _at, _key, row in sorted(found, key=lambda item: (item[0], item[1])):
        yield row
