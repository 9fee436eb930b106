"""The regional premium: Bedrock and Vertex AI regional endpoints cost 1.1x on Sonnet 4.5, Haiku 4.5, Opus 4.5 and
later models; every expected amount is worked in a comment."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import anthropic
import pytest

from watcher._instrument import _hook, _middleware
from watcher._instrument._middleware import Hook
from watcher._instrument._reserve import Reserver
from watcher.daemon import SpanRecord, normalize
from watcher.pricing import TokenUsage, bedrock_endpoint, default_price_table, vertex_endpoint
from watcher.testing import FakeAnthropic, FakeReply, SpanCapture

TABLE = default_price_table()
AT = datetime(2026, 11, 25, 12, tzinfo=UTC)
HI = [{"role": "user", "content": "hi"}]
USAGE = {"input_tokens": 1000, "output_tokens": 1000}
# Sonnet 4.5: 1000 x 3 / 1e6 + 1000 x 15 / 1e6 = 0.018 global; x 1.1 = 0.0198 regional.
SONNET_GLOBAL, SONNET_REGIONAL = 0.018, 0.0198
# Haiku 4.5: 1000 x 1 / 1e6 + 1000 x 5 / 1e6 = 0.006 global; x 1.1 = 0.0066 regional.
HAIKU_GLOBAL, HAIKU_REGIONAL = 0.006, 0.0066
# Opus 4.1 keeps its price anywhere: 1000 x 15 / 1e6 + 1000 x 75 / 1e6 = 0.09.
OPUS_4_1 = 0.09


@pytest.mark.parametrize(
    ("model", "endpoint"),
    [
        ("global.anthropic.claude-sonnet-4-5-20250929-v1:0", "global"),
        ("us.anthropic.claude-sonnet-4-5-20250929-v1:0", "regional"),
        ("eu.anthropic.claude-sonnet-4-5-20250929-v1:0", "regional"),
        ("apac.anthropic.claude-sonnet-4-5-20250929-v1:0", "regional"),
        ("jp.anthropic.claude-sonnet-4-5-20250929-v1:0", "regional"),
        ("au.anthropic.claude-sonnet-4-5-20250929-v1:0", "regional"),
        ("anthropic.claude-sonnet-4-5-20250929-v1:0", "regional"),
        ("arn:aws:bedrock:us-east-1::foundation-model/anthropic.claude-sonnet-4-5-20250929-v1:0", "regional"),
        ("arn:aws:bedrock:us-east-1:123:inference-profile/global.anthropic.claude-sonnet-4-5-v1:0", "global"),
        ("claude-sonnet-4-5", None),
        ("claude-sonnet-4-5@20250929", None),
    ],
)
def test_a_bedrock_model_id_says_whether_the_call_was_global_or_regional(model: str, endpoint: str | None) -> None:
    """Only `global.` profiles are global; geographic profiles and plain in-region ids are regional; others unknown."""
    assert bedrock_endpoint(model) == endpoint


@pytest.mark.parametrize(
    ("location", "endpoint"), [("global", "global"), ("us-east5", "regional"), ("us", "regional"), (None, None)]
)
def test_a_vertex_location_says_whether_the_call_was_global_or_regional(
    location: str | None, endpoint: str | None
) -> None:
    assert vertex_endpoint(location) == endpoint


@pytest.mark.parametrize(
    ("model", "endpoint", "total", "flags"),
    [
        # 0.003 + 0.015 = 0.018: the global price
        ("us.anthropic.claude-sonnet-4-5-20250929-v1:0", "global", "0.018", ()),
        # 0.018 x 1.1 = 0.0198
        ("us.anthropic.claude-sonnet-4-5-20250929-v1:0", "regional", "0.0198", ("regional_endpoint",)),
        # Haiku 4.5: 0.006 x 1.1 = 0.0066
        ("claude-haiku-4-5", "regional", "0.0066", ("regional_endpoint",)),
        # Opus 4.5: 1000 x 5 / 1e6 + 1000 x 25 / 1e6 = 0.03; x 1.1 = 0.033
        ("claude-opus-4-5", "regional", "0.033", ("regional_endpoint",)),
        # Opus 4.1 and earlier keep their prices: 0.015 + 0.075 = 0.09
        ("claude-opus-4-1", "regional", "0.09", ()),
        # Sonnet 4 predates the rule: 0.003 + 0.015 = 0.018
        ("claude-sonnet-4", "regional", "0.018", ()),
        # unknown endpoint (the first-party API): no premium
        ("claude-sonnet-4-5", None, "0.018", ()),
    ],
)
def test_the_regional_premium_is_1_1x_on_eligible_models_only(
    model: str, endpoint: str | None, total: str, flags: tuple[str, ...]
) -> None:
    cost = TABLE.cost(model, TokenUsage(1000, 1000, endpoint=endpoint), at=AT)
    assert (cost.total_usd, cost.flags) == (Decimal(total), flags)


def test_the_premium_stacks_with_caching_and_batch_but_not_with_us_only_inference() -> None:
    """Sonnet 4.6: input 1000 x 3 = 0.003, 5m write 0.00375, 1h write 0.006, read 1000 x 0.30 = 0.0003,
    output 0.015; sum 0.02805; x 1.1 (one geographic factor, not 1.21) x 0.5 (batch) = 0.0154275."""
    usage = TokenUsage(1000, 1000, 1000, 1000, 1000, endpoint="regional", inference_geo="us", batch=True)
    assert TABLE.cost("claude-sonnet-4-6", usage, at=AT).total_usd == Decimal("0.0154275")


def test_cost_bounds_and_the_claim_checker_accept_a_correctly_priced_regional_call() -> None:
    """The daemon checks watcher's recorded costs without knowing the endpoint: the premium is an optional modifier."""
    usage = TokenUsage(1000, 1000)
    assert TABLE.cost_bounds("claude-sonnet-4-5", usage, at=AT) == (Decimal("0.018"), Decimal("0.0198"))
    check = TABLE.claim_checker(Decimal(1))
    time_us = int(AT.timestamp()) * 10**6
    assert check("claude-sonnet-4-5", time_us, (1000, 0, 0, 0, 1000, 0), False, 19_800_000) is None
    assert check("claude-sonnet-4-5", time_us, (1000, 0, 0, 0, 1000, 0), False, 19_800_001) is not None
    # Opus 4.1 has no premium: a claim at 1.1x its price is off
    assert check("claude-opus-4-1", time_us, (1000, 0, 0, 0, 1000, 0), False, 99_000_000) is not None


