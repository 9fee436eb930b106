"""The second half of `watcher demo`: daemon, fake API and traffic through budgets, alerts and the hard stop."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import IO, Any

DEMO_BUDGETS = """
[[budgets]]
name = "extraction-daily"
limit_usd = 0.05
period = "day"
scope = { request_type = "extraction" }

[[budgets]]
name = "all-daily"
limit_usd = 5
period = "day"
"""
HI: list[Any] = [{"role": "user", "content": "Extract the invoice fields."}]


class _Printer:
    """A notifier that prints alerts into the demo's output instead of sending them."""

    def __init__(self, out: IO[str]) -> None:
        self.out = out

    def send(self, title: str, body: str) -> bool:
        print(f"\n  >>> ALERT: {title}\n      " + body.replace("\n", "\n      "), file=self.out)
        return True


def run_loop(out: IO[str]) -> int:
    """Starts a daemon on a free loopback port, drives 'extraction' traffic past 80% and up to the 120% line,
    shows the refusals of the calls that no longer fit under it."""
    import anthropic

    from .. import BudgetExceeded, Settings, instrument, request_type, uninstrument
    from .._instrument._hook import _installed, flush
    from ..budgets import parse_budgets
    from ..daemon import build
    from ..testing import FakeAnthropic, FakeReply

    state = Path(tempfile.mkdtemp(prefix="watcher-demo-"))
    running = build(
        Settings(listen="127.0.0.1:0", grpc_listen="", state_dir=state),
        budgets=parse_budgets(DEMO_BUDGETS),
        notifier=_Printer(out),
    ).start(tick_s=0.5)
    print(f"\nwatcher daemon at {running.address}; budget 'extraction-daily' is $0.05 a day", file=out)
    instrument(Settings(endpoint=running.address, killswitch_poll_s=0.2, export_delay_ms=50))
    poller: Any = _installed[-1][2]
    refused = 0
    try:
        with FakeAnthropic() as fake, anthropic.Anthropic(base_url=fake.base_url, api_key="demo") as client:
            for call in range(1, 41):
                fake.reply(FakeReply(usage={"input_tokens": 4000, "output_tokens": 600}))  # $0.007 on haiku 4.5
                try:
                    with request_type("extraction"):
                        client.messages.create(model="claude-haiku-4-5", max_tokens=1024, messages=HI)
                except BudgetExceeded as error:
                    refused += 1
                    print(f"  call {call:2}: refused: {error}", file=out)
                    if refused == 3:
                        break
                    continue
                flush()
                poller.refresh()
                running.dispatcher.deliver_due()
                print(f"  call {call:2}: ok, spend now ${_spend(running):.4f}", file=out)
    finally:
        uninstrument()
        _status(running, out)
        running.stop()
    return 0


def _spend(running: Any) -> float:
    return float(running.books.views["extraction-daily"].state.spend_usd)


def _status(running: Any, out: IO[str]) -> None:
    print("\nwatcher status", file=out)
    budgets = {b["name"]: b for b in running.daemon.budgets(running.books.now())["budgets"]}
    for name, view in running.books.evaluate().items():
        state = budgets[name]["state"]
        print(
            f"  {name:<18} ${float(view.state.spend_usd):.4f} of ${float(view.budget.limit_usd):.2f} "
            f"({100 * float(view.state.used_ratio):.0f}%), {state}, resets {view.resets_at:%Y-%m-%d %H:%M} UTC",
            file=out,
        )
