"""On a Shopify storefront the widget puts the visitor token into the cart, so orders carry it."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from playwright.async_api import Playwright

from tests.browsers import launch
from tests.stack import Stack, free_port


async def test_the_visitor_token_goes_into_the_shopify_cart_attributes(
    stack: Stack, playwright: Playwright
) -> None:
    carts: list[dict[str, Any]] = []

    async def page(request: web.Request) -> web.Response:
        # What a Shopify theme page has: the global `Shopify` object, then the shop's embed snippet.
        html = (
            "<!doctype html><html lang='en'><head><script>window.Shopify = {shop: 'demo.myshopify.com'};"
            f"</script></head><body><h1>Shop</h1><script src='{stack.url}/widget.js' "
            f"data-site='{stack.site.key}' async></script></body></html>"
        )
        return web.Response(text=html, content_type="text/html")

    async def cart_update(request: web.Request) -> web.Response:  # Shopify's Ajax Cart API
        carts.append(await request.json())
        return web.json_response({"token": "cart-1", "attributes": carts[-1]["attributes"]})

    storefront = web.Application()
    storefront.router.add_get("/", page)
    storefront.router.add_post("/cart/update.js", cart_update)
    runner = web.AppRunner(storefront)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        browser = await launch(playwright, None)
        shop = await browser.new_page()
        await shop.goto(f"http://127.0.0.1:{port}/")
        await shop.wait_for_function("window.CallButton && window.CallButton.visitorToken")
        token = await shop.evaluate("CallButton.visitorToken()")
        await shop.wait_for_function("sessionStorage.getItem('callbutton.cart') === '1'")
        assert carts == [{"attributes": {"callbutton_visitor": token}}]
        await shop.reload()  # once per tab: the next page does not post it again
        await shop.wait_for_function("window.CallButton && window.CallButton.visitorToken")
        assert len(carts) == 1
        await browser.browser.close()
    finally:
        await runner.cleanup()
