"""The revenue report's conversation counts by operator (the query counts each user's conversations
by index seeks and the rest as the period's total less those): every conversation of the period is
counted exactly once, under its operator's e-mail or under None (nobody answered, a left message, an
operator whose account is gone), other sites and other days not at all."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import aiohttp
from sqlalchemy import delete

from callserver import sites
from callserver.orders.revenue import Period, revenue_report
from callserver.store.models import User
from tests.dashboard_support import NOW, add_call, add_chat, add_left_message, add_order, add_owner
from tests.stack import Stack


async def _conversations(stack: Stack) -> dict[str, Any]:
    """Conversations on NOW's day: Ann 2 calls + 1 chat, Bob 1 call (and an order), nobody 1 call, a left
    message, Gone's call (account deleted); plus a call of Ann's the day before and one on another site."""
    ann = await add_owner(stack, "ann@shop.example", role="operator")
    bob = await add_owner(stack, "bob@shop.example", role="operator")
    gone = await add_owner(stack, "gone@shop.example", role="operator")
    async with stack.database.session() as session:
        other = await sites.create_site(session, "Other shop", ["https://other.example"])
    for minutes in (0, 5):
        await add_call(stack, operator_id=ann, created_at=NOW + timedelta(minutes=minutes))
    await add_chat(stack, operator_id=ann)
    bobs = await add_call(stack, operator_id=bob)
    await add_order(stack, "B-1", "80.00", "call", bobs)
    await add_call(stack, operator_id=None, end_reason="missed", answered_at=None)
    await add_left_message(stack)
    await add_call(stack, operator_id=gone)
    async with stack.database.session() as session:
        await session.execute(delete(User).where(User.id == gone))  # the call keeps no operator
    await add_call(stack, operator_id=ann, created_at=NOW - timedelta(days=1))
    await add_call(stack, site_id=other.id, operator_id=ann)
    await add_call(stack, site_id=other.id, operator_id=None, end_reason="missed", answered_at=None)
    return {"other": other.id}


async def test_conversations_by_operator_in_the_api_report(stack: Stack) -> None:
    await _conversations(stack)
    day = NOW.date().isoformat()
    async with (
        aiohttp.ClientSession() as http,
        http.get(
            f"{stack.url}/api/v1/reports/revenue",
            params={"from": day, "to": day, "by": "operator"},
            headers={"Authorization": f"Bearer {stack.site.secret}"},
        ) as response,
    ):
        assert response.status == 200
        rows = (await response.json())["rows"]
    counts = {row["key"]: (row["conversations"], row["orders"], row["revenue"]) for row in rows}
    assert counts == {
        "ann@shop.example": (3, 0, "0.00"),
        "bob@shop.example": (1, 1, "80.00"),
        None: (3, 0, "0.00"),  # nobody's call, the left message, the deleted operator's call
    }


async def test_conversations_by_operator_over_two_sites(stack: Stack) -> None:
    other = (await _conversations(stack))["other"]
    async with stack.database.session() as session:
        both = await revenue_report(
            session, [stack.site.id, other], Period(NOW.date(), NOW.date()), "operator"
        )
        week = await revenue_report(
            session, [stack.site.id], Period(NOW.date() - timedelta(days=6), NOW.date()), "operator"
        )
        empty = await revenue_report(
            session, [stack.site.id], Period(date(2020, 1, 1), date(2020, 1, 2)), "operator"
        )
    assert {r.key: r.conversations for r in both} == {
        "ann@shop.example": 4,
        "bob@shop.example": 1,
        None: 4,
    }
    assert {r.key: r.conversations for r in week} == {"ann@shop.example": 4, "bob@shop.example": 1, None: 3}
    assert empty == []