def test_the_ceiling_includes_the_premium_only_when_asked_and_only_where_it_applies() -> None:
    """Sonnet 4.5: 10000 prompt tokens at the 1h-write rate 6 + 2000 output at 15 = 0.06 + 0.03 = 0.09; x 1.1."""
    assert TABLE.ceiling("claude-sonnet-4-5", at=AT).cost(10_000, 2_000) == pytest.approx(0.09)
    assert TABLE.ceiling("claude-sonnet-4-5", at=AT, regional=True).cost(10_000, 2_000) == pytest.approx(0.099)
    old = TABLE.ceiling("claude-opus-4-1", at=AT)
    assert TABLE.ceiling("claude-opus-4-1", at=AT, regional=True) == old


def test_the_reserver_prices_a_regional_call_with_the_premium() -> None:
    body = {"model": "claude-haiku-4-5", "max_tokens": 1000, "messages": HI}
    reserver = Reserver(TABLE, lambda: int(AT.timestamp()) * 10**9)
    plain = reserver.message(body)
    assert reserver.message(body, regional=True) == pytest.approx(plain * 1.1)
    assert reserver.message({**body, "model": "claude-opus-4-1"}, regional=True) == reserver.message(
        {**body, "model": "claude-opus-4-1"}
    )


def cost_span(capture: SpanCapture) -> dict[str, Any]:
    [span] = capture.cost_spans()
    return dict(span.attributes or {})


