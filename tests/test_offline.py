"""Nobody online: the shopper leaves a message; it is stored, mailed through a real SMTP server, listed."""

from __future__ import annotations

import asyncio
import re
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from playwright.async_api import Playwright, expect
from sqlalchemy import select, update

from callserver import sites
from callserver.calls.records import VisitorContext
from callserver.chats.left_mail import LeftMail
from callserver.chats.records import ChatRecords, Left
from callserver.mail import Mail, MailError
from callserver.store.database import Database
from callserver.store.models import LeftMessage, Site
from tests.browsers import launch, sign_in
from tests.dashboard_support import add_owner, signed_in
from tests.inbox import NOTIFY, Inbox, mail_text
from tests.stack import PASSWORD, Stack, free_port, running_stack, settings_for


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
    await shop.get_by_test_id("cb-launcher").click()  # opens straight onto the form: nobody can answer

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
        shopper = await stack.sockets.shopper("visitor-offline-1")
        await shopper.send({"type": "message.leave", "message": "Hi!"})
        assert (await shopper.receive("error"))["code"] == "invalid"  # no way to answer
        await shopper.send({"type": "message.leave", "message": "x" * 4001, "phone": "+47 555 12 345"})
        assert (await shopper.receive("error"))["code"] == "message_too_long"
        await shopper.send(
            {
                "type": "message.leave",
                "message": "Call me, please.",
                "phone": "+47 555 12 345",
                "name": "Ola",
            }
        )
        left_id = (await shopper.receive("message.left"))["id"]
        await shopper.close()
        await wait_for(lambda: _mail_state(stack, "retrying"))  # the first try fails in the background
        [stored] = await left_messages(stack)
        assert stored.id == left_id and stored.mailed_at is None and stored.phone == "+47 555 12 345"
        assert stored.mail_attempts == 1 and stored.mail_error and stored.mail_next_at is not None
        anna = await stack.sockets.operator("anna@shop.example")
        [listed] = anna.hello["left_messages"]
        assert listed["text"] == "Call me, please." and listed["mailed"] is False
        assert listed["mail"]["state"] == "retrying" and listed["mail"]["attempts"] == 1
        # The owner's inbox shows it too: retrying, how often it was tried, and why it failed.
        await add_owner(stack, "owner@shop.example")
        async with (
            signed_in(stack, "owner@shop.example") as owner,
            owner.get("/dashboard/messages") as response,
        ):
            page = await response.text()
        cell = re.search(r'data-mail-state="([a-z]*)">(.*?)</td>', page, re.S)
        assert cell is not None and cell.group(1) == "retrying"
        assert "1 attempt" in cell.group(2) and "Connection refused" in cell.group(2)
        await anna.send({"type": "message.handled", "id": left_id})
        await anna.receive("message.handled")
        await anna.close()
        assert (await left_messages(stack))[0].status == "handled"


async def _notify(stack: Stack) -> None:
    async with stack.database.session() as session:
        await session.execute(update(Site).where(Site.id == stack.site.id).values(notify_email=NOTIFY))


async def _mail_state(stack: Stack, state: str) -> bool:
    return any(m.mail_state == state for m in await left_messages(stack))


async def _leave_a_message(stack: Stack, token: str, text: str) -> str:
    shopper = await stack.sockets.shopper(token)
    await shopper.send({"type": "message.leave", "message": text, "email": "mia@example.com"})
    left_id: str = (await shopper.receive("message.left"))["id"]
    return left_id


