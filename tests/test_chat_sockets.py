"""Chat over the signaling sockets, without browsers: storage, receipts, typing, limits, bad input."""

from __future__ import annotations

import asyncio
from pathlib import Path

from aiosmtpd.controller import Controller
from sqlalchemy import select

from callserver import accounts
from callserver.store.models import Chat, ChatMessage, Site
from tests.inbox import Inbox, mail_text
from tests.sockets import Softphone
from tests.stack import PASSWORD, Stack, free_port, running_stack, settings_for


async def test_messages_are_stored_before_the_ack_and_carry_delivery_and_read_state(stack: Stack) -> None:
    anna = await stack.sockets.operator("anna@shop.example", "Anna")
    shopper = await stack.sockets.shopper("visitor-sock-1")
    await anna.online()
    await shopper.send({"type": "chat.start", "context": {"page": "https://shop.example/p/1"}})
    assigned = await anna.receive("chat.assigned")
    chat_id = assigned["chat"]["id"]
    assert assigned["chat"]["page"] == "https://shop.example/p/1"

    await shopper.send({"type": "chat.typing", "text": "Hel"})
    assert (await anna.receive("chat.typing"))["text"] == "Hel"
    await shopper.send({"type": "chat.send", "text": "  Hello!  ", "client_id": "c1"})
    ack = await shopper.receive("chat.ack")
    assert ack["client_id"] == "c1" and ack["message"]["text"] == "Hello!"
    async with stack.database.session() as session:
        stored = await session.get(ChatMessage, ack["message"]["id"])
        assert stored is not None and stored.body == "Hello!" and stored.sender == "visitor"
    assert (await anna.receive("chat.message"))["message"]["id"] == ack["message"]["id"]
    delivered = await shopper.receive("chat.status")
    assert delivered == {
        "type": "chat.status",
        "chat_id": chat_id,
        "ids": [ack["message"]["id"]],
        "status": "delivered",
    }
    await anna.send({"type": "chat.read", "chat_id": chat_id, "up_to": ack["message"]["id"]})
    assert (await shopper.receive("chat.status"))["status"] == "read"

    await anna.send({"type": "chat.typing", "chat_id": chat_id})
    assert (await shopper.receive("chat.typing"))["active"] is True
    await anna.send({"type": "chat.send", "chat_id": chat_id, "text": "Hi, I'm Anna.", "client_id": "a1"})
    reply = (await anna.receive("chat.ack"))["message"]
    assert (await shopper.receive("chat.message"))["message"]["operator"] == {"name": "Anna"}
    assert (await anna.receive("chat.status"))["ids"] == [reply["id"]]

    # A new page of the shop: the same token gets the open chat's history on connect.
    next_page = await stack.sockets.shopper("visitor-sock-1")
    history = await next_page.receive("chat.history")
    assert [m["text"] for m in history["messages"]] == ["Hello!", "Hi, I'm Anna."]
    assert history["chat"]["operator"] == {"name": "Anna"}
    await next_page.close()

    await shopper.send({"type": "chat.close"})
    await anna.receive("chat.closed", lambda f: f["reason"] == "visitor")
    await shopper.close()
    await anna.close()
    async with stack.database.session() as session:
        chat = await session.get(Chat, chat_id)
        assert chat is not None and chat.state == "closed" and chat.closed_at is not None


async def test_a_message_over_4000_characters_is_refused_with_a_clear_error(stack: Stack) -> None:
    anna = await stack.sockets.operator("anna@shop.example")
    shopper = await stack.sockets.shopper("visitor-sock-2")
    await anna.online()
    await shopper.send({"type": "chat.send", "text": "too early"})
    assert (await shopper.receive("error"))["code"] == "no_chat"
    await shopper.send({"type": "chat.start"})
    chat_id = (await anna.receive("chat.assigned"))["chat"]["id"]
    await shopper.send({"type": "chat.send", "text": "y" * 4001, "client_id": "big"})
    refused = await shopper.receive("error")
    assert refused["code"] == "message_too_long" and refused["client_id"] == "big"
    assert "4000" in refused["message"]
    await anna.send({"type": "chat.send", "chat_id": chat_id, "text": "z" * 4001})
    assert (await anna.receive("error"))["code"] == "message_too_long"
    await shopper.send({"type": "chat.send", "text": "y" * 4000, "client_id": "fits"})
    assert (await shopper.receive("chat.ack"))["client_id"] == "fits"