@pytest.mark.parametrize(
    ("model", "scope", "amount"),
    [
        ("global.anthropic.claude-sonnet-4-5-20250929-v1:0", "global", SONNET_GLOBAL),
        ("us.anthropic.claude-sonnet-4-5-20250929-v1:0", "regional", SONNET_REGIONAL),
        ("eu.anthropic.claude-sonnet-4-5-20250929-v1:0", "regional", SONNET_REGIONAL),
        ("apac.anthropic.claude-sonnet-4-5-20250929-v1:0", "regional", SONNET_REGIONAL),
        ("jp.anthropic.claude-sonnet-4-5-20250929-v1:0", "regional", SONNET_REGIONAL),
        ("au.anthropic.claude-sonnet-4-5-20250929-v1:0", "regional", SONNET_REGIONAL),
        ("anthropic.claude-sonnet-4-5-20250929-v1:0", "regional", SONNET_REGIONAL),
        ("us.anthropic.claude-opus-4-1-20250805-v1:0", "regional", OPUS_4_1),
    ],
)
def test_bedrock_calls_are_priced_by_their_model_ids_endpoint(
    capture: SpanCapture, fake_api: FakeAnthropic, model: str, scope: str, amount: float
) -> None:
    """Through the real AnthropicBedrock client: the span names its endpoint scope and costs the premium if due."""
    fake_api.reply(FakeReply(usage=USAGE))
    with anthropic.AnthropicBedrock(api_key="token", aws_region="us-east-1", base_url=fake_api.base_url) as bedrock:
        bedrock.messages.create(model=model, max_tokens=8, messages=HI)  # type: ignore[arg-type]
    attrs = cost_span(capture)
    assert attrs["watcher.endpoint.scope"] == scope
    assert attrs["gen_ai.usage.cost.amount"] == pytest.approx(amount, rel=1e-12)
    assert ("regional_endpoint" in list(attrs.get("watcher.cost.flags", ()))) == (amount == SONNET_REGIONAL)


@pytest.mark.parametrize(
    ("region", "scope", "amount"),
    [("us-east5", "regional", HAIKU_REGIONAL), ("global", "global", HAIKU_GLOBAL), ("eu", "regional", HAIKU_REGIONAL)],
)
def test_vertex_calls_are_priced_by_their_location(
    capture: SpanCapture, fake_api: FakeAnthropic, region: str, scope: str, amount: float
) -> None:
    """Through the real AnthropicVertex client, whose URL carries `locations/{region}`."""
    fake_api.reply(FakeReply(usage=USAGE))
    with anthropic.AnthropicVertex(
        region=region, project_id="proj", access_token="token", base_url=f"{fake_api.base_url}/v1"
    ) as vertex:
        vertex.messages.create(model="claude-haiku-4-5@20251001", max_tokens=8, messages=HI)  # type: ignore[arg-type]
    assert f"/locations/{region}/" in fake_api.requests[-1].path
    attrs = cost_span(capture)
    assert attrs["watcher.endpoint.scope"] == scope
    assert attrs["gen_ai.usage.cost.amount"] == pytest.approx(amount, rel=1e-12)


def test_a_vertex_copy_in_another_region_is_priced_by_its_own_location(
    capture: SpanCapture, fake_api: FakeAnthropic
) -> None:
    """`with_options(region=...)` makes a client with another location: each client's calls are priced by its own."""
    fake_api.default = FakeReply(usage=USAGE)
    with anthropic.AnthropicVertex(
        region="global", project_id="proj", access_token="token", base_url=f"{fake_api.base_url}/v1"
    ) as vertex:
        for client in (vertex.with_options(region="europe-west1"), vertex):
            client.messages.create(model="claude-haiku-4-5@20251001", max_tokens=8, messages=HI)  # type: ignore[arg-type]
    found = [(s.attributes or {})["watcher.endpoint.scope"] for s in capture.cost_spans()]
    amounts = [(s.attributes or {})["gen_ai.usage.cost.amount"] for s in capture.cost_spans()]
    assert found == ["regional", "global"]
    assert amounts == [pytest.approx(HAIKU_REGIONAL), pytest.approx(HAIKU_GLOBAL)]


def test_first_party_calls_carry_no_endpoint_and_no_premium(
    client: anthropic.Anthropic, fake_api: FakeAnthropic, capture: SpanCapture
) -> None:
    fake_api.reply(FakeReply(usage=USAGE))
    client.messages.create(model="claude-haiku-4-5", max_tokens=8, messages=HI)  # type: ignore[arg-type]
    attrs = cost_span(capture)
    assert "watcher.endpoint.scope" not in attrs
    assert attrs["gen_ai.usage.cost.amount"] == pytest.approx(HAIKU_GLOBAL, rel=1e-12)