async def test_a_mail_that_failed_is_retried_and_sent_once_when_the_mail_server_is_back(
    tmp_path: Path,
) -> None:
    port = free_port()  # nothing listens there yet
    settings = settings_for(tmp_path, smtp_host="127.0.0.1", smtp_port=port, mail_retry_after=0.5)
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    try:
        async with running_stack(settings) as stack:
            async with stack.database.session() as session:
                await session.execute(
                    update(Site).where(Site.id == stack.site.id).values(notify_email=NOTIFY)
                )
            anna = await stack.sockets.operator("anna@shop.example")
            left_id = await _leave_a_message(stack, "visitor-retry-1", "Is the oak table in stock?")
            new = (await anna.receive("message.new"))["message"]
            assert new["id"] == left_id and new["mail"]["state"] == "pending"
            failed = await anna.receive("message.mail")
            assert failed["id"] == left_id and failed["mail"]["state"] == "retrying"
            assert failed["mail"]["attempts"] == 1 and str(port) in failed["mail"]["error"]
            [stored] = await left_messages(stack)
            assert (stored.mail_state, stored.mailed_at) == ("retrying", None)

            controller.start()  # the mail server is back
            sent = await anna.receive("message.mail", lambda f: f["mail"]["state"] == "sent", within=15)
            assert sent["mail"]["error"] is None and sent["mail"]["attempts"] >= 2
            [mail] = inbox.messages
            assert mail["X-Envelope-To"] == NOTIFY and "Is the oak table in stock?" in mail_text(mail)
            # Later gaps pass (0.5 s, 2.5 s): nothing is sent again.
            await anna.nothing("message.mail", within=3.5)
            await anna.close()
            assert len(inbox.messages) == 1
            [stored] = await left_messages(stack)
            assert stored.mail_state == "sent" and stored.mailed_at is not None and stored.mail_error is None
    finally:
        controller.stop()


async def test_mail_still_due_when_the_server_stopped_goes_out_after_a_restart(tmp_path: Path) -> None:
    port = free_port()
    settings = settings_for(tmp_path, smtp_host="127.0.0.1", smtp_port=port, mail_retry_after=0.2)
    async with running_stack(settings) as stack:
        async with stack.database.session() as session:
            await session.execute(update(Site).where(Site.id == stack.site.id).values(notify_email=NOTIFY))
        await _leave_a_message(stack, "visitor-restart-1", "Do you ship to Tromsø?")
        await wait_for(lambda: _mail_state(stack, "retrying"))
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        async with running_stack(settings) as stack:  # the same database: a new run of the server
            await wait_for(lambda: _mail_state(stack, "sent"))
            [stored] = await left_messages(stack)
            assert stored.mailed_at is not None and stored.mail_attempts >= 2
        [mail] = inbox.messages
        assert "Do you ship to Tromsø?" in mail_text(mail)
    finally:
        controller.stop()


class DownOutbox:
    """An SMTP server that is always down (the retry schedule is what this test is about)."""

    configured = True

    def __init__(self) -> None:
        self.tries = 0

    async def send(self, mail: Mail) -> None:
        self.tries += 1
        raise MailError(f"Mail to {mail.to} failed: connection refused")


async def test_a_mail_that_keeps_failing_is_retried_with_growing_gaps_for_a_day_then_given_up(
    tmp_path: Path,
) -> None:
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'mail.db'}")
    await database.upgrade()
    try:
        async with database.session() as session:
            site = await sites.create_site(session, "Shop", ["https://shop.example"], notify_email=NOTIFY)
        records = ChatRecords(database)
        left = await records.leave_message(
            site.id,
            site.name,
            VisitorContext(token="visitor-gaps"),
            None,
            "a@b.example",
            None,
            "Hi",
            None,
            True,
        )
        assert left.mail is not None and left.mail.next_at is not None  # due at once
        clock = [left.mail.next_at]
        outbox = DownOutbox()
        changes: list[Left] = []

        async def changed(message: Left) -> None:
            changes.append(message)

        mailer = LeftMail(records, outbox, changed, retry_after=60.0, clock=lambda: clock[0])
        gaps = []
        while (state := changes[-1].mail if changes else left.mail) and state.state != "failed":
            assert state.next_at is not None
            gaps.append(round((state.next_at - clock[0]).total_seconds()))
            clock[0] = state.next_at - timedelta(seconds=1)
            await mailer.send_due()  # a second early: not due yet
            assert outbox.tries == len(gaps) - 1
            clock[0] = state.next_at
            await mailer.send_due()
            assert outbox.tries == len(gaps)
        await mailer.close()
        minutes = [g / 60 for g in gaps[1:]]
        assert gaps[0] == 0 and minutes == [1, 5, 30, 120, 240, 480, 480]
        assert 20 * 3600 < sum(gaps) < 26 * 3600  # about a day of trying
        final = changes[-1].mail
        assert final is not None and final.attempts == 8 and "connection refused" in (final.error or "")
        assert (await records.mail_due(clock[0] + timedelta(days=30))) == []  # given up: never again
    finally:
        await database.close()
