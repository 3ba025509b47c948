"""Test accounts: the password they all share and the sign-in form as a browser posts it."""

from __future__ import annotations

import re

import aiohttp

PASSWORD = "correct horse battery"
_SIGN_IN_TOKEN = re.compile(r'name="csrf" value="([0-9a-f]+)"')


async def sign_in_form(
    client: aiohttp.ClientSession, base_url: str, area: str, email: str, password: str = PASSWORD
) -> dict[str, str]:
    """The sign-in form of `area` as a browser posts it: fetched first, for its CSRF cookie and token.

    `base_url` may be "" for a client made with a base URL.
    """
    async with client.get(f"{base_url}/{area}/login") as response:
        assert response.status == 200, await response.text()
        match = _SIGN_IN_TOKEN.search(await response.text())
    assert match, "no CSRF token in the sign-in form"
    return {"email": email, "password": password, "csrf": match.group(1)}
