#!/usr/bin/env python3
"""Is a change slower? Two checkouts of trioproxy on one overhead.py cell, side by side.

    git worktree add ../base d4a5bf4
    python bench/ab.py --base ../base --together --rounds 20          # stream, concurrency 16
    python bench/ab.py --base ../base --rounds 30                     # interleaved instead
    python bench/ab.py --base . --together --rounds 20                # A/A: what noise alone shows

Both proxies run on core 0 (overhead.py's set-up, one upstream on core 1), each with its checkout
first on PYTHONPATH and this interpreter's packages. Separate whole runs of overhead.py, compared
afterwards, take the machine's other load for a difference: on the shared 2-core machine a cell
moves by a factor of two between runs. Two ways to keep that drift out of the comparison:

- interleaved (default): every round loads one proxy, then the other, in an order that
  alternates (ABBA). Each side is measured as overhead.py measures it, alone on its core, but
  load that comes and goes within seconds still lands on one side only (pairs from 0.4x to 3x).
- `--together`: every round loads both at once with wrk, so they share core 0 and whatever else
  runs there at the same instants; the fair scheduler gives each half, and a side that needs more
  CPU per request serves fewer. Only the ratios mean something (each side sees half a core), and
  they are tight: pairs mostly within 0.9-1.1x, the median's interval a few per cent wide; about
  0.5 ms of CPU added to every stream (8 %) showed in 27 of 30 rounds, interval 0.89-0.96.

Prints each side's median and range, and the head/base ratio of each round's pair: its median, a
95 % bootstrap interval of that median, and how many rounds came out below 1.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import overhead  # noqa: E402

# `--clients`: the benchmark's client and four others, budgets far above what a cell sends.
CLIENTS_SETTINGS = "".join(
    f'[[clients]]\nname = "{name}"\napi_keys = ["{key}"]\n[clients.budget]\nrequests_per_minute = 100000000\n'
    for name, key in (("bench", "{key}"), *((f"agent-{i}", f"sk-agent-{i}-unused") for i in range(4)))
)
METRICS = (("rps", "req/s"), ("cpu_us", "CPU us/request"), ("p50_ms", "p50 ms"))
BOOTSTRAP_SAMPLES = 5000


def median_interval(values: list[float]) -> tuple[float, float]:
    """95 % bootstrap interval of the median (fixed seed: the same figures give the same interval)."""
    rng = random.Random(1)
    medians = sorted(statistics.median(rng.choices(values, k=len(values))) for _ in range(BOOTSTRAP_SAMPLES))
    return medians[int(0.025 * BOOTSTRAP_SAMPLES)], medians[int(0.975 * BOOTSTRAP_SAMPLES) - 1]


def together(wrk: str, targets: dict[str, tuple[int, int]], body_file: Path, concurrency: int,
             duration: float) -> dict[str, dict[str, Any]]:
    """One wrk per side, started together; each side's CPU time per request over the cell."""
    cpu_before = {side: overhead.cpu_seconds(pid) for side, (pid, _) in targets.items()}
    with concurrent.futures.ThreadPoolExecutor(len(targets)) as pool:
        running = {side: pool.submit(overhead.wrk_cell, wrk, port, body_file, concurrency, duration)
                   for side, (_, port) in targets.items()}
        cells = {side: future.result() for side, future in running.items()}
    for side, cell in cells.items():
        spent = overhead.cpu_seconds(targets[side][0]) - cpu_before[side]
        cell["cpu_us"] = spent / cell["requests"] * 1e6 if cell["requests"] else float("nan")
    return cells


