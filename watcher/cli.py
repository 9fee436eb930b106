"""The `watcher` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from . import _commands
from ._commands import Stop, load_settings
from ._version import __version__
from .exceptions import ConfigError

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


def _serve(args: argparse.Namespace) -> int:
    import logging

    from .daemon import serve

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = load_settings(args.config, **({"listen": args.listen} if args.listen else {}))
    return serve(settings, type(settings).config_file())


def _config_show(args: argparse.Namespace) -> int:
    from ._config_show import render_json, render_text, shown

    settings = load_settings(args.config)
    render = render_json if args.json else render_text
    print(render(shown(settings), type(settings).config_file()))
    return 0


def _demo(args: argparse.Namespace) -> int:
    from ._demo import run_demo

    return run_demo(sys.stdout)


def _traffic(args: argparse.Namespace) -> int:
    import logging

    from ._demo import run_traffic

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("watcher.traffic").setLevel(logging.INFO)
    try:
        stats = run_traffic(rate=args.rate, count=args.count, seed=args.seed)
    except ValueError as error:
        print(f"watcher traffic: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # the usual way to stop it; its spans were flushed on the way out
        return 0
    print(f"{stats.calls} calls, {stats.refused} refused by a kill switch")
    return 0


_CONFIG_HELP = "TOML file of settings and [[budgets]] (default WATCHER_CONFIG, else ./watcher.toml if present)"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="watcher", description="Spend observability for the Claude API.")
    parser.add_argument("--version", action="version", version=f"watcher {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="drive the fake API through the hook and print a cost breakdown")
    demo.set_defaults(run=_demo)
    serve = commands.add_parser("serve", help="run the daemon: OTLP ingest, ledger, budgets, kill switches")
    serve.add_argument("--listen", help="HOST:PORT (default WATCHER_LISTEN or 127.0.0.1:4318)")
    serve.add_argument("--config", metavar="FILE", help=_CONFIG_HELP)
    serve.set_defaults(run=_serve)
    config = commands.add_parser("config", help="the settings in effect").add_subparsers(dest="action", required=True)
    show = config.add_parser("show", help="each setting's value and where it came from, secrets masked")
    show.add_argument("--config", metavar="FILE", help=_CONFIG_HELP)
    show.add_argument("--json", action="store_true", help="one JSON document, for scripts")
    show.set_defaults(run=_config_show)
    database = commands.add_parser("db", help="the daemon's databases").add_subparsers(dest="action", required=True)
    upgrade = database.add_parser(
        "upgrade", help="migrate the ledger and the daemon's state to this watcher's schema, then exit"
    )
    upgrade.add_argument("--config", metavar="FILE", help=_CONFIG_HELP)
    upgrade.set_defaults(run=_commands.db_upgrade)
    status = commands.add_parser("status", help="each budget's spend, limit, percent, state and reset time")
    status.set_defaults(run=_commands.status)
    report = commands.add_parser("report", help="cost breakdown from the daemon's ledger (or a ledger file)")
    report.add_argument("--since", default="7d", help="how far back: 24h, 7d, 30d, or an ISO date (default 7d)")
    report.add_argument("--until", default=None, help="end of the report: 24h, 7d, or an ISO date/time (default now)")
    report.add_argument(
        "--ledger", metavar="PATH", help="read this ledger file instead of asking the daemon at WATCHER_ENDPOINT"
    )
    report.add_argument("--by", default="request_type", choices=["request_type", "model", "service", "environment"])
    report.set_defaults(run=_commands.report)
    kill = commands.add_parser("killswitch", help="show, engage or release kill switches on the daemon")
    kill.add_argument("action", choices=["status", "engage", "release"])
    kill.add_argument("name", nargs="?", help="budget name (engage, release)")
    kill.add_argument(
        "--until", help="release only until TIME: 30m, 2h, 1d from now, or an ISO time (default: the period's end)"
    )
    kill.set_defaults(run=_commands.killswitch)
    traffic = commands.add_parser("traffic", help="demo traffic: real SDK calls to a local fake API, spans over OTLP")
    traffic.add_argument("--rate", type=float, default=2.0, help="calls a second (default 2)")
    traffic.add_argument("--count", type=int, default=None, help="stop after N calls (default: run until stopped)")
    traffic.add_argument("--seed", type=int, default=None, help="seed for the token-count jitter")
    traffic.set_defaults(run=_traffic)
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
    """Runs one `watcher` command; returns its exit code.

    A ConfigError (a config file, setting or argument that cannot be used) is printed as its one
    line on stderr, without a traceback, and exits 2: the message already says where and what to fix.
    """
    args = _parser().parse_args(argv)
    try:
        return int(args.run(args))
    except ConfigError as error:
        print(" ".join(str(error).splitlines()), file=sys.stderr)
        return 2
    except Stop as stop:
        print(stop, file=sys.stderr)
        return stop.code


if __name__ == "__main__":
    raise SystemExit(main())