async def test_a_flooding_visitor_is_rate_limited_and_others_are_not(stack: Stack) -> None:
    anna = await stack.sockets.operator("anna@shop.example")
    flooder = await stack.sockets.shopper("visitor-flood")
    calm = await stack.sockets.shopper("visitor-calm")
    await anna.online()
    await flooder.send({"type": "chat.start"})
    await calm.send({"type": "chat.start"})
    await flooder.receive("chat.history")
    await calm.receive("chat.history")
    for i in range(30):
        await flooder.send({"type": "chat.send", "text": f"spam {i}", "client_id": str(i)})
    await flooder.receive("error", lambda f: f["code"] == "rate_limited")
    await asyncio.sleep(0.3)
    acked = flooder.frames_of("chat.ack")
    assert 5 <= len(acked) <= 12

    await calm.send({"type": "chat.send", "text": "Just one question", "client_id": "q"})
    assert (await calm.receive("chat.ack"))["message"]["text"] == "Just one question"

    # A second socket with the flooder's token shares the token's bucket.
    same_visitor = await stack.sockets.shopper("visitor-flood")
    await same_visitor.send({"type": "chat.send", "text": "again", "client_id": "x"})
    assert (await same_visitor.receive("error"))["code"] == "rate_limited"
    await calm.close()
    await flooder.close()
    await anna.close()

    # Call attempts are limited per visitor as well: after five, the sixth is refused before it is tried.
    caller = await stack.sockets.shopper("visitor-caller")
    codes = []
    for _ in range(6):
        await caller.send({"type": "call.offer", "sdp": "v=0\r\nnot an offer"})
        codes.append((await caller.receive("error"))["code"])
    assert codes == ["bad_offer"] * 5 + ["rate_limited"]


async def test_the_operator_offers_a_call_and_the_accepted_call_rings_them_first(stack: Stack) -> None:
    anna = await stack.sockets.operator("anna@shop.example", "Anna")
    ben = await stack.sockets.operator("ben@shop.example", "Ben")
    shopper = await stack.sockets.shopper("visitor-sock-3")
    await ben.online()  # idle longest: longest-idle routing alone would ring Ben
    await anna.online()
    await shopper.send({"type": "chat.start"})
    chat = (await shopper.receive("chat.history"))["chat"]
    owner, other = (anna, ben) if chat["operator"]["name"] == "Anna" else (ben, anna)
    await owner.send({"type": "chat.offer_call", "chat_id": chat["id"]})
    offered = await shopper.receive("chat.call_offered")
    await shopper.send({"type": "call.offer", "sdp": await shopper.offer(), "chat_id": offered["chat_id"]})
    call_id = (await shopper.receive("call.answer"))["call_id"]
    await owner.receive("call.incoming", lambda f: f["call"]["id"] == call_id)
    await other.nothing("call.incoming", within=0.3)
    await shopper.send({"type": "call.hangup"})


async def test_canned_replies_are_shared_with_the_sites_operators(stack: Stack) -> None:
    anna = await stack.sockets.operator("anna@shop.example")
    ben = await stack.sockets.operator("ben@shop.example")
    assert anna.hello["canned"] == []
    await anna.send({"type": "canned.add", "title": "Delivery", "text": "We deliver within 5 days."})
    replies = (await ben.receive("canned"))["replies"]
    assert [(r["title"], r["text"]) for r in replies] == [("Delivery", "We deliver within 5 days.")]
    await ben.send({"type": "canned.remove", "id": replies[0]["id"]})
    assert (await anna.receive("canned", lambda f: f["replies"] == []))["replies"] == []


