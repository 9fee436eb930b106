"""The `watcher` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ._version import __version__

__all__ = ["main"]


def _price(args: argparse.Namespace) -> int:
    from .pricing import TokenUsage, load_price_table

    table = load_price_table(args.prices_file)
    usage = TokenUsage(
        input_tokens=args.input,
        output_tokens=args.output,
        cache_read_tokens=args.cache_read,
        cache_write_5m_tokens=args.cache_write_5m,
        cache_write_1h_tokens=args.cache_write_1h,
        web_search_requests=args.web_searches,
        batch=args.batch,
        inference_geo="us" if args.us_only else None,
        speed="fast" if args.fast else None,
    )
    cost = table.cost(args.model, usage)
    print(f"model        {args.model} (priced as {cost.model}, table {cost.pricing_version})")
    for part in ("input", "output", "cache_read", "cache_write", "tools"):
        print(f"{part:<12} ${getattr(cost, part + '_usd').normalize():f}")
    print(f"total        ${cost.total_usd.normalize():f}")
    if cost.estimated or cost.flags:
        print(f"flags        {', '.join(cost.flags) or '-'}{' (estimated)' if cost.estimated else ''}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from ._demo import run_demo

    return run_demo(sys.stdout)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="watcher", description="Spend observability for the Claude API.")
    parser.add_argument("--version", action="version", version=f"watcher {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="drive the fake API through the hook and print a cost breakdown")
    demo.set_defaults(run=_demo)
    price = commands.add_parser("price", help="price one request's usage exactly")
    price.add_argument("model")
    for flag in ("input", "output", "cache-read", "cache-write-5m", "cache-write-1h", "web-searches"):
        price.add_argument(f"--{flag}", type=int, default=0, metavar="N")
    price.add_argument("--batch", action="store_true", help="Message Batches result (50%% off tokens)")
    price.add_argument("--us-only", action="store_true", help="US-only inference (inference_geo=us)")
    price.add_argument("--fast", action="store_true", help="fast mode")
    price.add_argument("--prices-file", default=None, help="TOML file of price overrides")
    price.set_defaults(run=_price)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs one `watcher` command; returns its exit code."""
    args = _parser().parse_args(argv)
    return int(args.run(args))


if __name__ == "__main__":
    raise SystemExit(main())
