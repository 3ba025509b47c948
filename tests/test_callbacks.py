"""Call me back, and an operator ringing a visitor: through the real sockets, SMTP and event stream."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy import select, update

from callserver import accounts, sites
from callserver.store.models import CallbackRequest, Site
from callserver.web.keys import SITES
from tests.clocks import ManualClock
from tests.dashboard_support import add_owner, csrf_token, signed_in
from tests.inbox import NOTIFY, Inbox, mail_text
from tests.stack import PASSWORD, Stack, running_stack, settings_for
from tests.test_outbound_webhooks import assert_signed, receiving, subscribe

TOKEN = "visitor-callback-01"


@pytest.fixture
def mailing_settings() -> dict[str, Any]:
    return {"webhook_retry_after": 0.3}  # a failed delivery is tried again at once, not in 20 s


@pytest.fixture
def stack(mailing_stack: Stack) -> Stack:
    return mailing_stack


async def stored(stack: Stack) -> list[CallbackRequest]:
    async with stack.database.session() as session:
        return list(await session.scalars(select(CallbackRequest).order_by(CallbackRequest.created_at)))


async def until(check: object, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not await check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "still waiting"
        await asyncio.sleep(0.05)


async def test_a_call_back_request_is_stored_listed_mailed_published_and_closed_with_an_outcome(
    stack: Stack, smtp: tuple[Inbox, int]
) -> None:
    inbox, _ = smtp
    async with receiving() as receiver:
        _, secret = await subscribe(stack, receiver.url, ("callback.requested",))
        since = int(time.time())
        anna = await stack.sockets.operator("anna@shop.example", "Anna")  # signed in, not online
        shopper = await stack.sockets.shopper(TOKEN)
        assert shopper.hello["operators_online"] == 0

        await shopper.send(
            {
                "type": "callback.request",
                "phone": "+49 30 1234-5678",
                "when": "after 17:00",
                "context": {"page": f"{stack.shop_url}/products/oak-table"},
            }
        )
        callback_id = (await shopper.receive("callback.requested"))["id"]

        entry = (await anna.receive("callback.new"))["callback"]
        assert entry["id"] == callback_id and entry["phone"] == "+49 30 1234-5678"
        assert entry["when"] == "after 17:00" and entry["visitor_id"] == TOKEN
        assert entry["page"].endswith("/products/oak-table") and entry["outcome"] is None

        await until(lambda: asyncio.sleep(0, result=bool(inbox.messages)))
        mail = inbox.messages[0]
        assert mail["X-Envelope-To"] == NOTIFY and "+49 30 1234-5678" in mail["Subject"]
        assert "after 17:00" in mail_text(mail) and "/products/oak-table" in mail_text(mail)

        (delivery,) = await receiver.requests(1)
        data = assert_signed(delivery, secret, stack.site.key, "callback.requested", since)
        assert data == {
            "id": callback_id,
            "phone": "+49 30 1234-5678",
            "when": "after 17:00",
            "visitor_token": TOKEN,
        }

        # A softphone opened later lists it; the outcome takes it off every list, with who handled it.
        ben = await stack.sockets.operator("ben@shop.example", "Ben")
        assert [c["id"] for c in ben.hello["callbacks"]] == [callback_id]
        await ben.send({"type": "callback.done", "id": callback_id, "outcome": "sideways"})
        assert (await ben.receive("error"))["code"] == "bad_message"
        await ben.send({"type": "callback.done", "id": callback_id, "outcome": "reached"})
        done = await anna.receive("callback.done")
        assert (done["id"], done["outcome"], done["by"]) == (callback_id, "reached", "Ben")
        (row,) = await stored(stack)
        assert row.outcome == "reached" and row.handled_by == ben.account_id and row.handled_at is not None
        assert row.mail_state == "sent"
        again = await stack.sockets.operator("cleo@shop.example", "Cleo")
        assert again.hello["callbacks"] == []


async def test_bad_call_back_requests_get_coded_errors_and_store_nothing(stack: Stack) -> None:
    shopper = await stack.sockets.shopper(TOKEN)
    for phone in ("call me", "12", "+1 555 0100 <script>", "0" * 25):
        await shopper.send({"type": "callback.request", "phone": phone})
        assert (await shopper.receive("error"))["code"] == "bad_phone"
    await shopper.send({"type": "callback.request", "phone": 5550100})
    assert (await shopper.receive("error"))["code"] == "bad_message"
    assert await stored(stack) == []

    # The owner turned call-back off for the site.
    async with stack.database.session() as session:
        await session.execute(update(Site).where(Site.id == stack.site.id).values(callbacks=False))
    stack.app[SITES].forget()
    late = await stack.sockets.shopper("visitor-callback-02")
    await late.send({"type": "callback.request", "phone": "+48 22 555 01 00"})
    assert (await late.receive("error"))["code"] == "callbacks_off"
    assert await stored(stack) == []

    phone = await stack.sockets.operator("anna@shop.example", "Anna")
    await phone.send({"type": "callback.done", "id": "f" * 32, "outcome": "reached"})
    assert (await phone.receive("error"))["code"] == "unknown_callback"


class Page:
    """A visitor's page on the shop as the server sees it: page views and the invitation stream."""

    def __init__(self, stack: Stack, session: aiohttp.ClientSession, token: str) -> None:
        self.stack, self.session, self.token = stack, session, token
        self.events: aiohttp.ClientResponse | None = None
        self.text = ""

    async def view(self) -> str | None:
        body = {"kind": "view", "visitor": self.token, "view": "v1", "page": f"{self.stack.shop_url}/tv"}
        async with self.session.post(
            f"{self.stack.url}/widget/beacon?site={self.stack.site.key}",
            data=json.dumps(body).encode(),
            headers={"Origin": self.stack.shop_url, "Content-Type": "text/plain;charset=UTF-8"},
        ) as response:
            assert response.status == 204
            return response.headers.get("CB-Listen")

    async def listen(self) -> None:
        self.events = await self.session.get(
            f"{self.stack.url}/widget/events?site={self.stack.site.key}&visitor={self.token}",
            headers={"Origin": self.stack.shop_url},
        )

    async def event(self, name: str, within: float = 5.0) -> dict[str, object]:
        """The next `name` event on the stream (earlier ones of other names are skipped)."""
        assert self.events is not None
        marker = f"event: {name}\ndata: "
        deadline = time.monotonic() + within
        while marker not in self.text:
            assert time.monotonic() < deadline, f"no {name} event in {self.text!r}"
            self.text += (await asyncio.wait_for(self.events.content.readany(), within)).decode()
        _, _, after = self.text.partition(marker)
        line, _, self.text = after.partition("\n\n")
        parsed: dict[str, object] = json.loads(line)
        return parsed

    def close(self) -> None:
        if self.events is not None:
            self.events.close()


