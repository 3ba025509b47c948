"""Nobody online: the shopper leaves a message; it is stored, mailed through a real SMTP server, listed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from playwright.async_api import Playwright, expect
from sqlalchemy import select, update

from callserver.store.models import LeftMessage, Site
from tests.browsers import launch, sign_in
from tests.chat_clients import Inbox, mail_text, softphone, widget
from tests.stack import PASSWORD, Stack, free_port, running_stack, settings_for

NOTIFY = "orders@northwood.example"


@pytest.fixture
def smtp() -> Iterator[tuple[Inbox, int]]:
    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


@pytest.fixture
async def mailing_stack(tmp_path: Path, smtp: tuple[Inbox, int]) -> AsyncIterator[Stack]:
    settings = settings_for(
        tmp_path, smtp_host="127.0.0.1", smtp_port=smtp[1], mail_from="calls@northwood.example"
    )
    async with running_stack(settings) as stack:
        async with stack.database.session() as session:
            await session.execute(update(Site).where(Site.id == stack.site.id).values(notify_email=NOTIFY))
        yield stack


async def left_messages(stack: Stack) -> list[LeftMessage]:
    async with stack.database.session() as session:
        return list(await session.scalars(select(LeftMessage)))


async def wait_for(predicate: Any, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not await predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.1)


async def test_nobody_online_the_shopper_leaves_a_message_that_is_mailed_and_listed(
    mailing_stack: Stack, smtp: tuple[Inbox, int], playwright: Playwright
) -> None:
    stack, (inbox, _) = mailing_stack, smtp
    await stack.add_user("anna@shop.example", name="Anna")  # exists, but is not online
    shopper_browser = await launch(playwright, None)
    browser = shopper_browser.browser
    assert browser is not None
    shop = await shopper_browser.new_page()
    await shop.goto(f"{stack.shop_url}/products/oak-table")
    await shop.get_by_test_id("cb-launcher").click()
    await shop.get_by_test_id("cb-call").click()

    form = shop.get_by_test_id("cb-offline-form")
    await expect(form).to_be_visible(timeout=10_000)
    await expect(shop.get_by_test_id("cb-status")).to_contain_text("Nobody is available")
    name = 'Mia <img src=x onerror="document.title=1">'
    text = "Please call me back about the <b>oak</b> table, delivery to Bergen."
    await form.locator("input[name=name]").fill(name)
    await form.locator("input[name=email]").fill("mia@example.com")
    await form.locator("textarea[name=message]").fill(text)
    await shop.get_by_test_id("cb-offline-send").click()
    await expect(shop.get_by_test_id("cb-status")).to_contain_text("Thank you")

    # Mailed to the site's notification address through the real SMTP server, in the background.
    await wait_for(lambda: asyncio.sleep(0, result=bool(inbox.messages)))
    mail = inbox.messages[0]
    assert mail["X-Envelope-To"] == NOTIFY and mail["Reply-To"] == "mia@example.com"
    body = mail_text(mail)
    assert text in body and "/products/oak-table" in body
    await wait_for(lambda: _mailed(stack))
    [stored] = await left_messages(stack)
    assert (stored.name, stored.email, stored.body) == (name, "mia@example.com", text)

    # Operators find it in the softphone, shown as text.
    operator_context = await browser.new_context()
    operator = await operator_context.new_page()
    await sign_in(operator, stack.url, "operator", "anna@shop.example", PASSWORD)
    listed = operator.get_by_test_id("op-messages")
    await expect(listed).to_contain_text(text)
    await expect(listed).to_contain_text(name)
    await expect(listed.locator("img, b")).to_have_count(0)
    assert await operator.title() != "1"
    await browser.close()


async def _mailed(stack: Stack) -> bool:
    return any(m.mailed_at is not None for m in await left_messages(stack))


async def test_a_message_is_kept_and_listed_when_the_mail_server_is_down(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, smtp_host="127.0.0.1", smtp_port=free_port())  # nothing listens
    async with running_stack(settings) as stack:
        async with stack.database.session() as session:
            await session.execute(update(Site).where(Site.id == stack.site.id).values(notify_email=NOTIFY))
        async with widget(stack, "visitor-offline-1") as shopper:
            await shopper.send({"type": "message.leave", "message": "Hi!"})
            assert (await shopper.next("error"))["code"] == "invalid"  # no way to answer
            await shopper.send({"type": "message.leave", "message": "x" * 4001, "phone": "+47 555 12 345"})
            assert (await shopper.next("error"))["code"] == "message_too_long"
            await shopper.send(
                {
                    "type": "message.leave",
                    "message": "Call me, please.",
                    "phone": "+47 555 12 345",
                    "name": "Ola",
                }
            )
            left_id = (await shopper.next("message.left"))["id"]
        await asyncio.sleep(0.5)  # the mail attempt fails in the background
        [stored] = await left_messages(stack)
        assert stored.id == left_id and stored.mailed_at is None and stored.phone == "+47 555 12 345"
        async with softphone(stack, "anna@shop.example") as anna:
            [listed] = anna.hello["left_messages"]
            assert listed["text"] == "Call me, please." and listed["mailed"] is False
            await anna.send({"type": "message.handled", "id": left_id})
            await anna.next("message.handled")
        assert (await left_messages(stack))[0].status == "handled"
