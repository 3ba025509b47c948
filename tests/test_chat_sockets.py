"""Chat over the signaling sockets, without browsers: storage, receipts, typing, limits, bad input."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
from aiosmtpd.controller import Controller
from sqlalchemy import select

from callserver import accounts
from callserver.store.models import Chat, ChatMessage, Site
from tests.chat_clients import Inbox, Softphone, mail_text, peers, softphone, widget
from tests.stack import PASSWORD, Stack, free_port, running_stack, settings_for, sign_in_form


async def test_messages_are_stored_before_the_ack_and_carry_delivery_and_read_state(stack: Stack) -> None:
    async with (
        softphone(stack, "anna@shop.example", "Anna") as anna,
        widget(stack, "visitor-sock-1") as shopper,
    ):
        await anna.online()
        await shopper.send({"type": "chat.start", "context": {"page": "https://shop.example/p/1"}})
        assigned = await anna.next("chat.assigned")
        chat_id = assigned["chat"]["id"]
        assert assigned["chat"]["page"] == "https://shop.example/p/1"

        await shopper.send({"type": "chat.typing", "text": "Hel"})
        assert (await anna.next("chat.typing"))["text"] == "Hel"
        await shopper.send({"type": "chat.send", "text": "  Hello!  ", "client_id": "c1"})
        ack = await shopper.next("chat.ack")
        assert ack["client_id"] == "c1" and ack["message"]["text"] == "Hello!"
        async with stack.database.session() as session:
            stored = await session.get(ChatMessage, ack["message"]["id"])
            assert stored is not None and stored.body == "Hello!" and stored.sender == "visitor"
        assert (await anna.next("chat.message"))["message"]["id"] == ack["message"]["id"]
        delivered = await shopper.next("chat.status")
        assert delivered == {
            "type": "chat.status",
            "chat_id": chat_id,
            "ids": [ack["message"]["id"]],
            "status": "delivered",
        }
        await anna.send({"type": "chat.read", "chat_id": chat_id, "up_to": ack["message"]["id"]})
        assert (await shopper.next("chat.status"))["status"] == "read"

        await anna.send({"type": "chat.typing", "chat_id": chat_id})
        assert (await shopper.next("chat.typing"))["active"] is True
        await anna.send({"type": "chat.send", "chat_id": chat_id, "text": "Hi, I'm Anna.", "client_id": "a1"})
        reply = (await anna.next("chat.ack"))["message"]
        assert (await shopper.next("chat.message"))["message"]["operator"] == {"name": "Anna"}
        assert (await anna.next("chat.status"))["ids"] == [reply["id"]]

        # A new page of the shop: the same token gets the open chat's history on connect.
        async with widget(stack, "visitor-sock-1") as next_page:
            history = await next_page.next("chat.history")
            assert [m["text"] for m in history["messages"]] == ["Hello!", "Hi, I'm Anna."]
            assert history["chat"]["operator"] == {"name": "Anna"}

        await shopper.send({"type": "chat.close"})
        await anna.next("chat.closed", lambda f: f["reason"] == "visitor")
    async with stack.database.session() as session:
        chat = await session.get(Chat, chat_id)
        assert chat is not None and chat.state == "closed" and chat.closed_at is not None


async def test_a_message_over_4000_characters_is_refused_with_a_clear_error(stack: Stack) -> None:
    async with softphone(stack, "anna@shop.example") as anna, widget(stack, "visitor-sock-2") as shopper:
        await anna.online()
        await shopper.send({"type": "chat.send", "text": "too early"})
        assert (await shopper.next("error"))["code"] == "no_chat"
        await shopper.send({"type": "chat.start"})
        chat_id = (await anna.next("chat.assigned"))["chat"]["id"]
        await shopper.send({"type": "chat.send", "text": "y" * 4001, "client_id": "big"})
        refused = await shopper.next("error")
        assert refused["code"] == "message_too_long" and refused["client_id"] == "big"
        assert "4000" in refused["message"]
        await anna.send({"type": "chat.send", "chat_id": chat_id, "text": "z" * 4001})
        assert (await anna.next("error"))["code"] == "message_too_long"
        await shopper.send({"type": "chat.send", "text": "y" * 4000, "client_id": "fits"})
        assert (await shopper.next("chat.ack"))["client_id"] == "fits"


async def test_a_flooding_visitor_is_rate_limited_and_others_are_not(stack: Stack) -> None:
    async with (
        softphone(stack, "anna@shop.example") as anna,
        widget(stack, "visitor-flood") as flooder,
        widget(stack, "visitor-calm") as calm,
    ):
        await anna.online()
        await flooder.send({"type": "chat.start"})
        await calm.send({"type": "chat.start"})
        await flooder.next("chat.history")
        await calm.next("chat.history")
        for i in range(30):
            await flooder.send({"type": "chat.send", "text": f"spam {i}", "client_id": str(i)})
        await flooder.next("error", lambda f: f["code"] == "rate_limited")
        await asyncio.sleep(0.3)
        acked = [f for f in flooder.inbox if f["type"] == "chat.ack"]
        assert 5 <= len(acked) <= 12

        await calm.send({"type": "chat.send", "text": "Just one question", "client_id": "q"})
        assert (await calm.next("chat.ack"))["message"]["text"] == "Just one question"

        # A second socket with the flooder's token shares the token's bucket.
        async with widget(stack, "visitor-flood") as same_visitor:
            await same_visitor.send({"type": "chat.send", "text": "again", "client_id": "x"})
            assert (await same_visitor.next("error"))["code"] == "rate_limited"

    # Call attempts are limited per visitor as well: after five, the sixth is refused before it is tried.
    async with widget(stack, "visitor-caller") as caller:
        codes = []
        for _ in range(6):
            await caller.send({"type": "call.offer", "sdp": "v=0\r\nnot an offer"})
            codes.append((await caller.next("error"))["code"])
        assert codes == ["bad_offer"] * 5 + ["rate_limited"]


async def test_the_operator_offers_a_call_and_the_accepted_call_rings_them_first(stack: Stack) -> None:
    async with (
        softphone(stack, "anna@shop.example", "Anna") as anna,
        softphone(stack, "ben@shop.example", "Ben") as ben,
        widget(stack, "visitor-sock-3") as shopper,
        peers() as peer,
    ):
        await ben.online()  # idle longest: longest-idle routing alone would ring Ben
        await anna.online()
        await shopper.send({"type": "chat.start"})
        chat = (await shopper.next("chat.history"))["chat"]
        owner, other = (anna, ben) if chat["operator"]["name"] == "Anna" else (ben, anna)
        await owner.send({"type": "chat.offer_call", "chat_id": chat["id"]})
        offered = await shopper.next("chat.call_offered")
        await shopper.send({"type": "call.offer", "sdp": await peer().offer(), "chat_id": offered["chat_id"]})
        call_id = (await shopper.next("call.answer"))["call_id"]
        await owner.next("call.incoming", lambda f: f["call"]["id"] == call_id)
        await other.nothing("call.incoming", within=0.3)
        await shopper.send({"type": "call.hangup"})


async def test_canned_replies_are_shared_with_the_sites_operators(stack: Stack) -> None:
    async with softphone(stack, "anna@shop.example") as anna, softphone(stack, "ben@shop.example") as ben:
        assert anna.hello["canned"] == []
        await anna.send({"type": "canned.add", "title": "Delivery", "text": "We deliver within 5 days."})
        replies = (await ben.next("canned"))["replies"]
        assert [(r["title"], r["text"]) for r in replies] == [("Delivery", "We deliver within 5 days.")]
        await ben.send({"type": "canned.remove", "id": replies[0]["id"]})
        assert (await anna.next("canned", lambda f: f["replies"] == []))["replies"] == []


async def test_the_visitor_gets_the_transcript_by_mail(tmp_path: Path) -> None:
    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        async with running_stack(settings_for(tmp_path, smtp_host="127.0.0.1", smtp_port=port)) as stack:
            async with (
                softphone(stack, "anna@shop.example", "Anna") as anna,
                widget(stack, "visitor-mail") as shopper,
            ):
                await anna.online()
                await shopper.send({"type": "chat.start"})
                chat_id = (await anna.next("chat.assigned"))["chat"]["id"]
                await shopper.send({"type": "chat.send", "text": "Which wood is it?"})
                await anna.send({"type": "chat.send", "chat_id": chat_id, "text": "Solid oak."})
                await shopper.next("chat.message")
                await shopper.send({"type": "chat.transcript", "email": "bad address"})
                assert (await shopper.next("error"))["code"] == "bad_message"
                await shopper.send({"type": "chat.transcript", "email": "mia@example.com"})
                assert await shopper.next("chat.transcript", lambda f: f["status"] == "sent")
            async with stack.database.session() as session:
                assert (await session.scalar(select(Chat.id))) == chat_id
    finally:
        controller.stop()
    [mail] = inbox.messages
    assert mail["X-Envelope-To"] == "mia@example.com"
    body = mail_text(mail)
    assert "You: Which wood is it?" in body and "Anna: Solid oak." in body


@asynccontextmanager
async def site_softphone(
    stack: Stack, email: str, name: str, site_ids: list[int]
) -> AsyncIterator[Softphone]:
    """A softphone of an operator who works for the given sites only."""
    async with stack.database.session() as session:
        sites = list(await session.scalars(select(Site).where(Site.id.in_(site_ids))))
        account = await accounts.create_user(session, email, PASSWORD, "operator", sites=sites, name=name)
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        form = await sign_in_form(session, stack.url, "operator", email)
        async with session.post(f"{stack.url}/operator/login", data=form, allow_redirects=False) as response:
            assert response.status == 302, await response.text()
        phone = Softphone(await session.ws_connect(f"{stack.url}/ws/operator"))
        phone.account_id = account.id
        try:
            phone.hello = await phone.next("hello")
            yield phone
        finally:
            await phone.close()


def names(frame: dict[str, object]) -> list[str]:
    operators = frame["operators"]
    assert isinstance(operators, list)
    return [o["name"] for o in operators]


async def test_an_operator_sees_only_colleagues_who_share_a_site(stack: Stack) -> None:
    other = await stack.add_site("Other shop", ["https://other.example"])
    async with (
        site_softphone(stack, "anna@shop.example", "Anna", [stack.site.id]) as anna,
        site_softphone(stack, "carl@shop.example", "Carl", [stack.site.id]) as carl,
        site_softphone(stack, "olga@other.example", "Olga", [other.id]) as olga,
        softphone(stack, "boss@shop.example", "Boss") as boss,  # no sites: works for every site
    ):
        await olga.online()
        await carl.online()
        await anna.online()
        await boss.online()
        await anna.next("operators", lambda f: names(f) == ["Boss", "Carl"])
        await carl.next("operators", lambda f: names(f) == ["Anna", "Boss"])
        await olga.next("operators", lambda f: names(f) == ["Boss"])
        await boss.next("operators", lambda f: names(f) == ["Anna", "Carl", "Olga"])
        # A later page load of the softphone gets the same list at once.
        async with site_softphone(stack, "dana@other.example", "Dana", [other.id]) as dana:
            assert names(dana.hello) == ["Boss", "Olga"]


async def test_open_widgets_learn_when_nobody_can_answer_and_a_presence_flap_sends_little(
    stack: Stack,
) -> None:
    async with softphone(stack, "anna@shop.example") as anna, widget(stack, "visitor-status-1") as shopper:
        assert shopper.hello["operators_online"] == 0
        await anna.online()
        status = await shopper.next("site.status")
        assert status == {"type": "site.status", "open": True, "operators_online": 1}
        await anna.send({"type": "presence.set", "status": "offline"})
        assert (await shopper.next("site.status"))["operators_online"] == 0
        await anna.online()
        assert (await shopper.next("site.status"))["operators_online"] == 1

        # A flapping softphone: 20 changes, ending where it started.
        for _ in range(10):
            await anna.send({"type": "presence.set", "status": "offline"})
            await anna.send({"type": "presence.set", "status": "online"})
        for _ in range(20):
            await anna.next("presence")
        await asyncio.sleep(0.6)
        flapped = [f for f in shopper.inbox if f["type"] == "site.status"]
        assert len(flapped) <= 4, flapped  # one frame per change would be 20
        if flapped:
            assert flapped[-1]["operators_online"] == 1