async def on_the_board(stack: Stack, session: aiohttp.ClientSession, token: str = TOKEN) -> Page:
    page = Page(stack, session, token)
    assert await page.view() == "1"
    await page.listen()
    return page


async def test_an_operator_rings_a_visitor_who_declines_then_answers_and_only_that_operator_rings(
    stack: Stack,
) -> None:
    async with aiohttp.ClientSession() as session:
        anna = await stack.sockets.operator("anna@shop.example", "Anna", online=True)
        ben = await stack.sockets.operator("ben@shop.example", "Ben", online=True)
        page = await on_the_board(stack, session)
        try:
            await anna.receive(
                "visitors", lambda f: any(v["id"] == TOKEN and v["reachable"] for v in f["visitors"])
            )
            site_id = stack.site.id
            await anna.send({"type": "visitor.call", "visitor_id": TOKEN, "site_id": site_id})
            ringing = await anna.receive("visitor_call.state")
            assert ringing["state"] == "ringing" and ringing["visitor_id"] == TOKEN
            rung = await page.event("visitor_call.ring")
            assert rung["id"] == ringing["id"] and rung["operator"] == {"name": "Anna"}

            # The page rings already: a second ring is refused.
            await ben.send({"type": "visitor.call", "visitor_id": TOKEN, "site_id": site_id})
            assert (await ben.receive("error"))["code"] == "already_ringing"

            shopper = await stack.sockets.shopper(TOKEN)
            await shopper.send({"type": "visitor_call.decline", "id": rung["id"]})
            declined = await anna.receive("visitor_call.state", lambda f: f["state"] != "ringing")
            assert (declined["id"], declined["state"]) == (rung["id"], "declined")
            assert (await page.event("visitor_call.over"))["id"] == rung["id"]
            await shopper.send({"type": "visitor_call.decline", "id": rung["id"]})
            assert (await shopper.receive("error"))["code"] == "no_visitor_call"

            # Another time the visitor answers: the offer names the ring, and only Anna rings.
            await anna.send({"type": "visitor.call", "visitor_id": TOKEN, "site_id": site_id})
            second = await page.event("visitor_call.ring")
            sdp = await shopper.offer(440)
            await shopper.send(
                {"type": "call.offer", "sdp": sdp, "invitation": second["id"], "context": {"page": "/tv"}}
            )
            answer = await shopper.receive("call.answer")
            await shopper.apply_answer(answer["sdp"])
            incoming = (await anna.receive("call.incoming"))["call"]
            assert incoming["invitation"] == second["id"] and incoming["id"] == answer["call_id"]
            await anna.receive(
                "visitor_call.state", lambda f: f["id"] == second["id"] and f["state"] == "answered"
            )
            await ben.nothing("call.incoming", within=0.5)
            await anna.answer(answer["call_id"])
            await shopper.receive("call.connected")
            await shopper.hears_audio()
            await anna.hears_audio()

            # An offer naming a ring that is over is refused with a code; nothing rings.
            late = await stack.sockets.shopper("visitor-callback-03")
            await late.send({"type": "call.offer", "sdp": await late.offer(), "invitation": second["id"]})
            assert (await late.receive("error"))["code"] == "no_visitor_call"
        finally:
            page.close()


