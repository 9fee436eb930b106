"""Time to price one call, against the bare Decimal arithmetic it cannot avoid, in the same run.

Usage: python bench/pricing.py [--number N]

Baseline: five Decimal multiplications and a sum (the arithmetic of any exact cost). Measured:
`PriceTable.cost` for a known model, a Bedrock id, a model with a dated price change, and an
unknown model (estimated), each with a fresh `TokenUsage.from_anthropic` as the hook does it.
"""

from __future__ import annotations

import argparse
import timeit
from decimal import Decimal

from watcher.pricing import TokenUsage, default_price_table

USAGE = {
    "input_tokens": 1200,
    "output_tokens": 300,
    "cache_read_input_tokens": 8000,
    "cache_creation_input_tokens": 500,
    "cache_creation": {"ephemeral_5m_input_tokens": 200, "ephemeral_1h_input_tokens": 300},
    "inference_geo": "us",
}
RATES = [Decimal("0.000003"), Decimal("0.000015"), Decimal("0.0000003"), Decimal("0.00000375"), Decimal("0.000006")]
COUNTS = [Decimal(n) for n in (1200, 300, 8000, 200, 300)]


def best_us(statement: object, number: int) -> float:
    return min(timeit.repeat(statement, number=number, repeat=5)) / number * 1e6  # type: ignore[arg-type]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=50_000)
    args = parser.parse_args()
    table = default_price_table()
    baseline = best_us(lambda: sum(r * c for r, c in zip(RATES, COUNTS, strict=True)), args.number)
    print(f"baseline: bare Decimal arithmetic {baseline:.2f} us")
    for model in (
        "claude-sonnet-4-6",
        "us.anthropic.claude-haiku-4-5-20251001-v1:0",
        "claude-sonnet-5-5",
        "claude-sonnet-9",
    ):
        table.cost(model, TokenUsage.from_anthropic(USAGE))  # warm the name cache
        took = best_us(lambda m=model: table.cost(m, TokenUsage.from_anthropic(USAGE)), args.number)
        print(f"{model:45} {took:6.2f} us per call (usage + cost), ratio {took / baseline:5.1f}x baseline")


if __name__ == "__main__":
    main()