class _Allowances:
    """Covers every call with one budget and keeps what the hook reserves."""

    def __init__(self) -> None:
        self.reserved: list[float] = []

    def budgets_for(self, request_type: str, model: str | None) -> tuple[str, ...]:
        return ("b",)

    def uncovered(self) -> None:
        return None

    def reserve(self, budgets: tuple[str, ...], amount: float) -> None:
        self.reserved.append(amount)


@pytest.fixture
def reserving(capture: SpanCapture) -> Iterator[_Allowances]:
    """The instrumented hook, with allowances that keep each reserved amount."""
    recorder = _hook._installed[-1][0]
    allowances = _Allowances()
    previous = _middleware._active.hook
    _middleware.set_hook(Hook(recorder, None, allowances, Reserver(TABLE, lambda: int(AT.timestamp()) * 10**9)))  # type: ignore[arg-type]
    try:
        yield allowances
    finally:
        _middleware.set_hook(previous)


def test_the_hook_reserves_a_regional_bedrock_call_with_the_premium(
    reserving: _Allowances, fake_api: FakeAnthropic
) -> None:
    """The worst case reserved before a regional call includes the premium, so it stays at or above the cost."""
    body = {"max_tokens": 1000, "messages": HI}
    with anthropic.AnthropicBedrock(api_key="token", aws_region="us-east-1", base_url=fake_api.base_url) as bedrock:
        for prefix in ("global.", "us."):
            bedrock.messages.create(model=f"{prefix}anthropic.claude-sonnet-4-5-20250929-v1:0", **body)  # type: ignore[call-overload]
    reserver = Reserver(TABLE, lambda: int(AT.timestamp()) * 10**9)
    plain = reserver.message({"model": "claude-sonnet-4-5", **body})
    assert reserving.reserved == [pytest.approx(plain), pytest.approx(plain * 1.1)]


def test_the_hook_reserves_a_regional_vertex_call_with_the_premium(
    reserving: _Allowances, fake_api: FakeAnthropic
) -> None:
    body = {"model": "claude-sonnet-4-5@20250929", "max_tokens": 1000, "messages": HI}
    for region in ("global", "us-east5"):
        with anthropic.AnthropicVertex(
            region=region, project_id="proj", access_token="token", base_url=f"{fake_api.base_url}/v1"
        ) as vertex:
            vertex.messages.create(**body)  # type: ignore[call-overload]
    plain = Reserver(TABLE, lambda: int(AT.timestamp()) * 10**9).message(body)
    assert reserving.reserved == [pytest.approx(plain), pytest.approx(plain * 1.1)]


def foreign_span(model: str) -> SpanRecord:
    """Another instrumentation's Bedrock span (OpenLLMetry style): request model as sent, response model plain."""
    attributes: dict[str, object] = {
        "gen_ai.system": "aws.bedrock",
        "gen_ai.request.model": model,
        "gen_ai.response.model": "claude-sonnet-4-5-20250929",
        "gen_ai.usage.input_tokens": 1000,
        "gen_ai.usage.output_tokens": 1000,
    }
    end_ns = int(AT.timestamp()) * 10**9
    return SpanRecord("ab" * 16, "cd" * 8, "chat", end_ns, attributes, {"service.name": "app"})


@pytest.mark.parametrize(
    ("model", "total"),
    [
        ("us.anthropic.claude-sonnet-4-5-20250929-v1:0", "0.0198"),
        ("anthropic.claude-sonnet-4-5-20250929-v1:0", "0.0198"),
        ("global.anthropic.claude-sonnet-4-5-20250929-v1:0", "0.018"),
    ],
)
def test_the_daemon_prices_a_foreign_bedrock_span_by_its_model_ids_endpoint(model: str, total: str) -> None:
    """The premium follows the request's Bedrock id, though the response names the plain model."""
    [entry] = normalize([foreign_span(model)], TABLE).entries
    assert entry.cost_usd == Decimal(total)