async def test_a_ring_nobody_answers_tells_the_operator_after_30_seconds(tmp_path: Path) -> None:
    clock = ManualClock()
    async with running_stack(settings_for(tmp_path), clock) as stack, aiohttp.ClientSession() as session:
        anna = await stack.sockets.operator("anna@shop.example", "Anna", online=True)
        page = await on_the_board(stack, session)
        try:
            await anna.receive(
                "visitors", lambda f: any(v["id"] == TOKEN and v["reachable"] for v in f["visitors"])
            )
            await anna.send({"type": "visitor.call", "visitor_id": TOKEN, "site_id": stack.site.id})
            rung = await page.event("visitor_call.ring")
            clock.advance(29)
            await anna.nothing("visitor_call.state", within=0.3, where=lambda f: f["state"] != "ringing")
            clock.advance(2)
            over = await anna.receive("visitor_call.state", lambda f: f["state"] != "ringing")
            assert (over["id"], over["state"]) == (rung["id"], "no_answer")
            assert (await page.event("visitor_call.over"))["id"] == rung["id"]
        finally:
            page.close()


async def test_only_operators_of_the_site_ring_its_visitors_only_while_on_it_and_not_too_often(
    stack: Stack,
) -> None:
    async with stack.database.session() as session:
        other = await sites.create_site(session, "Other shop", ["https://other.example"])
        row = await session.get(Site, other.id)
        assert row is not None
        await accounts.create_user(
            session, "olga@other.example", PASSWORD, "operator", sites=[row], name="Olga"
        )
    async with aiohttp.ClientSession() as session:
        olga = await stack.sockets.softphone("olga@other.example", online=True)
        anna = await stack.sockets.operator("anna@shop.example", "Anna", online=True)
        await olga.send({"type": "visitor.call", "visitor_id": TOKEN, "site_id": stack.site.id})
        assert (await olga.receive("error"))["code"] == "visitor_gone"
        await anna.send({"type": "visitor.call", "visitor_id": TOKEN, "site_id": stack.site.id})
        assert (await anna.receive("error"))["code"] == "visitor_gone"  # not on the site

        page = await on_the_board(stack, session)
        try:
            await anna.receive(
                "visitors", lambda f: any(v["id"] == TOKEN and v["reachable"] for v in f["visitors"])
            )
            await olga.send({"type": "visitor.call", "visitor_id": TOKEN, "site_id": stack.site.id})
            assert (await olga.receive("error"))["code"] == "visitor_gone"
            # Two rings of one visitor, then they are left alone for a while.
            codes = []
            for _ in range(3):
                await anna.send({"type": "visitor.call", "visitor_id": TOKEN, "site_id": stack.site.id})
                reply = await anna.receive("visitor_call.state", within=5) if len(codes) < 2 else None
                if reply is not None:
                    codes.append(reply["state"])
                    await anna.send({"type": "visitor_call.cancel", "id": reply["id"]})
                    await anna.receive("visitor_call.state", lambda f: f["state"] == "cancelled")
            assert codes == ["ringing", "ringing"]
            assert (await anna.receive("error"))["code"] == "rate_limited"
        finally:
            page.close()


