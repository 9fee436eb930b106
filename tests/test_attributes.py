"""`watcher.attributes(...)` puts who and what a call is for on its cost span: by convention, allow-listed,
capped, user ids hashed on request, with OpenTelemetry baggage as the fallback; it never breaks a call."""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import hmac
import logging
import stat
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anthropic
import pytest
from opentelemetry import baggage
from opentelemetry import context as otel_context

import watcher
from watcher.settings import Settings
from watcher.testing import FakeAnthropic, FakeReply, SpanCapture

HI = [{"role": "user", "content": "hi"}]
MODEL = "claude-haiku-4-5"
DIMENSION_KEYS = ("enduser.id", "session.id", "gen_ai.conversation.id", "gen_ai.agent.name")


def call(client: anthropic.Anthropic) -> None:
    client.messages.create(model=MODEL, max_tokens=8, messages=HI)  # type: ignore[arg-type]


def span_attributes(capture: SpanCapture) -> list[dict[str, Any]]:
    return [dict(span.attributes or {}) for span in capture.cost_spans()]


def dimensions(attrs: dict[str, Any]) -> dict[str, Any]:
    """Only the span's dimension attributes: the conventions' and `watcher.attr.*`."""
    return {k: v for k, v in attrs.items() if k in DIMENSION_KEYS or k.startswith("watcher.attr.")}


@contextmanager
def instrumented(fake_api: FakeAnthropic, **settings: Any) -> Iterator[tuple[anthropic.Anthropic, SpanCapture]]:
    """watcher instrumented with `settings`, its spans in memory, and a client of the fake API."""
    spans = SpanCapture()
    watcher.instrument(Settings(**settings), tracer_provider=spans.provider)
    try:
        with anthropic.Anthropic(base_url=fake_api.base_url, api_key="k", max_retries=0) as client:
            yield client, spans
    finally:
        watcher.uninstrument()
        spans.provider.shutdown()


@contextmanager
def in_baggage(**entries: str) -> Iterator[None]:
    ctx = otel_context.get_current()
    for key, value in entries.items():
        ctx = baggage.set_baggage(key, value, context=ctx)
    token = otel_context.attach(ctx)
    try:
        yield
    finally:
        otel_context.detach(token)


def test_dimensions_go_to_their_convention_attributes_and_others_to_watcher_attr(
    client: anthropic.Anthropic, capture: SpanCapture
) -> None:
    """user, session, conversation and agent take the semantic conventions' names; tenant is `watcher.attr.tenant`;
    a call outside any block carries none of them."""
    with watcher.attributes(user="u-42", tenant="acme", session="s-1", conversation="c-7", agent="triage"):
        call(client)
    call(client)
    inside, outside = span_attributes(capture)
    assert dimensions(inside) == {
        "enduser.id": "u-42",
        "watcher.attr.tenant": "acme",
        "session.id": "s-1",
        "gen_ai.conversation.id": "c-7",
        "gen_ai.agent.name": "triage",
    }
    assert dimensions(outside) == {}
    assert "watcher.attributes.truncated" not in inside


def test_works_as_a_decorator_on_sync_and_async_functions(
    client: anthropic.Anthropic, async_client: anthropic.AsyncAnthropic, capture: SpanCapture
) -> None:
    """Each call of a decorated sync or async function carries the decorator's dimensions, merged with the caller's."""

    @watcher.attributes(agent="sync-agent")
    def job() -> None:
        call(client)

    @watcher.attributes(agent="async-agent")
    async def async_job() -> None:
        async with async_client:
            await async_client.messages.create(model=MODEL, max_tokens=8, messages=HI)  # type: ignore[arg-type]

    with watcher.attributes(tenant="acme"):
        job()
    asyncio.run(async_job())
    call(client)
    sync_span, async_span, after = span_attributes(capture)
    assert dimensions(sync_span) == {"gen_ai.agent.name": "sync-agent", "watcher.attr.tenant": "acme"}
    assert dimensions(async_span) == {"gen_ai.agent.name": "async-agent"}
    assert dimensions(after) == {}


