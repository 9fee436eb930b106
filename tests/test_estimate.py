"""A stream's input estimated from its request: between a third of its text and a third of its JSON, images capped."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from watcher._instrument._estimate import BYTES_PER_TOKEN, IMAGE_TOKENS, input_tokens_bound

scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text()
json_values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4), max_leaves=30
)


def strings(value: Any) -> list[str]:
    """Every string in a JSON value, keys included."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [text for key, item in value.items() for text in [key, *strings(item)]]
    if isinstance(value, list):
        return [text for item in value for text in strings(item)]
    return []


@given(system=json_values, messages=json_values, tools=json_values)
def test_the_estimate_lies_between_a_third_of_the_text_and_a_third_of_the_json(
    system: Any, messages: Any, tools: Any
) -> None:
    """Never below the UTF-8 bytes of every string over 3 (whatever the script), never above the compact JSON's."""
    body = {"model": "m", "max_tokens": 8, "system": system, "messages": messages, "tools": tools}
    estimate = input_tokens_bound(body)
    text_bytes = sum(len(text.encode()) for text in strings([system, messages, tools]))
    json_bytes = len(json.dumps([system, messages, tools], ensure_ascii=False, separators=(",", ":")).encode())
    assert text_bytes <= estimate * BYTES_PER_TOKEN < json_bytes + BYTES_PER_TOKEN


def image(data: str) -> dict[str, Any]:
    return {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": data}}


@given(size=st.integers(min_value=0, max_value=200_000), in_tool_result=st.booleans())
def test_a_base64_image_adds_its_bytes_over_3_but_never_more_than_the_cap(size: int, in_tool_result: bool) -> None:
    """An image is billed by its pixels, not its bytes: however large its data, it adds at most IMAGE_TOKENS."""

    def body(data: str) -> dict[str, Any]:
        block = image(data)
        if in_tool_result:
            block = {"type": "tool_result", "tool_use_id": "t1", "content": [block]}
        return {"messages": [{"role": "user", "content": [block, {"type": "text", "text": "what is this?"}]}]}

    added = input_tokens_bound(body("A" * size)) - input_tokens_bound(body(""))
    assert added == min(-(-size // BYTES_PER_TOKEN), IMAGE_TOKENS)


def test_a_request_without_a_body_is_estimated_at_zero() -> None:
    """No body (an odd SDK path) gives 0 rather than an error."""
    assert input_tokens_bound(None) == 0
    assert input_tokens_bound({}) == 0
