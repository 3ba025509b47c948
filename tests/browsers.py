"""Real Chromium processes (Debian's `chromium`, driven by Playwright) with fake microphones."""

from __future__ import annotations

import asyncio
import math
import shutil
import struct
import time
import wave
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from playwright.async_api import Browser, BrowserContext, Page, Playwright, expect

CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--autoplay-policy=no-user-gesture-required",
]

# Runs in every page before its own scripts: keeps each received track so the test can listen to it.
LISTEN = """
(() => {
  const Original = window.RTCPeerConnection;
  if (!Original) return;
  window.__tracks = [];
  window.RTCPeerConnection = class extends Original {
    constructor(...args) {
      super(...args);
      this.addEventListener('track', (e) => window.__tracks.push(e.track));
    }
  };
  window.__dominantFrequency = async () => {
    const track = window.__tracks.filter((t) => t.readyState === 'live').at(-1);
    if (!track) return null;
    window.__audio = window.__audio || new AudioContext();
    const ctx = window.__audio;
    await ctx.resume();
    const source = ctx.createMediaStreamSource(new MediaStream([track]));
    const analyser = ctx.createAnalyser();
    analyser.fftSize = 8192;
    source.connect(analyser);
    await new Promise((r) => setTimeout(r, 300));
    const bins = new Float32Array(analyser.frequencyBinCount);
    analyser.getFloatFrequencyData(bins);
    source.disconnect();
    let best = 1;
    for (let i = 2; i < bins.length; i++) if (bins[i] > bins[best]) best = i;
    return { hz: (best * ctx.sampleRate) / analyser.fftSize, db: bins[best] };
  };
})();
"""


def tone_file(path: Path, hz: float, seconds: float = 6.0, rate: int = 48_000, *, quiet: float = 0.0) -> Path:
    """A mono WAV of a sine tone, for `--use-file-for-fake-audio-capture`, after `quiet` seconds of
    digital silence (Chromium loops the file and starts it afresh for every microphone a page opens)."""
    if not path.exists():
        frames = bytes(2 * int(quiet * rate)) + b"".join(
            struct.pack("<h", round(12_000 * math.sin(2 * math.pi * hz * i / rate)))
            for i in range(int(seconds * rate))
        )
        with wave.open(str(path), "wb") as out:
            out.setnchannels(1)
            out.setsampwidth(2)
            out.setframerate(rate)
            out.writeframes(frames)
    return path


def chromium_path() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        raise RuntimeError("Debian's chromium is not installed: run `make test`, which installs it.")
    return path


async def launch(
    playwright: Playwright,
    microphone: Path | None,
    locale: str | None = None,
    flags: Sequence[str] = (),
) -> BrowserContext:
    """A browser process of its own: with a fake microphone playing `microphone`, or with it refused;
    `locale` (e.g. "de-DE") is the language the browser asks pages for; `flags` go to Chromium too."""
    args = [*CHROMIUM_FLAGS, *flags]
    if microphone is None:
        args.append("--deny-permission-prompts")
    else:
        args += [
            "--use-fake-ui-for-media-stream",
            "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-audio-capture={microphone}",
        ]
    browser: Browser = await playwright.chromium.launch(
        executable_path=chromium_path(), args=args, headless=True
    )
    context = await browser.new_context(permissions=["microphone"] if microphone else [], locale=locale)
    await context.add_init_script(LISTEN)
    return context


async def hears(page: Page, hz: float, within: float = 15.0, tolerance: float = 40.0) -> float:
    """Wait until the page's received audio is dominated by `hz`; returns the frequency heard."""
    deadline = time.monotonic() + within
    last: Any = None
    while time.monotonic() < deadline:
        last = await page.evaluate("window.__dominantFrequency()")
        if last and last["db"] > -75 and abs(last["hz"] - hz) <= tolerance:
            return float(last["hz"])
        await asyncio.sleep(0.3)
    raise AssertionError(f"expected to hear {hz} Hz, last heard {last}")


async def sign_in(page: Page, base_url: str, area: str, email: str, password: str) -> None:
    await page.goto(f"{base_url}/{area}/login")
    await page.fill("input[name=email]", email)
    await page.fill("input[name=password]", password)
    await page.click("button[type=submit]")
    await page.wait_for_url(f"{base_url}/{area}/")


async def go_online(page: Page) -> None:
    await page.get_by_test_id("op-presence").select_option("online")
    await expect(page.get_by_test_id("op-presence")).to_have_value("online")