def test_nested_blocks_merge_inner_wins_and_none_removes_until_the_block_ends(
    client: anthropic.Anthropic, capture: SpanCapture
) -> None:
    """An inner block adds to the outer one and wins per name; None hides a name inside it; leaving restores."""
    with watcher.attributes(user="u-1", tenant="acme"):
        with watcher.attributes(user="u-2", session="s-9"):
            call(client)
            with watcher.attributes(tenant=None, session=""):
                call(client)
        call(client)
    merged, removed, restored = (dimensions(a) for a in span_attributes(capture))
    assert merged == {"enduser.id": "u-2", "watcher.attr.tenant": "acme", "session.id": "s-9"}
    assert removed == {"enduser.id": "u-2"}
    assert restored == {"enduser.id": "u-1", "watcher.attr.tenant": "acme"}


def test_threads_see_the_block_only_through_a_copied_context(client: anthropic.Anthropic, capture: SpanCapture) -> None:
    """A plain thread starts with no dimensions; one run in `contextvars.copy_context()` has the block's."""
    with watcher.attributes(user="u-thread"):
        plain = threading.Thread(target=call, args=(client,))
        plain.start()
        plain.join()
        copied = threading.Thread(target=contextvars.copy_context().run, args=(call, client))
        copied.start()
        copied.join()
    first, second = span_attributes(capture)
    assert dimensions(first) == {}
    assert dimensions(second) == {"enduser.id": "u-thread"}


def test_concurrent_asyncio_tasks_keep_their_own_dimensions(
    async_client: anthropic.AsyncAnthropic, capture: SpanCapture
) -> None:
    """Tasks that enter their blocks before any of them calls still each label their own call."""

    async def main() -> None:
        entered = 0
        all_in = asyncio.Event()

        async def task(i: int) -> None:
            nonlocal entered
            with watcher.attributes(user=f"u{i}", tenant=f"t{i}"):
                entered += 1
                if entered == 3:
                    all_in.set()
                await all_in.wait()
                await async_client.messages.create(model=MODEL, max_tokens=8, messages=HI)  # type: ignore[arg-type]

        async with async_client:
            await asyncio.gather(*(task(i) for i in range(3)))

    asyncio.run(main())
    pairs = sorted((a["enduser.id"], a["watcher.attr.tenant"]) for a in span_attributes(capture))
    assert pairs == [("u0", "t0"), ("u1", "t1"), ("u2", "t2")]


def test_baggage_fills_names_no_block_sets_and_an_explicit_value_wins(
    client: anthropic.Anthropic, capture: SpanCapture
) -> None:
    """Baggage under a dimension's name or its span attribute name is used; `watcher.attributes` overrides it,
    None in a block hides it, and baggage keys that are not dimensions stay off the span."""
    with in_baggage(user="u-bag", **{"watcher.attr.tenant": "bag-tenant", "session.id": "s-bag", "other": "x"}):
        call(client)
        with watcher.attributes(user="u-explicit", session=None):
            call(client)
    from_baggage, overridden = (dimensions(a) for a in span_attributes(capture))
    assert from_baggage == {"enduser.id": "u-bag", "watcher.attr.tenant": "bag-tenant", "session.id": "s-bag"}
    assert overridden == {"enduser.id": "u-explicit", "watcher.attr.tenant": "bag-tenant"}
    assert not [k for k in span_attributes(capture)[0] if "other" in k]