def report(cells: dict[str, list[dict[str, Any]]]) -> list[str]:
    base, head = cells["base"], cells["head"]
    lines = []
    for key, name in METRICS:
        for side, side_cells in cells.items():
            values = [c[key] for c in side_cells]
            lines.append(f"{side:<4} {name:<15} median {statistics.median(values):9.2f}  "
                         f"range {min(values):.2f}-{max(values):.2f}")
        ratios = [h[key] / b[key] for b, h in zip(base, head) if b[key]]
        low, high = median_interval(ratios)
        lines.append(f"head/base {name}: median {statistics.median(ratios):.3f} (95 % interval {low:.3f}-{high:.3f}), "
                     f"range {min(ratios):.2f}-{max(ratios):.2f}, below 1 in {sum(r < 1 for r in ratios)}/{len(ratios)} rounds")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, required=True, help="checkout (or worktree) to compare against")
    parser.add_argument("--head", type=Path, default=HERE.parent, help="checkout under test (default: this one)")
    parser.add_argument("--mode", choices=overhead.MODES, default="stream")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--duration", type=float, default=2.0, help="seconds per cell (wrk rounds to whole seconds)")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--clients", action="store_true",
                        help="head serves the benchmark's key as a [[clients]] entry with budgets, base as "
                             "PROXY_API_KEYS (the hot path with clients configured)")
    parser.add_argument("--together", action="store_true", help="load both at once each round (needs wrk)")
    parser.add_argument("--python", default=sys.executable, help="interpreter with trioproxy's dependencies")
    parser.add_argument("--json", type=Path, help="also write every cell to this file")
    parser.add_argument("--max-minutes", type=float, default=30, help="hard bound on the whole run")
    args = parser.parse_args()
    checkouts = {"base": args.base.resolve(), "head": args.head.resolve()}
    (overhead.CACHE / "logs").mkdir(parents=True, exist_ok=True)
    for side, path in checkouts.items():
        imported = subprocess.run([args.python, "-c", "import trioproxy; print(trioproxy.__file__)"], text=True,
                                  capture_output=True, timeout=60, cwd=overhead.CACHE,
                                  env={**os.environ, "PYTHONPATH": str(path)}).stdout.strip()
        if Path(imported) != path / "trioproxy" / "__init__.py":
            raise SystemExit(f"--{side}: {args.python} imports trioproxy from {imported or 'nowhere'}, not from {path}")

    os.sched_setaffinity(0, {overhead.LOAD_CORE})
    deadline = time.monotonic() + args.max_minutes * 60
    wrk = overhead.ensure_wrk(allow_install=True)
    if args.together and wrk is None:
        raise SystemExit("--together needs wrk (apt-get install wrk)")
    procs = []
    with tempfile.TemporaryDirectory(prefix="ab-", dir=overhead.CACHE) as tmp:
        body_files = {mode: Path(tmp) / f"{mode}.json" for mode in overhead.MODES}
        for mode, path in body_files.items():
            path.write_bytes(overhead.chat_body(mode == "stream"))
        try:
            upstream, upstream_port = overhead.start_upstream(args.max_minutes * 60 + 60)
            procs.append(upstream)
            targets = {}
            for side, path in checkouts.items():
                env, settings = {"PYTHONPATH": str(path)}, ""
                if args.clients and side == "base":
                    env["PROXY_API_KEYS"] = overhead.API_KEY
                elif args.clients:
                    settings = CLIENTS_SETTINGS.format(key=overhead.API_KEY)
                proc, port = overhead.start_trioproxy(
                    args.python, upstream_port, "WARN", overhead.CACHE / "logs" / f"ab-{side}.log",
                    state_file=str(Path(tmp) / f"state-{side}.json"), env=env, settings=settings)
                procs.append(proc)
                targets[side] = (proc.pid, port)
            if wrk is not None and args.together:
                together(wrk, targets, body_files[args.mode], args.concurrency, 1)  # warm-up, not counted
            cells: dict[str, list[dict[str, Any]]] = {side: [] for side in targets}
            for round_ in range(args.rounds):
                if time.monotonic() > deadline:
                    raise SystemExit("--max-minutes reached")
                if wrk is not None and args.together:
                    measured = together(wrk, targets, body_files[args.mode], args.concurrency, args.duration)
                else:
                    order = ("base", "head") if round_ % 2 == 0 else ("head", "base")
                    measured = {side: overhead.measure_cell(wrk, targets[side][1], args.mode, args.concurrency,
                                                            args.duration, 0.5, body_files, targets[side][0])
                                for side in order}
                for side, cell in measured.items():
                    cells[side].append(cell)
                    overhead.log(f"round {round_ + 1}/{args.rounds} {side} {cell['rps']:7.0f} req/s "
                                 f"p50 {cell['p50_ms']:.2f} ms CPU {cell.get('cpu_us', 0):.0f} us/request errors {cell['errors']}")
        finally:
            for proc in reversed(procs):
                overhead.stop(proc)
    print(f"{args.mode} at concurrency {args.concurrency}, {args.rounds} rounds of {args.duration:g} s cells, "
          f"{'both loaded together' if args.together else 'interleaved'}; "
          f"base {checkouts['base']}, head {checkouts['head']}")
    print("\n".join(report(cells)))
    if args.json:
        args.json.write_text(json.dumps({"checkouts": {k: str(v) for k, v in checkouts.items()}, "cells": cells}, indent=1))
    errors = sum(c["errors"] for side in cells.values() for c in side)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
