"""Every dashboard panel and alert rule returns data from a real Prometheus scraping a real daemon fed by the SDK."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import anthropic
import pytest
import yaml
from _support import metrics_text, sample, wait_for

import watcher
from watcher._fake._daemon_process import free_port
from watcher.testing import DaemonProcess, FakeAnthropic, FakeReply

ROOT = Path(__file__).resolve().parents[1]
PROMETHEUS = shutil.which("prometheus")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        PROMETHEUS is None,
        reason="no `prometheus` binary on PATH: install Debian's `prometheus` package (.ci/run does, as root)",
    ),
]

RANGE = "5m"
GRAFANA_BUILTINS = {"__rate_interval": "1m", "__range": RANGE, "__range_s": "300", "__interval": "15s"}
HI: Any = [{"role": "user", "content": "hi"}]
# haiku 4.5: 1000 in x $1 + 100 out x $5 per million = $0.0015 a call, one "chat" call a wave.
# chat-alert ends at 0.003 / 0.0035 = 86%: past its alert ratio, under its kill ratio.
BUDGETS = """
[[budgets]]
name = "chat-alert"
limit_usd = 0.0035
period = "month"
scope = { request_type = "chat" }

[[budgets]]
name = "extraction-kill"
limit_usd = 0.001
period = "month"
scope = { request_type = "extraction" }