def test_names_off_the_allow_list_are_dropped_and_logged_once(
    fake_api: FakeAnthropic, caplog: pytest.LogCaptureFixture
) -> None:
    """With WATCHER_ATTRIBUTE_NAMES=user,cost_center, cost_center is recorded and tenant dropped, with one
    WARNING however many calls name it; baggage of names not allowed is ignored silently."""
    caplog.set_level(logging.WARNING, logger="watcher")
    with instrumented(fake_api, attribute_names="user,cost_center") as (client, capture):
        with in_baggage(agent="bag-agent"), watcher.attributes(user="u", tenant="acme", cost_center="cc-1"):
            call(client)
            call(client)
        spans = span_attributes(capture)
    assert [dimensions(a) for a in spans] == [{"enduser.id": "u", "watcher.attr.cost_center": "cc-1"}] * 2
    dropped = [r for r in caplog.records if "'tenant'" in r.getMessage()]
    assert len(dropped) == 1
    assert "WATCHER_ATTRIBUTE_NAMES" in dropped[0].getMessage()
    assert not [r for r in caplog.records if "agent" in r.getMessage()]


def test_a_value_longer_than_the_cap_is_cut_and_flagged(fake_api: FakeAnthropic) -> None:
    """Values keep at most WATCHER_ATTRIBUTE_MAX_LENGTH characters; the cut names are listed on the span."""
    with instrumented(fake_api, attribute_max_length=5) as (client, capture):
        with watcher.attributes(tenant="abcdefgh", agent="short"):
            call(client)
        (attrs,) = span_attributes(capture)
    assert attrs["watcher.attr.tenant"] == "abcde"
    assert attrs["gen_ai.agent.name"] == "short"
    assert list(attrs["watcher.attributes.truncated"]) == ["tenant"]


def hashed_user(fake_api: FakeAnthropic, user: str, **settings: Any) -> dict[str, Any]:
    with instrumented(fake_api, hash_user_ids=True, **settings) as (client, capture):
        with watcher.attributes(user=user, tenant="acme"):
            call(client)
        (attrs,) = span_attributes(capture)
    return attrs


def test_hashed_user_ids_are_stable_per_key_differ_between_keys_and_hide_the_id(fake_api: FakeAnthropic) -> None:
    """With WATCHER_HASH_USER_IDS, enduser.id is HMAC-SHA256(key, id) cut to 32 hex digits, flagged as hashed."""
    first = hashed_user(fake_api, "u-42", attribute_hash_key="key-one")
    again = hashed_user(fake_api, "u-42", attribute_hash_key="key-one")
    other_key = hashed_user(fake_api, "u-42", attribute_hash_key="key-two")
    other_user = hashed_user(fake_api, "u-43", attribute_hash_key="key-one")
    expected = hmac.new(b"key-one", b"u-42", hashlib.sha256).hexdigest()[:32]
    assert first["enduser.id"] == again["enduser.id"] == expected
    assert other_key["enduser.id"] != first["enduser.id"]
    assert other_user["enduser.id"] != first["enduser.id"]
    assert first["watcher.enduser.id_hashed"] is True
    assert first["watcher.attr.tenant"] == "acme"  # only the user id is hashed
    assert not [v for v in first.values() if isinstance(v, str) and "u-42" in v]


def test_without_a_configured_key_a_private_key_file_is_made_once_and_reused(
    fake_api: FakeAnthropic, tmp_path: Path
) -> None:
    """No WATCHER_ATTRIBUTE_HASH_KEY: a random key is written to the state directory (0600) on first use and read
    by later processes, so the same user hashes the same across restarts."""
    first = hashed_user(fake_api, "u-42", state_dir=tmp_path)
    key_file = tmp_path / "user-id-hash.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    again = hashed_user(fake_api, "u-42", state_dir=tmp_path)
    key = bytes.fromhex(key_file.read_text().strip())
    assert first["enduser.id"] == again["enduser.id"] == hmac.new(key, b"u-42", hashlib.sha256).hexdigest()[:32]


