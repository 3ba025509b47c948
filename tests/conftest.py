from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from playwright.async_api import Playwright, async_playwright
from sqlalchemy import update

from callserver.store.models import Site
from callserver.web.keys import SITES
from tests.browsers import tone_file
from tests.inbox import MAIL_FROM, NOTIFY, Inbox
from tests.stack import Stack, free_port, running_stack, settings_for


@pytest.fixture(scope="session")
def tones(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("tones")
    return {
        "shopper": tone_file(folder / "shopper-440.wav", 440),
        "operator": tone_file(folder / "operator-1000.wav", 1000),
    }


@pytest.fixture
def smtp() -> Iterator[tuple[Inbox, int]]:
    """An aiosmtpd server on loopback and the mail it received."""
    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    async with running_stack(settings_for(tmp_path, ring_timeout=30)) as running:
        yield running


@pytest.fixture
def mailing_settings() -> dict[str, Any]:
    """What else `mailing_stack` is set up with; a module overrides this fixture to change it."""
    return {}


@pytest.fixture
async def mailing_stack(
    tmp_path: Path, smtp: tuple[Inbox, int], mailing_settings: dict[str, Any]
) -> AsyncIterator[Stack]:
    """A stack that sends its mail to the `smtp` inbox, its site telling NOTIFY (tests/inbox.py)."""
    settings = settings_for(
        tmp_path, smtp_host="127.0.0.1", smtp_port=smtp[1], mail_from=MAIL_FROM, **mailing_settings
    )
    async with running_stack(settings) as running:
        async with running.database.session() as session:
            await session.execute(update(Site).where(Site.id == running.site.id).values(notify_email=NOTIFY))
        running.app[SITES].forget()  # the site as cached before the address was set
        yield running


@pytest.fixture
async def playwright() -> AsyncIterator[Playwright]:
    async with async_playwright() as p:
        yield p
