"""trioproxy/jsoncodec.py: msgspec's speed without changing what counts as JSON or what gets through."""

import json

import httpx
import pytest

from support.proxies import Providers, Proxy
from trioproxy.jsoncodec import dump_json, load_json

BIG = 123456789012345678901234567890  # beyond 64 bits: a float would lose digits


def test_integers_of_any_size_survive_exactly() -> None:
    document = load_json(json.dumps({"seed": BIG, "small": -3}))
    assert document == {"seed": BIG, "small": -3}
    assert json.loads(dump_json(document)) == {"seed": BIG, "small": -3}


def test_lone_surrogate_escapes_parse_and_stay_escaped() -> None:
    document = load_json(b'{"content": "bad \\ud800"}')
    assert document == {"content": "bad \ud800"}
    encoded = dump_json(document)
    assert b"\\ud800" in encoded and json.loads(encoded) == document


@pytest.mark.parametrize(
    "raw", [b'{"a": NaN}', b'{"a": -Infinity}', b'{"a": 1e400}', b'{"a": -1.5e999}', b'{"a": 1,}', b"\xff\xfe", b""]
)
def test_what_json_refuses_still_raises_value_error(raw: bytes) -> None:
    with pytest.raises(ValueError):
        load_json(raw)


def test_utf16_bodies_parse_as_the_standard_library_does() -> None:
    assert load_json('{"a": "é"}'.encode("utf-16")) == {"a": "é"}


def test_nesting_beyond_the_recursion_limit_raises_recursion_error() -> None:
    with pytest.raises(RecursionError):
        load_json(b"[" * 100_000 + b"]" * 100_000)


def test_output_is_compact_utf8_in_key_order() -> None:
    assert dump_json({"b": "é", "a": [1, 2.5, None, True]}) == '{"b":"é","a":[1,2.5,null,true]}'.encode()


async def test_a_big_integer_reaches_the_provider_exactly(proxy: Proxy, providers: Providers) -> None:
    body = {"model": "qwen-3-coder", "messages": [{"role": "user", "content": "hi"}], "seed": BIG,
            "metadata": {"trace": "é \u2028 \x01"}}
    async with httpx.AsyncClient(base_url=proxy.base_url, timeout=5) as client:
        response = await client.post("/chat/completions", json=body)
    assert response.status_code == 200, response.text
    received = providers.cerebras.received[-1]
    assert received["seed"] == BIG and received["metadata"] == body["metadata"]