def test_a_hash_key_that_cannot_be_had_drops_the_user_id_and_keeps_the_call(
    fake_api: FakeAnthropic, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A state directory that is a file: no key, so no user id (never the raw one); the rest of the span stays."""
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    caplog.set_level(logging.WARNING, logger="watcher")
    attrs = hashed_user(fake_api, "u-42", state_dir=not_a_dir)
    assert "enduser.id" not in attrs
    assert attrs["watcher.attr.tenant"] == "acme"
    assert any("hash key" in r.getMessage() for r in caplog.records)


def test_streams_carry_the_dimensions_of_the_block_they_were_started_in(
    client: anthropic.Anthropic, capture: SpanCapture
) -> None:
    """A stream read after its block has ended is still labelled with it: dimensions are taken at call start."""
    with watcher.attributes(user="u-stream"):
        stream = client.messages.create(model=MODEL, max_tokens=8, messages=HI, stream=True)  # type: ignore[arg-type]
    for _ in stream:
        pass
    (attrs,) = span_attributes(capture)
    assert attrs["enduser.id"] == "u-stream"
    assert attrs["gen_ai.request.stream"] is True


def batch_of(n: int) -> list[dict[str, Any]]:
    params = {"model": MODEL, "max_tokens": 8, "messages": HI}
    return [{"custom_id": f"r{i}", "params": params} for i in range(n)]


def test_batch_results_carry_the_dimensions_and_baggage_of_the_batch_creation(
    client: anthropic.Anthropic, fake_api: FakeAnthropic, capture: SpanCapture
) -> None:
    """Results fetched elsewhere are labelled as the batch was created, baggage included; the fetching block
    only fills names the creation did not have."""
    fake_api.reply(FakeReply(usage={"input_tokens": 10, "output_tokens": 1}))
    with in_baggage(agent="bag-agent"), watcher.attributes(user="u-batch", tenant="acme"):
        batch = client.messages.batches.create(requests=batch_of(1))  # type: ignore[arg-type]
    with watcher.attributes(user="u-fetcher", session="s-fetch"):
        list(client.messages.batches.results(batch.id))
    (attrs,) = span_attributes(capture)
    assert dimensions(attrs) == {
        "enduser.id": "u-batch",
        "watcher.attr.tenant": "acme",
        "gen_ai.agent.name": "bag-agent",
    }


def test_results_of_a_batch_made_elsewhere_take_the_fetching_blocks_dimensions(
    client: anthropic.Anthropic, capture: SpanCapture
) -> None:
    """A batch this process did not create has only the fetching context to go by."""
    batch = client.messages.batches.create(requests=batch_of(1))  # type: ignore[arg-type]
    watcher.uninstrument()
    watcher.instrument(tracer_provider=capture.provider)  # a fresh process's view: nothing remembered
    with watcher.attributes(tenant="fetcher"):
        list(client.messages.batches.results(batch.id))
    (attrs,) = span_attributes(capture)
    assert dimensions(attrs) == {"watcher.attr.tenant": "fetcher"}


def test_misuse_is_refused_where_it_is_written() -> None:
    """A value that is not a string is a TypeError, a name that is not an identifier a ValueError, at once."""
    with pytest.raises(TypeError, match="user= must be a string"):
        watcher.attributes(user=42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="identifier"):
        watcher.attributes(**{"team.id": "x"})
    with pytest.raises(ValueError, match="identifier"):
        watcher.attributes(**{"n" * 65: "x"})


def test_the_allow_list_setting_is_comma_separated_identifiers(monkeypatch: pytest.MonkeyPatch) -> None:
    """WATCHER_ATTRIBUTE_NAMES splits on commas; a name that is not an identifier is refused at startup."""
    assert Settings().attribute_names == ["user", "tenant", "session", "conversation", "agent"]
    monkeypatch.setenv("WATCHER_ATTRIBUTE_NAMES", " user , cost_center,")
    assert Settings().attribute_names == ["user", "cost_center"]
    monkeypatch.setenv("WATCHER_ATTRIBUTE_NAMES", "user,team.id")
    with pytest.raises(ValueError, match="identifiers"):
        Settings()
