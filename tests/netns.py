"""A network namespace of the test's own, joined to this host by a veth pair, and Chromium inside it.

A shopper's browser in its own namespace loses its network the way a phone does: the link goes down
(`link_down`), or the browser comes back on a new address (`move`). The addresses are the test's own
(10.203.X.0/24, X from the process id, so that parallel runs do not clash); nothing leaves this machine.
Playwright talks to the browser over a pipe, so a wrapper script that runs Chromium under
`ip netns exec` is all it takes to launch a browser in the namespace.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from playwright.async_api import BrowserContext, Playwright

from tests.browsers import CHROMIUM_FLAGS, LISTEN, chromium_path

__all__ = ["Namespace", "launch_inside", "namespace", "unavailable"]


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise subprocess.CalledProcessError(done.returncode, done.args, done.stdout, done.stderr.strip())


def unavailable() -> str | None:
    """Why this machine cannot make network namespaces (not root, `ip netns add` refused), or None."""
    if shutil.which("ip") is None:
        return "the `ip` command (iproute2) is not installed"
    if os.geteuid() != 0:
        return "network namespaces need root"
    probe = f"cstprobe{os.getpid()}"
    try:
        _ip("netns", "add", probe)
    except subprocess.CalledProcessError as e:
        return f"`ip netns add` is refused here: {e.stderr}"
    _ip("netns", "del", probe)
    return None


@dataclass
class Namespace:
    """A namespace `name` whose veth end `inside` has `address`; the host's end `outside` has `host`."""

    name: str
    outside: str
    inside: str
    host: str
    address: str
    prefix: str  # "10.203.X"
    wrapper: Path  # runs Chromium in the namespace

    def exec(self, *args: str) -> None:
        _ip("netns", "exec", self.name, *args)

    def link_down(self) -> None:
        """The link goes away under the browser (as Wi-Fi does out of range): the host's end goes down."""
        _ip("link", "set", self.outside, "down")

    def link_up(self) -> None:
        _ip("link", "set", self.outside, "up")

    def move(self, host_byte: int) -> str:
        """The browser's network changes: its old address goes, `PREFIX.host_byte` comes, with its route."""
        new = f"{self.prefix}.{host_byte}"
        # Old first: deleting a primary address takes its secondaries and the default route with it.
        self.exec("ip", "addr", "del", f"{self.address}/24", "dev", self.inside)
        self.exec("ip", "addr", "add", f"{new}/24", "dev", self.inside)
        self.exec("ip", "route", "replace", "default", "via", self.host, "dev", self.inside)
        self.address = new
        return new


@contextmanager
def namespace() -> Iterator[Namespace]:
    """A fresh namespace joined to the host by a veth pair; everything is removed again on every path."""
    pid = os.getpid()
    prefix = f"10.203.{pid % 250 + 1}"
    name = f"cs{pid}"
    outside, inside = f"cso{pid}"[:15], f"csi{pid}"[:15]
    folder = Path(tempfile.mkdtemp(prefix="netns-"))
    wrapper = folder / "chromium-in-namespace"
    wrapper.write_text(f'#!/bin/sh\nexec ip netns exec {name} {chromium_path()} "$@"\n')
    wrapper.chmod(0o755)
    space = Namespace(name, outside, inside, f"{prefix}.1", f"{prefix}.2", prefix, wrapper)
    try:
        _ip("netns", "add", name)
        _ip("link", "add", outside, "type", "veth", "peer", "name", inside)
        _ip("link", "set", inside, "netns", name)
        _ip("addr", "add", f"{space.host}/24", "dev", outside)
        _ip("link", "set", outside, "up")
        space.exec("ip", "link", "set", "lo", "up")
        space.exec("ip", "addr", "add", f"{space.address}/24", "dev", inside)
        space.exec("ip", "link", "set", inside, "up")
        space.exec("ip", "route", "add", "default", "via", space.host, "dev", inside)
        yield space
    finally:
        # Deleting one end of a veth pair deletes both; the namespace goes with its last process.
        subprocess.run(["ip", "link", "del", outside], capture_output=True)
        subprocess.run(["ip", "netns", "del", name], capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


async def launch_inside(
    playwright: Playwright, space: Namespace, microphone: Path, secure_origins: list[str]
) -> BrowserContext:
    """A Chromium process in `space` with a fake microphone playing `microphone`.

    Plain-http pages on the namespace's addresses are no secure context (no getUserMedia): the
    browser is told to treat `secure_origins` as secure, as DESIGN.md's "Tests that are real" says.
    """
    args = [
        *CHROMIUM_FLAGS,
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={microphone}",
        f"--unsafely-treat-insecure-origin-as-secure={','.join(secure_origins)}",
    ]
    browser = await playwright.chromium.launch(executable_path=str(space.wrapper), args=args, headless=True)
    context = await browser.new_context(permissions=["microphone"])
    await context.add_init_script(LISTEN)
    return context