[[budgets]]
name = "all-under"
limit_usd = 100
period = "month"
"""


@dataclass
class Prometheus:
    """A real Prometheus on a free loopback port, scraping the daemon every second as job `watcher`."""

    process: subprocess.Popen[bytes]
    url: str
    log: Path

    @classmethod
    def start(cls, target: str, workdir: Path) -> Prometheus:
        rule_files = _rules_without_intervals(workdir)
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(path) for path in rule_files],
            "scrape_configs": [{"job_name": "watcher", "static_configs": [{"targets": [target]}]}],
        }
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        port = free_port()
        log = workdir / "prometheus.log"
        command = [
            str(PROMETHEUS),
            f"--config.file={workdir / 'prometheus.yml'}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ]
        with log.open("wb") as out:
            process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        prometheus = cls(process, f"http://127.0.0.1:{port}", log)
        wait_for(prometheus.ready, "Prometheus to become ready")
        return prometheus

    def ready(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"prometheus exited with {self.process.returncode}:\n{self.log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as reply:
                return bool(reply.status == 200)
        except urllib.error.HTTPError as starting:  # 503 while it loads
            starting.close()
            return False
        except OSError:
            return False

    def api(self, path: str, **params: str) -> Any:
        """The `data` of a successful API answer; an error (a query that does not parse) fails with its message."""
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        try:
            with urllib.request.urlopen(f"{self.url}/api/v1/{path}{query}", timeout=10) as reply:
                answer = json.loads(reply.read())
        except urllib.error.HTTPError as refused:
            with refused:
                answer = json.loads(refused.read())
        assert answer["status"] == "success", f"{path} {params}: {answer.get('error')}"
        return answer["data"]

    def query(self, expr: str) -> list[Any]:
        """The instant query's result now: a vector's samples, or a scalar as one sample."""
        data = self.api("query", query=expr)
        return [{"metric": {}, "value": data["result"]}] if data["resultType"] == "scalar" else data["result"]

    def value(self, expr: str) -> float | None:
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else None

    def rules(self) -> list[dict[str, Any]]:
        return [rule for group in self.api("rules")["groups"] for rule in group["rules"]]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)


def rule_files() -> list[Path]:
    """The rule files, as deploy/prometheus.yml loads them: `*-rules.yml` (beside them are their promtool tests)."""
    return sorted((ROOT / "alerts" / "prometheus").glob("*-rules.yml"))


def _rules_without_intervals(workdir: Path) -> list[Path]:
    """Copies of the repo's rule files with any group `interval` dropped, so they evaluate every second here.

    Only the evaluation schedule changes; the expressions are the files' own.
    """
    copies = []
    for number, path in enumerate(rule_files()):
        document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        for group in document.get("groups", []):
            group.pop("interval", None)
        copy = workdir / f"rules-{number}-{path.name}"
        copy.write_text(yaml.safe_dump(document))
        copies.append(copy)
    return copies


@contextmanager
def client_of(service: str, daemon: DaemonProcess, fake: FakeAnthropic) -> Iterator[anthropic.Anthropic]:
    """An SDK client instrumented by watcher as the application `service`, exporting to the daemon; flushed after."""
    previous = os.environ.get("OTEL_SERVICE_NAME")
    os.environ["OTEL_SERVICE_NAME"] = service
    watcher.instrument(watcher.Settings(endpoint=daemon.url, killswitch_poll_s=0))
    try:
        with anthropic.Anthropic(base_url=fake.base_url, api_key="test-key") as client:
            yield client
        assert watcher.flush()
    finally:
        watcher.uninstrument()
        if previous is None:
            del os.environ["OTEL_SERVICE_NAME"]
        else:
            os.environ["OTEL_SERVICE_NAME"] = previous


def send_wave(daemon: DaemonProcess, fake: FakeAnthropic) -> None:
    """Plain, cached, batched and estimate-priced calls from two services, through the real SDK and the hook."""
    with client_of("checkout-api", daemon, fake) as client:
        fake.reply(FakeReply(usage={"input_tokens": 1000, "output_tokens": 100}))
        with watcher.request_type("chat"):
            client.messages.create(model="claude-haiku-4-5", max_tokens=64, messages=HI)
        cached = {"input_tokens": 100, "output_tokens": 200, "cache_read_input_tokens": 5000}
        fake.reply(FakeReply(usage={**cached, "cache_creation_input_tokens": 2000}))
        with watcher.request_type("extraction"):
            client.messages.create(model="claude-sonnet-4-6", max_tokens=256, messages=HI)
    with client_of("nightly-jobs", daemon, fake) as client:
        fake.reply(*(FakeReply(usage={"input_tokens": 3000, "output_tokens": 300}) for _ in range(2)))
        requests: Any = [
            {"custom_id": f"doc-{i}", "params": {"model": "claude-haiku-4-5", "max_tokens": 64, "messages": HI}}
            for i in range(2)
        ]
        with watcher.request_type("summarize"):
            batch = client.messages.batches.create(requests=requests)
        assert len(list(client.messages.batches.results(batch.id))) == 2
        fake.reply(FakeReply(usage={"input_tokens": 400, "output_tokens": 40}))
        with watcher.request_type("research"):
            client.messages.create(model="claude-nova-1", max_tokens=64, messages=HI)


def send_malformed_span(daemon: DaemonProcess, span_id: str) -> None:
    """An OTLP/JSON span claiming a negative token count, which the daemon must reject (and count)."""
    attributes = [
        {"key": "gen_ai.provider.name", "value": {"stringValue": "anthropic"}},
        {"key": "gen_ai.usage.input_tokens", "value": {"intValue": "-5"}},
        {"key": "gen_ai.usage.output_tokens", "value": {"intValue": "3"}},
    ]
    now = time.time_ns()
    span = {
        "traceId": "0af7651916cd43dd8448eb211c80319c",
        "spanId": span_id,
        "name": "chat claude-haiku-4-5",
        "kind": 3,
        "startTimeUnixNano": str(now - 1000),
        "endTimeUnixNano": str(now),
        "attributes": attributes,
    }
    resource = {"attributes": [{"key": "service.name", "value": {"stringValue": "broken-app"}}]}
    body = json.dumps({"resourceSpans": [{"resource": resource, "scopeSpans": [{"spans": [span]}]}]}).encode()
    request = urllib.request.Request(
        f"{daemon.url}/v1/traces", data=body, method="POST", headers={"content-type": "application/json"}
    )
    urllib.request.urlopen(request, timeout=10).close()


def stored_by_daemon(daemon: DaemonProcess) -> float:
    return sample(metrics_text(daemon.url), "watcher_spans_stored_total")


def wait_for_scrape(prometheus: Prometheus, daemon: DaemonProcess) -> None:
    """Returns once Prometheus has scraped every span the daemon has stored so far."""
    stored = stored_by_daemon(daemon)
    wait_for(lambda: prometheus.value("watcher_spans_stored_total") == stored, f"a scrape showing {stored} spans")


@dataclass
class Stack:
    """The running daemon and the Prometheus scraping it, filled with traffic."""

    prometheus: Prometheus
    daemon: DaemonProcess


def fill(prometheus: Prometheus, daemon: DaemonProcess) -> None:
    """Two waves of traffic, each seen by a scrape; then a failed alert delivery and every rule evaluated."""
    wait_for(lambda: prometheus.value('up{job="watcher"}') == 1, "the daemon's target to be up")
    with FakeAnthropic() as fake:
        for wave in range(2):
            send_malformed_span(daemon, f"b7ad6b716920333{wave}")
            send_wave(daemon, fake)
            wait_for_scrape(prometheus, daemon)
    wait_for(lambda: prometheus.value("watcher_alert_failures_total > 0"), "a failed alert delivery")
    wait_for(lambda: prometheus.value("watcher_spans_rejected_total > 0"), "a scrape showing the rejected spans")
    wait_for(lambda: all(r["health"] != "unknown" for r in prometheus.rules()), "every rule to be evaluated")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A daemon with three budgets and a failing alert URL, and Prometheus, both stopped after the module.

    Module-scoped: every test below reads the same Prometheus, which takes a few seconds to fill.
    """
    config = f'[alerts]\nurls = ["json://127.0.0.1:{free_port()}/watcher"]\n{BUDGETS}'
    daemon = DaemonProcess(config).start()
    try:
        prometheus = Prometheus.start(f"127.0.0.1:{daemon.port}", tmp_path_factory.mktemp("prometheus"))
        try:
            fill(prometheus, daemon)
            yield Stack(prometheus, daemon)
        finally:
            prometheus.stop()
    finally:
        daemon.stop()