async def test_the_visitor_gets_the_transcript_by_mail(tmp_path: Path) -> None:
    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        async with running_stack(settings_for(tmp_path, smtp_host="127.0.0.1", smtp_port=port)) as stack:
            anna = await stack.sockets.operator("anna@shop.example", "Anna")
            shopper = await stack.sockets.shopper("visitor-mail")
            await anna.online()
            await shopper.send({"type": "chat.start"})
            chat_id = (await anna.receive("chat.assigned"))["chat"]["id"]
            await shopper.send({"type": "chat.send", "text": "Which wood is it?"})
            await anna.send({"type": "chat.send", "chat_id": chat_id, "text": "Solid oak."})
            await shopper.receive("chat.message")
            await shopper.send({"type": "chat.transcript", "email": "bad address"})
            assert (await shopper.receive("error"))["code"] == "bad_message"
            await shopper.send({"type": "chat.transcript", "email": "mia@example.com"})
            assert await shopper.receive("chat.transcript", lambda f: f["status"] == "sent")
            await shopper.close()
            await anna.close()
            async with stack.database.session() as session:
                assert (await session.scalar(select(Chat.id))) == chat_id
    finally:
        controller.stop()
    [mail] = inbox.messages
    assert mail["X-Envelope-To"] == "mia@example.com"
    body = mail_text(mail)
    assert "You: Which wood is it?" in body and "Anna: Solid oak." in body


async def site_softphone(stack: Stack, email: str, name: str, site_ids: list[int]) -> Softphone:
    """A softphone of an operator who works for the given sites only."""
    async with stack.database.session() as session:
        sites = list(await session.scalars(select(Site).where(Site.id.in_(site_ids))))
        await accounts.create_user(session, email, PASSWORD, "operator", sites=sites, name=name)
    return await stack.sockets.softphone(email)


def names(frame: dict[str, object]) -> list[str]:
    operators = frame["operators"]
    assert isinstance(operators, list)
    return [o["name"] for o in operators]


async def test_an_operator_sees_only_colleagues_who_share_a_site(stack: Stack) -> None:
    other = await stack.add_site("Other shop", ["https://other.example"])
    anna = await site_softphone(stack, "anna@shop.example", "Anna", [stack.site.id])
    carl = await site_softphone(stack, "carl@shop.example", "Carl", [stack.site.id])
    olga = await site_softphone(stack, "olga@other.example", "Olga", [other.id])
    boss = await stack.sockets.operator("boss@shop.example", "Boss")  # no sites: works for every site
    await olga.online()
    await carl.online()
    await anna.online()
    await boss.online()
    await anna.receive("operators", lambda f: names(f) == ["Boss", "Carl"])
    await carl.receive("operators", lambda f: names(f) == ["Anna", "Boss"])
    await olga.receive("operators", lambda f: names(f) == ["Boss"])
    await boss.receive("operators", lambda f: names(f) == ["Anna", "Carl", "Olga"])
    # A later page load of the softphone gets the same list at once.
    dana = await site_softphone(stack, "dana@other.example", "Dana", [other.id])
    assert names(dana.hello) == ["Boss", "Olga"]


async def test_open_widgets_learn_when_nobody_can_answer_and_a_presence_flap_sends_little(
    stack: Stack,
) -> None:
    anna = await stack.sockets.operator("anna@shop.example")
    shopper = await stack.sockets.shopper("visitor-status-1")
    assert shopper.hello["operators_online"] == 0
    await anna.online()
    status = await shopper.receive("site.status")
    assert status == {"type": "site.status", "open": True, "operators_online": 1}
    await anna.send({"type": "presence.set", "status": "offline"})
    assert (await shopper.receive("site.status"))["operators_online"] == 0
    await anna.online()
    assert (await shopper.receive("site.status"))["operators_online"] == 1

    # A flapping softphone: 20 changes, ending where it started.
    for _ in range(10):
        await anna.send({"type": "presence.set", "status": "offline"})
        await anna.send({"type": "presence.set", "status": "online"})
    for _ in range(20):
        await anna.receive("presence")
    await asyncio.sleep(0.6)
    flapped = shopper.frames_of("site.status")
    assert len(flapped) <= 4, flapped  # one frame per change would be 20
    if flapped:
        assert flapped[-1]["operators_online"] == 1
