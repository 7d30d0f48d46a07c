#!/usr/bin/env python3
"""What holding tool calls back costs: the time to the first byte of a streamed tool call's
arguments, straight from the provider and through trioproxy (which sends each call whole).

    python bench/tool_hold.py            # 40 requests per cell
    python bench/tool_hold.py --quick    # 10

In one Trio process: an emulated Cerebras streaming an answer with two tool calls (each a header
and three argument fragments), its events `interval` ms apart (0.5 ms is about Cerebras's
2,000 tokens/s, 20 ms about Chutes's 50 tokens/s), and a trioproxy in front of it. For each
interval, requests one at a time: the time from sending to the first non-empty `arguments`
fragment, direct and through the proxy, and the time to the whole answer. Shown: p50 in ms and
the difference, which is what holding back adds (about the fragments after the first times the
interval: an agent acts on the call only once it is whole, so it waits that long anyway).
"""

import argparse
import json
import statistics
import sys
from pathlib import Path

import attrs
import httpx
import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from trioproxy.config.schema import Config  # noqa: E402
from trioproxy.process.supervisor import run_proxy  # noqa: E402
from trioproxy.testing import emulator  # noqa: E402
from trioproxy.testing.emulator import Faults  # noqa: E402

TOOLS = [{"type": "function", "function": {"name": name, "parameters": {
    "type": "object", "properties": {key: {"type": "string"}}, "required": [key]}}}
    for name, key in (("read_file", "path"), ("list_files", "dir"))]


async def timed(client: httpx.AsyncClient, url: str, model: str) -> tuple[float, float]:
    """(seconds to the first argument bytes, seconds to the end) of one streamed tool answer."""
    body = {"model": model, "messages": [{"role": "user", "content": "List and read."}], "stream": True,
            "tools": TOOLS, "parallel_tool_calls": True}
    started = trio.current_time()
    first = None
    async with client.stream("POST", url, json=body) as response:
        async for line in response.aiter_lines():
            if first is None and line.startswith("data: {"):
                choices = json.loads(line[6:]).get("choices") or [{}]
                calls = choices[0].get("delta", {}).get("tool_calls") or []
                if any((call.get("function") or {}).get("arguments") for call in calls):
                    first = trio.current_time() - started
    assert first is not None, "no tool call arguments in the answer"
    return first, trio.current_time() - started


async def cell(provider: emulator.EmulatedProvider, direct_url: str, proxy_url: str, interval_ms: float,
               count: int) -> dict[str, float]:
    provider.faults = Faults(chunk_delay=interval_ms / 1000)
    figures: dict[str, list[float]] = {"direct": [], "proxy": [], "direct_end": [], "proxy_end": []}
    async with httpx.AsyncClient(timeout=30, headers={"authorization": f"Bearer {provider.api_key}"}) as client:
        for _ in range(count):  # alternate, so drifts of the machine hit both alike
            first, end = await timed(client, direct_url, provider.model)
            figures["direct"].append(first)
            figures["direct_end"].append(end)
            first, end = await timed(client, proxy_url, "qwen-3-coder")
            figures["proxy"].append(first)
            figures["proxy_end"].append(end)
    return {name: statistics.median(values) * 1000 for name, values in figures.items()}


async def main(count: int, intervals: list[float]) -> None:
    cerebras = emulator.cerebras()
    chutes = emulator.chutes()
    async with trio.open_nursery() as nursery:
        cerebras_url = await nursery.start(emulator.serve, cerebras)
        chutes_url = await nursery.start(emulator.serve, chutes)
        base = Config(port=0, state_file="", max_wait_ms=0, log_level="WARNING")
        big = {"requests_per_minute": 10**6, "tokens_per_minute": 10**9, "tokens_per_day": 10**12}
        config = attrs.evolve(
            base,
            cerebras=attrs.evolve(base.cerebras, base_url=cerebras_url, api_key=cerebras.api_key, **big),
            chutes=attrs.evolve(base.chutes, base_url=chutes_url, api_key=chutes.api_key),
        )
        proxy_url = await nursery.start(run_proxy, config, trio.Event())
        print(f"{count} requests per cell; an answer of two tool calls, each a header and 3 argument fragments")
        print(f"{'interval ms':>11} | {'direct p50 ms':>13} | {'trioproxy p50 ms':>16} | {'added ms':>8} | "
              f"{'whole answer direct / trioproxy ms':>34}")
        for interval in intervals:
            result = await cell(cerebras, cerebras_url + "/chat/completions", proxy_url + "/chat/completions",
                                interval, count)
            print(f"{interval:>11g} | {result['direct']:>13.2f} | {result['proxy']:>16.2f} | "
                  f"{result['proxy'] - result['direct']:>8.2f} | "
                  f"{result['direct_end']:>15.2f} / {result['proxy_end']:.2f}")
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="10 requests per cell")
    parser.add_argument("--intervals", default="0.5,5,20", help="ms between events, comma-separated")
    args = parser.parse_args()
    trio.run(main, 10 if args.quick else 40, [float(v) for v in args.intervals.split(",")])