class Relay:
    """A loopback relay in front of the daemon, so a Prometheus that cannot choose its format can be made to.

    Prometheus before 2.49 has no `scrape_protocols` and always prefers OpenMetrics. The relay
    replaces the scraper's `Accept` with `accept` (None passes it on as sent), relays the answer
    as the daemon gave it (body, gzip, Content-Type), and records every Content-Type it relayed.
    """

    def __init__(self, daemon_url: str, accept: str | None) -> None:
        self.served: list[str] = []
        relay = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                headers = {
                    "accept": self.headers.get("accept", "") if accept is None else accept,
                    "accept-encoding": self.headers.get("accept-encoding", ""),
                }
                request = urllib.request.Request(daemon_url + self.path, headers=headers)
                with urllib.request.urlopen(request, timeout=10) as reply:
                    body, answer = reply.read(), reply.headers
                relay.served.append(answer["content-type"])
                self.send_response(200)
                for name in ("content-type", "content-encoding"):
                    if answer[name]:
                        self.send_header(name, answer[name])
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.target = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, name="relay", daemon=True).start()

    def formats(self) -> set[str]:
        """The media types (without parameters) of every answer relayed so far."""
        return {content_type.split(";", 1)[0] for content_type in list(self.served)}

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Scraped:
    """A daemon, the relay in front of it, and the Prometheus scraping through the relay in `format`."""

    format: str
    daemon: DaemonProcess
    relay: Relay
    prometheus: Prometheus


OPENMETRICS, TEXT = "application/openmetrics-text", "text/plain"


