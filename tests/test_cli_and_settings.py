"""The `callserver` command and configuration, as an administrator uses them."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from pathlib import Path

import aiohttp
import pytest

from callserver.settings import ConfigError, load_settings
from tests.stack import free_port, sign_in_form


def test_settings_come_from_toml_then_environment(tmp_path: Path) -> None:
    config = tmp_path / "callserver.toml"
    config.write_text(
        'port = 9000\nring_timeout = 12.5\nice_servers = [{urls = ["stun:stun.shop.example:3478"]}]\n'
    )
    settings = load_settings(config, environ={"CALLSERVER_PORT": "9100", "CALLSERVER_SECURE_COOKIES": "true"})
    assert (settings.port, settings.ring_timeout, settings.secure_cookies) == (9100, 12.5, True)
    assert settings.ice_servers[0].urls == ["stun:stun.shop.example:3478"]
    assert settings.effective_database_url.startswith("sqlite+aiosqlite:///")
    env_ice = '[{"urls": ["turn:turn.shop.example"], "username": "u", "credential": "p"}]'
    assert load_settings(environ={"CALLSERVER_ICE_SERVERS": env_ice}).ice_servers[0].username == "u"


@pytest.mark.parametrize(
    ("toml", "environ", "problem"),
    [
        ("port = [", {}, "not valid TOML"),
        ("colour = 'blue'", {}, "colour"),
        ("", {"CALLSERVER_RING_TIMEOUT": "-1"}, "ring_timeout"),
        ("", {"CALLSERVER_ICE_SERVERS": "[{"}, "not valid JSON"),
    ],
)
def test_bad_configuration_is_explained(
    tmp_path: Path, toml: str, environ: dict[str, str], problem: str
) -> None:
    config = tmp_path / "callserver.toml"
    config.write_text(toml)
    with pytest.raises(ConfigError, match=problem):
        load_settings(config, environ=environ)


async def test_demo_serves_a_shop_on_a_second_origin_that_embeds_the_widget(tmp_path: Path) -> None:
    port, shop_port = free_port(), free_port()
    demo = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "callserver", "demo", "--port", str(port), "--shop-port", str(shop_port),
        env={**os.environ, "CALLSERVER_VAR_DIR": str(tmp_path / "var")},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        assert demo.stdout is not None
        printed = ""
        while "Owner sign-in" not in printed:
            printed += (await asyncio.wait_for(demo.stdout.readline(), 30)).decode()
        assert f"http://127.0.0.1:{shop_port}/" in printed and f"http://127.0.0.1:{port}/operator/" in printed
        operator = re.search(r"Operator sign-in: (\S+) / (\S+)", printed)
        assert operator is not None
        saved = json.loads((tmp_path / "var" / "demo.json").read_text())
        assert saved["operator"] == {"email": operator[1], "password": operator[2]}
        # unsafe: keep cookies for an IP address host, as a browser does.
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
            async with session.get(f"http://127.0.0.1:{shop_port}/products/oak-table") as response:
                page = await response.text()
            embed = f'<script src="http://127.0.0.1:{port}/widget.js" data-site="{saved["site_key"]}" async>'
            assert embed in page
            config_url = f"http://127.0.0.1:{port}/widget/config?site={saved['site_key']}"
            async with session.get(
                config_url, headers={"Origin": f"http://127.0.0.1:{shop_port}"}
            ) as response:
                assert response.status == 200
            login = await sign_in_form(
                session, f"http://127.0.0.1:{port}", "operator", operator[1], operator[2]
            )
            async with session.post(f"http://127.0.0.1:{port}/operator/login", data=login) as response:
                assert response.status == 200 and response.url.path == "/operator/"
    finally:
        demo.terminate()
        await demo.wait()


async def test_guessing_passwords_is_slowed_down(tmp_path: Path) -> None:
    from tests.stack import running_stack, settings_for

    async with running_stack(settings_for(tmp_path)) as stack:
        await stack.add_user("op@shop.example")
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
            login = f"{stack.url}/operator/login"
            right = await sign_in_form(session, stack.url, "operator", "op@shop.example")
            wrong = {**right, "password": "guess"}
            for _ in range(10):
                async with session.post(login, data=wrong, allow_redirects=False) as response:
                    assert response.status == 401
            async with session.post(login, data=right, allow_redirects=False) as response:
                assert response.status == 429
                assert "Too many sign-in attempts" in await response.text()
