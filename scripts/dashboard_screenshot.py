#!/usr/bin/env python3
"""Take the screenshot of the dashboard that docs/operations.md shows: docs/dashboard.png.

    .venv/bin/python scripts/dashboard_screenshot.py [--out docs/dashboard.png]

Runs trioproxy with two model routes against the emulated providers (as the browser tests do),
Cerebras no longer listing the second route's model, sends a little traffic (a Cerebras 429 that
starts a cooldown, the rest rerouted to Chutes, a failing Chutes answer, requests for the
second route), opens the page in Debian's headless chromium and saves a PNG of it (made smaller with
pngquant when it is installed).
"""

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
from playwright.sync_api import expect

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from support.live_proxy import chromium, live_proxy  # noqa: E402
from trioproxy.config.schema import ModelRoute, RouteProvider  # noqa: E402
from trioproxy.testing.emulator import Faults  # noqa: E402


OSS = "gpt-oss-120b"
ROUTES = (
    ModelRoute("qwen-3-coder", (RouteProvider(provider="cerebras"), RouteProvider(provider="chutes")), aliases=("claude-*",)),
    ModelRoute(OSS, (RouteProvider(provider="cerebras", model=OSS), RouteProvider(provider="chutes", model="openai/gpt-oss-120b")), aliases=("gpt-oss",)),
)


def send_traffic(root_url: str, call: object, cerebras: object, chutes: object) -> None:
    with httpx.Client(base_url=root_url + "/v1", timeout=30) as client:

        def ask(text: str, stream: bool, model: str = "qwen-3-coder") -> None:
            body = {"model": model, "stream": stream, "messages": [{"role": "user", "content": text}]}
            client.post("/chat/completions", json=body)

        for number in range(14):
            if number == 6:  # Cerebras answers the next one with a 429: a cooldown starts
                call(setattr, cerebras, "faults", Faults(status=429, remaining=1))  # type: ignore[operator]
            ask(f"Write function number {number} " + "please " * (number * 40), stream=number % 3 != 0)
        call(setattr, chutes, "faults", Faults(status=500, remaining=1))  # type: ignore[operator]
        ask("this one fails at Chutes", stream=False)
        for number in range(3):  # Cerebras no longer lists this model: Chutes serves them all
            ask(f"Explain module {number}", stream=True, model=OSS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "dashboard.png")
    args = parser.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with live_proxy(models=ROUTES, health_check_interval_ms=100) as proxy:
        proxy.call(proxy.providers.chutes.more_models.append, "openai/gpt-oss-120b")
        route = f'section.route[data-route="{OSS}"]'
        send_traffic(proxy.root_url, proxy.call, proxy.providers.cerebras, proxy.providers.chutes)
        with chromium(viewport={"width": 1200, "height": 800}) as context:
            page = context.new_page()
            page.goto(proxy.root_url + "/dashboard/")
            expect(page.locator("#recent tbody tr")).to_have_count(18, timeout=10_000)
            expect(page.locator(f'{route} article[data-provider="cerebras"] .badge')).to_have_text("model missing")
            expect(page.locator(f'{route} article[data-provider="chutes"] .badge')).to_have_text("up")
            expect(page.locator('[data-account="cerebras"] .cooldown')).to_contain_text("cooling down")
            page.screenshot(path=str(args.out), full_page=True)
    if shutil.which("pngquant"):  # 256 colours: a third of the size, no visible change
        subprocess.run(["pngquant", "--force", "--skip-if-larger", "--output", str(args.out), str(args.out)], check=False)
    print(f"wrote {args.out} ({args.out.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main()