@pytest.fixture(params=[OPENMETRICS, TEXT])
def scraped(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Scraped]:
    """A fresh daemon scraped by Prometheus in one format: OpenMetrics as Prometheus asks for it, or the text
    format 0.0.4 (the relay sets `Accept` to it, as `scrape_protocols: [PrometheusText0.0.4]` would)."""
    daemon = DaemonProcess().start()
    relay = Relay(daemon.url, None if request.param == OPENMETRICS else "text/plain;version=0.0.4")
    try:
        prometheus = Prometheus.start(relay.target, tmp_path)
        try:
            yield Scraped(request.param, daemon, relay, prometheus)
        finally:
            prometheus.stop()
    finally:
        relay.stop()
        daemon.stop()


def test_prometheus_ingests_a_counter_and_process_metrics_in_either_format(scraped: Scraped) -> None:
    """Served OpenMetrics or the text format, Prometheus ingests watcher's counters and the daemon's process_*
    metrics, and the text format brings no `_created` series."""
    p = scraped.prometheus
    wait_for(lambda: p.value('up{job="watcher"}') == 1, "the daemon's target to be up")
    send_malformed_span(scraped.daemon, "b7ad6b7169203331")
    rejected = 'watcher_spans_rejected_total{reason="malformed"}'
    wait_for(lambda: p.value(rejected) == 1, "a scrape showing the rejected span")
    assert (p.value('process_resident_memory_bytes{job="watcher"}') or 0) > 0
    assert (p.value('process_start_time_seconds{job="watcher"}') or 0) > 0
    assert scraped.relay.formats() == {scraped.format}
    if scraped.format == TEXT:
        assert not p.query('{__name__=~".+_created"}')


def substitute(expr: str, values: dict[str, str]) -> str:
    """What Grafana sends: `$var` and `${var}` replaced (multi-value variables at All are `.*`)."""
    return re.sub(r"\$\{?(\w+)\}?", lambda m: values[m[1]], expr)


def dashboard_queries() -> list[tuple[str, str]]:
    """(where, PromQL) for every target of every panel of every committed dashboard, variables substituted."""
    found = []
    for path in sorted((ROOT / "dashboards" / "grafana").glob("*.json")):
        board = json.loads(path.read_text(encoding="utf-8"))
        values = {v["name"]: ".*" for v in board["templating"]["list"]} | GRAFANA_BUILTINS
        for panel in board["panels"] + [p for row in board["panels"] for p in row.get("panels", [])]:
            for target in panel.get("targets", []):
                expr = substitute(target["expr"], values)
                found.append((f"{path.stem} / {panel['title']} / {target['refId']}", expr))
    return found


COMPARISON_OR_SKIPPED = re.compile(
    r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|\{[^}]*\}|\[[^\]]*\]|(==|!=|>=|<=|>(?!=)|<(?!=))(?!\s*bool\b)'
)


def variable_queries() -> list[tuple[str, str, str]]:
    """(where, label, series selector) of every `label_values(selector, label)` variable, with `.*` for All."""
    found = []
    for path in sorted((ROOT / "dashboards" / "grafana").glob("*.json")):
        variables = json.loads(path.read_text(encoding="utf-8"))["templating"]["list"]
        values = {v["name"]: ".*" for v in variables}
        for variable in variables:
            selector, label = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", variable["query"]["query"]).groups()  # type: ignore[union-attr]
            found.append((f"{path.stem} / ${variable['name']}", label, substitute(selector, values)))
    return found


def without_filters(expr: str) -> str:
    """The expression with every comparison made `bool` and every absent() made present.

    An alert rule's expression is empty while its condition does not hold (the daemon is up,
    nothing is rejected); this form still proves that it runs over real series. Strings, label
    matchers and range selectors are left as they are.
    """
    text = COMPARISON_OR_SKIPPED.sub(lambda m: f"{m[1]} bool" if m[1] else m[0], expr)
    return re.sub(r"\babsent(_over_time)?\(", lambda m: "count_over_time(" if m[1] else "(", text)


