"""Call set-up as a person feels it, in real Chromium: click → operator ringing, answer → two-way audio.

Runs `callserver demo` in its own process (so its CPU can be read from /proc), a shopper and an
operator browser with fake microphones (440 Hz and 1000 Hz), and places calls one after another.
Times come from the browsers' own clocks (Date.now(), same machine). Usage:

    .venv/bin/python -m benchmarks.call_setup [--calls 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from playwright.async_api import Page, async_playwright

from tests.browsers import go_online, launch, sign_in, tone_file
from tests.stack import free_port

# Resolves with Date.now() once the page's received audio is dominated by `hz` (checked every 5 ms).
WAIT_FOR_TONE = """
(hz) => new Promise((resolve) => {
  const ctx = window.__bench || (window.__bench = new AudioContext());
  ctx.resume();
  let analyser = null;
  const bins = new Float32Array(1024);
  const timer = setInterval(() => {
    const track = window.__tracks.filter((t) => t.readyState === 'live').at(-1);
    if (!track) return;
    if (!analyser) {
      analyser = ctx.createAnalyser();
      analyser.fftSize = 2048;
      ctx.createMediaStreamSource(new MediaStream([track])).connect(analyser);
    }
    analyser.getFloatFrequencyData(bins);
    let best = 1;
    for (let i = 2; i < bins.length; i++) if (bins[i] > bins[best]) best = i;
    const heard = (best * ctx.sampleRate) / analyser.fftSize;
    if (bins[best] > -70 && Math.abs(heard - hz) < 60) { clearInterval(timer); resolve(Date.now()); }
  }, 5);
})
"""

WAIT_FOR_RING = """
() => new Promise((resolve) => {
  const seen = () => document.querySelector('[data-testid="op-incoming"]');
  if (seen()) return resolve(Date.now());
  const observer = new MutationObserver(() => {
    if (seen()) { observer.disconnect(); resolve(Date.now()); }
  });
  observer.observe(document.body, { childList: true, subtree: true });
})
"""


def cpu_seconds(pid: int) -> float:
    """CPU seconds of the server and its media workers (`CALLSERVER_MEDIA_WORKERS`, default one per core)."""
    from benchmarks.bridge import tree_cpu

    return sum(tree_cpu(pid).values())


async def wait_healthy(url: str) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(200):
            try:
                async with session.get(f"{url}/healthz") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError("callserver demo did not start")


async def one_call(shop: Page, operator: Page) -> dict[str, float]:
    ring = asyncio.ensure_future(operator.evaluate(WAIT_FOR_RING))
    if not await shop.get_by_test_id("cb-call").is_visible():
        await shop.get_by_test_id("cb-launcher").click()
    clicked = await shop.evaluate("Date.now()")
    await shop.get_by_test_id("cb-call").click()
    ringing = await ring
    shopper_hears = asyncio.ensure_future(shop.evaluate(WAIT_FOR_TONE, 1000))
    operator_hears = asyncio.ensure_future(operator.evaluate(WAIT_FOR_TONE, 440))
    answered = await operator.evaluate("Date.now()")
    await operator.get_by_test_id("op-answer").first.click()
    both = max(await shopper_hears, await operator_hears)
    return {"click_to_ringing_ms": ringing - clicked, "answer_to_two_way_audio_ms": both - answered}


async def main(calls: int) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="callserver-bench-"))
    port, shop_port = free_port(), free_port()
    env = {**os.environ, "CALLSERVER_VAR_DIR": str(work / "var")}
    server = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "callserver", "demo", "--port", str(port), "--shop-port", str(shop_port),
        env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    url, shop_url = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{shop_port}"
    results: list[dict[str, float]] = []
    try:
        await wait_healthy(url)
        demo = json.loads((work / "var" / "demo.json").read_text())
        async with async_playwright() as playwright:
            operator_browser = await launch(playwright, tone_file(work / "op.wav", 1000))
            shopper_browser = await launch(playwright, tone_file(work / "shop.wav", 440))
            operator = await operator_browser.new_page()
            await sign_in(operator, url, "operator", demo["operator"]["email"], demo["operator"]["password"])
            await go_online(operator)
            shop = await shopper_browser.new_page()
            await shop.goto(f"{shop_url}/products/oak-table")
            idle_start, idle_t = cpu_seconds(server.pid), time.monotonic()
            await asyncio.sleep(3)
            idle = (cpu_seconds(server.pid) - idle_start) / (time.monotonic() - idle_t)
            cpu_in_call: list[float] = []
            for _ in range(calls):
                results.append(await one_call(shop, operator))
                start, t0 = cpu_seconds(server.pid), time.monotonic()
                await asyncio.sleep(5)
                cpu_in_call.append((cpu_seconds(server.pid) - start) / (time.monotonic() - t0) - idle)
                await shop.get_by_test_id("cb-hangup").click()
                await asyncio.sleep(1)
            await shopper_browser.browser.close()
            await operator_browser.browser.close()
    finally:
        server.terminate()
        await server.wait()
    summary: dict[str, Any] = {"calls": calls}
    for key in results[0]:
        values = sorted(r[key] for r in results)
        summary[key] = {"median": statistics.median(values), "max": values[-1]}
    summary["server_cpu_per_call_percent_of_core"] = round(100 * statistics.median(cpu_in_call), 1)
    return summary


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=5)
    result = asyncio.run(main(parser.parse_args().calls))
    print(json.dumps(result, indent=2))
