"""Added delay and CPU of a relayed call vs a direct one, in one run, with real Chromium and coturn.

One Chromium (the shopper's context with a 440 Hz fake microphone, the operator's with a 1000 Hz
oscillator), one coturn run from docs/coturn.conf, and the server in this process. Calls are placed
direct (host candidates), relay-only over TURN/UDP and relay-only over TURN/TCP, alternating, so that the
three see the same machine. While each call talks, once a second, both browsers' getStats give the
selected pair's `currentRoundTripTime` (ICE consent checks, browser ↔ server, through coturn when
relayed); coturn's CPU comes from /proc/PID/stat over the same seconds. Usage:

    .venv/bin/python -m benchmarks.relay [--calls 3] [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from playwright.async_api import Page, async_playwright

from callserver.settings import Settings
from tests.browsers import LISTEN, go_online, hears, launch, sign_in, tone_file
from tests.servers import TurnServer, hardened_coturn
from tests.stack import PASSWORD, running_stack
from tests.test_browser_call import place_call
from tests.test_ice_policy import host_address
from tests.test_turn import KEEP_PEERS, OSCILLATOR_MICROPHONE, SAMPLE_CONFIG, SECRET, SELECTED_PAIR

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process (fields 14 and 15 of /proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def settings(work: Path, mode: str, turn: TurnServer) -> Settings:
    if mode == "direct":
        return Settings(var_dir=work / mode, media_workers=0)
    url = turn.url if mode == "relay-udp" else turn.tcp_url
    return Settings(
        var_dir=work / mode,
        media_workers=0,
        turn_urls=[url],
        turn_secret=SECRET,
        ice_transport_policy="relay",
    )


async def talk(shop: Page, operator: Page, turn: TurnServer, seconds: int) -> dict[str, Any]:
    """One call from ringing to hang-up; the figures of its talking seconds."""
    await place_call(shop, operator)
    await operator.get_by_test_id("op-incoming").get_by_test_id("op-answer").click()
    await hears(operator, 440)
    await hears(shop, 1000)
    rtts: dict[str, list[float]] = {"shopper": [], "operator": []}
    pairs: dict[str, Any] = {}
    turn_start, server_start, t0 = cpu_seconds(turn.pid), time.process_time(), time.monotonic()
    for _ in range(seconds):
        await asyncio.sleep(1)
        for side, page in (("shopper", shop), ("operator", operator)):
            pair = await page.evaluate(SELECTED_PAIR)
            if pair and pair["rtt"] is not None:
                rtts[side].append(1000 * pair["rtt"])
                pairs[side] = "/".join(filter(None, (pair["type"], pair["relayProtocol"])))
    wall = time.monotonic() - t0
    turn_cpu = (cpu_seconds(turn.pid) - turn_start) / wall
    # The server runs in this process, with the Playwright client (mostly idle while the call talks).
    server_cpu = (time.process_time() - server_start) / wall
    await shop.get_by_test_id("cb-hangup").click()
    await shop.get_by_test_id("cb-status").filter(has_text="Call ended").wait_for(timeout=10_000)
    return {"rtts": rtts, "pairs": pairs, "turn_cpu": turn_cpu, "server_cpu": server_cpu}


async def main(calls: int, seconds: int) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="callserver-relay-bench-"))
    host = host_address()
    modes = ("direct", "relay-udp", "relay-tcp")
    results: dict[str, list[dict[str, Any]]] = {mode: [] for mode in modes}
    with hardened_coturn(SAMPLE_CONFIG, SECRET, relay_ip=host, allowed_peers=(host,)) as turn:
        async with async_playwright() as playwright:
            shopper_context = await launch(playwright, tone_file(work / "shop.wav", 440))
            assert shopper_context.browser is not None
            try:
                operator_context = await shopper_context.browser.new_context(permissions=["microphone"])
                for context in (shopper_context, operator_context):
                    await context.add_init_script(KEEP_PEERS)
                await operator_context.add_init_script(OSCILLATOR_MICROPHONE)
                await operator_context.add_init_script(LISTEN)
                shop, operator = await shopper_context.new_page(), await operator_context.new_page()
                for round_ in range(calls):
                    for mode in modes:
                        async with running_stack(settings(work / str(round_), mode, turn)) as stack:
                            email = f"op-{round_}-{mode}@shop.example"
                            await stack.add_user(email, name="Anna")
                            await sign_in(operator, stack.url, "operator", email, PASSWORD)
                            await go_online(operator)
                            await shop.goto(stack.shop_url)
                            results[mode].append(await talk(shop, operator, turn, seconds))
            finally:
                await shopper_context.browser.close()
    summary: dict[str, Any] = {"calls_per_mode": calls, "seconds_per_call": seconds}
    for mode, runs in results.items():
        figures: dict[str, Any] = {"pairs": runs[-1]["pairs"]}
        for side in ("shopper", "operator"):
            values = sorted(v for run in runs for v in run["rtts"][side])
            figures[f"{side}_rtt_ms"] = {
                "median": round(statistics.median(values), 2),
                "p90": round(values[int(0.9 * (len(values) - 1))], 2),
            }
        figures["turnserver_cpu_percent_of_core"] = round(
            100 * statistics.median(r["turn_cpu"] for r in runs), 2
        )
        figures["server_process_cpu_percent_of_core"] = round(
            100 * statistics.median(r["server_cpu"] for r in runs), 1
        )
        summary[mode] = figures
    return summary


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=10)
    arguments = parser.parse_args()
    print(json.dumps(asyncio.run(main(arguments.calls, arguments.seconds)), indent=2))