def no_data(prometheus: Prometheus, expr: str) -> str:
    """Why `expr` shows nothing on a panel ("" when it returns numbers): an error, no series, or NaN."""
    try:
        result = prometheus.query(expr)
    except AssertionError as error:
        return str(error).splitlines()[0]
    if not result:
        return "no series"
    return "NaN" if any(math.isnan(float(sample["value"][1])) for sample in result) else ""


def test_the_traffic_crossed_one_budgets_alert_ratio_and_another_kill_ratio_and_an_alert_failed(stack: Stack) -> None:
    """The scenario the queries run against: one budget past 80%, one past 120% (switch engaged), one under,
    failed alert deliveries, rejected spans, and spend from both services."""
    p = stack.prometheus
    assert 0.8 <= (p.value('watcher_budget_used_ratio{budget="chat-alert"}') or 0) < 1.2
    assert (p.value('watcher_budget_used_ratio{budget="extraction-kill"}') or 0) >= 1.2
    assert p.value('watcher_killswitch_engaged{budget="extraction-kill"}') == 1
    assert (p.value('watcher_budget_used_ratio{budget="all-under"}') or 1) < 0.8
    assert p.value('watcher_killswitch_engaged{budget="chat-alert"}') == 0
    assert (p.value("sum(watcher_alert_failures_total)") or 0) > 0
    assert p.value('watcher_spans_rejected_total{reason="malformed"}') == 2
    services = {s["metric"]["service"] for s in p.query("watcher_requests_total")}
    assert services == {"checkout-api", "nightly-jobs"}


def test_every_metric_the_dashboards_and_rules_name_is_exported(stack: Stack) -> None:
    """Each watcher_* metric a panel or rule queries has series in Prometheus (a missing one is named)."""
    exprs = [expr for _, expr in dashboard_queries()] + [rule["query"] for rule in stack.prometheus.rules()]
    names = sorted({name for expr in exprs for name in re.findall(r"\bwatcher_\w+", expr)})
    missing = [name for name in names if not stack.prometheus.query(f"count({name})")]
    assert not missing, f"metrics with no series: {missing}"


def test_every_dashboard_query_returns_data(stack: Stack) -> None:
    """Every target of every panel returns at least one number (not NaN) for the traffic sent."""
    problems = [(where, expr, no_data(stack.prometheus, expr)) for where, expr in dashboard_queries()]
    empty = [f"{where} ({why}): {expr}" for where, expr, why in problems if why]
    assert not empty, "panels with no data:\n" + "\n".join(empty)


def test_every_dashboard_variable_lists_values(stack: Stack) -> None:
    """Each variable's label_values() query, asked the way Grafana asks it, lists at least one value."""
    empty = [
        f"{where}: label {label} of {selector}"
        for where, label, selector in variable_queries()
        if not stack.prometheus.api(f"label/{label}/values", **{"match[]": selector})
    ]
    assert not empty, "variables with no values:\n" + "\n".join(empty)


def test_every_rule_expression_returns_data(stack: Stack) -> None:
    """Each rule returns series; one whose condition does not hold here must still see series with `bool`."""
    rules = stack.prometheus.rules()
    if not rule_files():
        pytest.skip("no rule files in alerts/prometheus yet")
    assert rules, "rule files exist but Prometheus loaded no rules"
    empty = [
        f"{rule['name']}: {rule['query']}"
        for rule in rules
        if not stack.prometheus.query(rule["query"]) and not stack.prometheus.query(without_filters(rule["query"]))
    ]
    assert not empty, "rules whose expressions see no series:\n" + "\n".join(empty)


def test_every_loaded_rule_group_is_healthy(stack: Stack) -> None:
    """Prometheus loaded a group from every rule file and evaluates every rule without error."""
    if not rule_files():
        pytest.skip("no rule files in alerts/prometheus yet")
    groups = stack.prometheus.api("rules")["groups"]
    assert len({group["file"] for group in groups}) == len(rule_files())
    sick = [(r["name"], r["health"], r.get("lastError")) for g in groups for r in g["rules"] if r["health"] != "ok"]
    assert not sick, sick
