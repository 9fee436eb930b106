"""Time to bound a request's worst-case cost before it is sent, against the size estimate it cannot avoid.

Usage: python bench/reserve.py [--number N]

Baseline: `input_tokens_bound` alone on the same body. Measured: `Reserver.message` on a typical
single-message request of about 3 KB (system prompt and one user text block), and on one of
about the same size with a client tool and a web-search tool. Target: well under 20 us per call.
"""

from __future__ import annotations

import argparse
import json
import timeit
from typing import Any

from watcher._instrument._estimate import input_tokens_bound
from watcher._instrument._reserve import Reserver
from watcher.pricing import default_price_table

PLAIN: dict[str, Any] = {
    "model": "claude-opus-5",
    "max_tokens": 4096,
    "system": "You are a careful assistant for a logistics company. " * 20,
    "messages": [{"role": "user", "content": [{"type": "text", "text": "Where is parcel 1234? " * 85}]}],
}
TOOLS: dict[str, Any] = {
    **PLAIN,
    "system": PLAIN["system"][:600],
    "tools": [
        {
            "name": "lookup",
            "description": "Look up a parcel by id. " * 4,
            "input_schema": {"type": "object", "properties": {"id": {"type": "string"}}, "required": ["id"]},
        },
        {"type": "web_search_20250305", "name": "web_search", "max_uses": 3},
    ],
}


def best_us(statement: object, number: int) -> float:
    return min(timeit.repeat(statement, number=number, repeat=5)) / number * 1e6  # type: ignore[arg-type]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=100_000)
    args = parser.parse_args()
    reserver = Reserver(default_price_table())
    for name, body in (("plain", PLAIN), ("tools", TOOLS)):
        size = len(json.dumps(body, separators=(",", ":")))
        reserver.message(body)  # warm the ceiling cache
        baseline = best_us(lambda b=body: input_tokens_bound(b), args.number)
        took = best_us(lambda b=body: reserver.message(b), args.number)
        print(f"{name} ({size} bytes): input_tokens_bound {baseline:5.2f} us, Reserver.message {took:5.2f} us per call")


if __name__ == "__main__":
    main()
