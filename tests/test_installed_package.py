"""The package works as a user installs it: the wheel, in a fresh virtualenv, without the test extras.

The suite itself runs from an editable install with every test dependency, which hides a runtime import
that only a test extra brings (numpy once crashed `callserver demo` that way). This test builds the
wheel, installs it alone into a new virtualenv (pip resolves the declared dependencies for it, from its
cache when it has them), and starts `callserver demo` far enough to serve `/widget.js` and `/readyz`.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import venv
from pathlib import Path

import aiohttp
import pytest

from tests.stack import free_port

ROOT = Path(__file__).resolve().parent.parent


def run(*command: str | Path, cwd: Path = ROOT) -> None:
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{' '.join(map(str, command))} failed:\n{done.stdout}\n{done.stderr}"


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The `bin/` of a fresh virtualenv with only the built wheel (and its dependencies) installed."""
    folder = tmp_path_factory.mktemp("installed")
    run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", folder / "dist", ".")
    (wheel,) = (folder / "dist").glob("callserver-*.whl")
    # No pip of its own (ensurepip took ~10 s): this pip installs into the new interpreter and resolves
    # the dependencies for it, as the environment's own pip would; nothing is byte-compiled ahead (a
    # module compiles as it is first imported), which took most of the install's time.
    venv.create(folder / "venv", with_pip=False)
    bin_dir = folder / "venv" / "bin"
    run(
        sys.executable,
        "-m",
        "pip",
        "--python",
        bin_dir / "python",
        "install",
        "--quiet",
        "--no-compile",
        wheel,
    )
    return bin_dir


def test_the_wheel_declares_what_it_imports(installed: Path) -> None:
    # Every module of the package imports in the fresh environment (not only those the demo touches).
    script = (
        "import importlib, pkgutil, callserver\n"
        "for m in pkgutil.walk_packages(callserver.__path__, 'callserver.'):\n"
        "    if '.migrations' not in m.name and not m.name.endswith('__main__'):\n"
        "        importlib.import_module(m.name)\n"
        "import pytest\n"
    )
    done = subprocess.run([installed / "python", "-c", script], capture_output=True, text=True, cwd="/")
    # pytest is a test extra: its absence proves the environment really is a user's.
    assert "No module named 'pytest'" in done.stderr, done.stderr


async def test_the_installed_demo_serves_the_widget_and_is_ready(installed: Path, tmp_path: Path) -> None:
    port, shop_port = free_port(), free_port()
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CALLSERVER_")}
    environ["CALLSERVER_MEDIA_WORKERS"] = "1"
    demo = await asyncio.create_subprocess_exec(
        installed / "callserver", "demo", "--host", "127.0.0.1", "--port", str(port),
        "--shop-port", str(shop_port),
        cwd=tmp_path, env=environ, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    try:
        async with aiohttp.ClientSession() as session:
            deadline = time.monotonic() + 60
            while True:
                assert demo.returncode is None, (await demo.stdout.read()).decode()  # type: ignore[union-attr]
                try:
                    async with session.get(f"http://127.0.0.1:{port}/readyz") as response:
                        ready = (response.status, await response.json())
                        break
                except aiohttp.ClientConnectionError:
                    assert time.monotonic() < deadline, "the demo did not start within 60 s"
                    await asyncio.sleep(0.5)
            status, body = ready
            assert status == 200, body
            assert body["status"] == "ready" and body["checks"] == {"database": True}
            async with session.get(f"http://127.0.0.1:{port}/widget.js") as response:
                assert response.status == 200
                assert "javascript" in response.content_type
                assert "CallButton" in await response.text()
            async with session.get(f"http://127.0.0.1:{shop_port}/") as response:
                assert response.status == 200
                assert f"http://127.0.0.1:{port}/widget.js" in await response.text()
        saved = json.loads((tmp_path / "var" / "demo.json").read_text())
        assert saved["site_key"]
    finally:
        demo.terminate()
        await demo.wait()
