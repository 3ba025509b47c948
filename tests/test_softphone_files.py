"""The softphone's ES modules: the page loads main.js, which reaches every module (no cycle), and each
is served as it is, as JavaScript (a browser runs a module script of no other type)."""

from __future__ import annotations

import re
from pathlib import Path

import aiohttp

from tests.stack import Stack

FOLDER = Path(__file__).resolve().parents[1] / "operator_softphone"
MODULES = sorted(path.name for path in FOLDER.glob("*.js"))
IMPORT = re.compile(r"^import \{[^}]*\} from '\./([\w-]+\.js)';$", re.M)


def imports_of(name: str) -> list[str]:
    return IMPORT.findall((FOLDER / name).read_text(encoding="utf-8"))


def test_the_page_loads_main_and_main_reaches_every_module_without_a_cycle() -> None:
    scripts = re.findall(r"<script\b[^>]*>", (FOLDER / "index.html").read_text(encoding="utf-8"))
    assert scripts == ['<script type="module" src="/operator/static/main.js">']
    reached: list[str] = []

    def visit(name: str, path: tuple[str, ...]) -> None:
        assert name not in path, f"import cycle: {' → '.join((*path, name))}"
        assert (FOLDER / name).is_file(), f"{path[-1]} imports {name}, which is not there"
        if name not in reached:
            reached.append(name)
        for imported in imports_of(name):
            visit(imported, (*path, name))

    visit("main.js", ())
    assert sorted(reached) == MODULES, "modules main.js never loads"
    # The shared vocabulary: one el(), one t(), defined once and imported by the rest.
    for helper, home in (("el", "dom.js"), ("t", "i18n.js")):
        defined = [m for m in MODULES if re.search(rf"function {helper}\(", (FOLDER / m).read_text())]
        assert defined == [home], (helper, defined)


async def test_each_module_is_served_as_javascript(stack: Stack) -> None:
    async with aiohttp.ClientSession(stack.url) as client:
        for name in [*MODULES, "softphone.css"]:
            async with client.get(f"/operator/static/{name}") as response:
                assert response.status == 200, name
                wanted = "text/css" if name.endswith(".css") else "text/javascript"
                assert (response.content_type, response.charset) == (wanted, "utf-8"), name
                assert await response.read() == (FOLDER / name).read_bytes(), name
                etag = response.headers.get("ETag")
                assert etag and "Cache-Control" not in response.headers, name
            async with client.get(f"/operator/static/{name}", headers={"If-None-Match": etag}) as again:
                assert again.status == 304, name
        async with client.get("/operator/static/nothing.js") as response:
            assert response.status == 404
