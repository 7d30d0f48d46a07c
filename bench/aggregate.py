#!/usr/bin/env python3
"""Combine several `bench/overhead.py --json FILE` runs into one table (medians over all rounds).

    python bench/aggregate.py bench/.cache/run1.json bench/.cache/run2.json ...

Each cell's figures are the median over every round of every run; memory figures are the
median over the runs. The table and the target checks are those of overhead.py.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import overhead  # noqa: E402


def main(paths: list[str]) -> int:
    if not paths:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    runs = [json.loads(Path(p).read_text()) for p in paths]
    raw: dict[tuple[str, int, str], list[dict[str, Any]]] = {}
    for run in runs:
        for cell in run["cells"]:
            rounds = [{k: (float("nan") if v is None else v) for k, v in r.items()} for r in cell["rounds"]]
            raw.setdefault((cell["mode"], cell["concurrency"], cell["target"]), []).extend(rounds)
    # Only targets measured in every run, so each cell's median mixes the same runs.
    targets = [t for t in ("direct", "trioproxy", "litellm")
               if all(any(c["target"] == t for c in run["cells"]) for run in runs)]
    results = {key: overhead.summarize(cells) for key, cells in raw.items() if key[2] in targets}
    memory: dict[str, Any] = {}
    for name in targets:
        found = [run["memory"][name] for run in runs if name in run["memory"]]
        if not found:
            continue
        entry: dict[str, Any] = {"idle": statistics.median(m["idle"] for m in found)}
        if all("after_load" in m for m in found):
            entry["after_load"] = statistics.median(m["after_load"] for m in found)
        streams = [m["streams"] for m in found if "streams" in m]
        if streams:
            entry["streams"] = {"rss": statistics.median(s["rss"] for s in streams),
                                "opened": min(s["opened"] for s in streams),
                                "asked": max(s["asked"] for s in streams),
                                "open_seconds": statistics.median(s["open_seconds"] for s in streams)}
        memory[name] = entry
    first = runs[0]["meta"]
    rounds = sum(run["meta"]["rounds"] for run in runs)
    meta = {**first, "rounds": f"{rounds} (from {len(runs)} runs)"}
    print("\n".join(overhead.report(results, targets, memory, meta)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