async def test_the_owner_lists_call_backs_on_the_dashboard_and_records_an_outcome(stack: Stack) -> None:
    await add_owner(stack, "owner@shop.example")
    anna = await stack.sockets.operator("anna@shop.example", "Anna")
    shopper = await stack.sockets.shopper(TOKEN)
    await shopper.send({"type": "callback.request", "phone": "+39 06 555 0100", "when": "Monday morning"})
    callback_id = (await shopper.receive("callback.requested"))["id"]
    async with signed_in(stack, "owner@shop.example") as owner:
        async with owner.get("/dashboard/callbacks") as page:
            html = await page.text()
        assert page.status == 200 and 'data-testid="dash-callbacks"' in html
        assert f'data-callback-id="{callback_id}" data-outcome=""' in html
        assert "+39 06 555 0100" in html and "Monday morning" in html
        assert 'href="/dashboard/callbacks" aria-current="page"' in html
        token = csrf_token(html)
        path = f"/dashboard/callbacks/{callback_id}/outcome"
        async with owner.post(path, data={"csrf": token, "outcome": "maybe"}) as refused:
            assert "The outcome is one of" in await refused.text()
        async with owner.post(path, data={"csrf": "0" * 64, "outcome": "no_answer"}) as forged:
            assert forged.status == 403
        (row,) = await stored(stack)
        assert row.outcome is None
        async with owner.post(path, data={"csrf": token, "outcome": "no_answer"}) as recorded:
            html = await recorded.text()
        assert f'data-callback-id="{callback_id}" data-outcome="no_answer"' in html
        done = await anna.receive("callback.done")
        assert (done["id"], done["outcome"]) == (callback_id, "no_answer")
        async with owner.get("/dashboard/callbacks?show=open") as page:
            assert callback_id not in await page.text()
        async with owner.get("/dashboard/callbacks?show=sideways") as page:
            assert page.status == 400


async def test_the_owner_turns_call_back_off_in_the_site_form_and_the_widget_stops_offering_it(
    stack: Stack,
) -> None:
    await add_owner(stack, "owner@shop.example")
    async with aiohttp.ClientSession() as http, signed_in(stack, "owner@shop.example") as owner:

        async def widget_config() -> dict[str, object]:
            url = f"{stack.url}/widget/config?site={stack.site.key}"
            async with http.get(url, headers={"Origin": stack.shop_url}) as response:
                config: dict[str, object] = await response.json()
            return config

        assert (await widget_config())["callback"] is True  # on by default
        page = await (await owner.get("/dashboard/sites")).text()
        assert 'name="callbacks" data-testid="dash-site-callbacks" checked' in page
        form = {
            "csrf": csrf_token(page),
            "origins": stack.shop_url,
            "ring_strategy": "ring_all",
            "attribution_days": "7",
            "callbacks_shown": "1",
        }
        async with owner.post(f"/dashboard/sites/{stack.site.id}", data=form) as saved:
            assert "Saved the settings" in await saved.text()
        assert (await widget_config())["callback"] is False
        shopper = await stack.sockets.shopper(TOKEN)
        await shopper.send({"type": "callback.request", "phone": "+34 91 555 0100"})
        assert (await shopper.receive("error"))["code"] == "callbacks_off"
        async with owner.post(f"/dashboard/sites/{stack.site.id}", data={**form, "callbacks": "on"}) as saved:
            assert "Saved the settings" in await saved.text()
        assert (await widget_config())["callback"] is True
