#!/usr/bin/env python3
"""Each front door's own CPU, in-process: parse `bench/doors.py`'s small request, then render a
chat answer (plain) or a 23-chunk chat stream and its end (stream). No HTTP, no upstream, so the
machine's other load hardly moves the figures; what HTTP adds is overhead.py's business.

    .venv/bin/python bench/door_cpu.py                 # 3,000 requests per cell, a few seconds
    .venv/bin/python bench/door_cpu.py --requests 20000

Prints the p50 per door and mode in microseconds, and the difference to the chat door.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import doors  # noqa: E402
from trioproxy.doors import chat, gemini, messages, responses  # noqa: E402
from trioproxy.doors.exchange import Exchange  # noqa: E402
from trioproxy.routing.models import ModelNames, ServedModel  # noqa: E402

MODELS = ModelNames((ServedModel("qwen-3-coder"),))
_HEAD = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "qwen-3-coder-480b"}
USAGE = {"prompt_tokens": 42, "completion_tokens": 20, "total_tokens": 62}
# The shape of bench/upstream.py's stream: a role chunk, 20 content chunks, a finish, usage.
CHUNKS: list[dict[str, Any]] = [
    {**_HEAD, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]},
    *({**_HEAD, "choices": [{"index": 0, "delta": {"content": f" word{i}"}, "finish_reason": None}]} for i in range(20)),
    {**_HEAD, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
    {**_HEAD, "choices": [], "usage": USAGE},
]
ANSWER = {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "qwen-3-coder-480b",
          "choices": [{"index": 0, "message": {"role": "assistant", "content": " ".join(f"word{i}" for i in range(20))},
                       "finish_reason": "stop"}], "usage": USAGE}


def _gemini(stream: bool) -> Callable[[bytes, ModelNames], Exchange]:
    method = gemini.STREAM if stream else gemini.GENERATE
    call = gemini.gemini_call(f"/v1beta/models/qwen-3-coder:{method}")
    return lambda raw, models: gemini.parse(raw, models, call, sse=True)


PARSERS: dict[str, Callable[[bool], Callable[[bytes, ModelNames], Exchange]]] = {
    "chat": lambda stream: chat.parse, "responses": lambda stream: responses.parse,
    "messages": lambda stream: messages.parse, "gemini": _gemini,
}


def one_request(door: str, stream: bool) -> float:
    """Seconds of one request's translation (the documents are copied before the clock starts:
    doors may rename the model in them)."""
    parse = PARSERS[door](stream)
    raw = json.dumps(doors.DOORS[door][1](stream)).encode()
    chunks, answer = copy.deepcopy(CHUNKS), copy.deepcopy(ANSWER)
    started = time.perf_counter()
    exchange = parse(raw, MODELS)
    if stream:
        for chunk in chunks:
            exchange.stream_events([chunk])
        exchange.stream_end(None)
    else:
        exchange.answer(answer)
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=3000, help="requests per door and mode")
    args = parser.parse_args()
    print(f"{'door':<10} {'plain us':>9} {'vs chat':>8} {'stream us':>10} {'vs chat':>8}")
    medians = {(door, stream): statistics.median(one_request(door, stream) for _ in range(args.requests)) * 1e6
               for stream in (False, True) for door in PARSERS}
    for door in PARSERS:
        plain, streamed = medians[(door, False)], medians[(door, True)]
        print(f"{door:<10} {plain:9.1f} {plain - medians[('chat', False)]:+8.1f} "
              f"{streamed:10.1f} {streamed - medians[('chat', True)]:+8.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
