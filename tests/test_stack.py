"""The deployable stack works: compose file, Dockerfile, Collector and Prometheus configs, alert rules, apprise."""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from contextlib import closing
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import anthropic
import apprise
import pytest
import yaml
from _support import http, wait_for
from aiosmtpd.controller import Controller
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from pydantic import SecretStr
from test_daemon import _export_body

import watcher
from watcher import Settings
from watcher._demo import run_traffic
from watcher._fake._daemon_process import free_port
from watcher.daemon import AppriseNotifier, apprise_targets, build
from watcher.exceptions import ConfigError
from watcher.testing import DaemonProcess, FakeAnthropic, OTLPReceiver

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "alerts" / "prometheus"
TOKEN = "stack-test-token"
HI = [{"role": "user", "content": "hi"}]
_PROTOBUF = "application/x-protobuf"
PINNED = re.compile(r"^[\w./-]+:v?\d+\.\d+\.\d+[\w.-]*$")


def _stack_config() -> str:
    return (ROOT / "deploy" / "watcher.toml").read_text()


def _compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())  # type: ignore[no-any-return]


class Mailbox:
    """An SMTP server on loopback standing in for Mailpit; keeps each message's text."""

    def __init__(self) -> None:
        self.messages: list[str] = []
        self.port = free_port()
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(envelope.content.decode())
        return "250 OK"

    def __enter__(self) -> Mailbox:
        self._controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._controller.stop()


@pytest.fixture(scope="module")
def daemon() -> Iterator[DaemonProcess]:
    """A real daemon on the stack's config, with a token as in the stack (listening on loopback, gRPC off)."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("WATCHER_TOKEN", TOKEN)
        process = DaemonProcess(_stack_config()).start()
    yield process
    process.stop()


# --- alerts/apprise.yml ---------------------------------------------------------------------------


def test_the_apprise_example_parses_into_slack_and_email_targets_with_tags() -> None:
    """apprise reads alerts/apprise.yml: one Slack target and two email targets, each tagged."""
    config = apprise.AppriseConfig()
    assert config.add(str(ROOT / "alerts" / "apprise.yml"))
    targets = {(type(s).__name__, tuple(sorted(str(t) for t in s.tags))) for s in config.services()}
    assert targets == {
        ("NotifySlack", ("oncall", "slack", "watcher")),
        ("NotifyEmail", ("email", "oncall", "watcher")),
        ("NotifyEmail", ("email", "finance", "watcher")),
    }


def test_the_daemon_alerts_every_tagged_target_of_an_apprise_config(tmp_path: Path) -> None:
    """Tags do not filter the daemon's alerts: a tagged target in an apprise config file gets them."""
    received: list[bytes] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append(self.rfile.read(int(self.headers["content-length"])))
            self.send_response(200)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    config = tmp_path / "apprise.yml"
    hook = f"json://127.0.0.1:{server.server_address[1]}/hook"
    config.write_text(f"version: 1\ntag: watcher\nurls:\n  - {hook}:\n      - tag: finance, email\n")
    try:
        [target] = apprise_targets([], str(config)).values()
        assert target.send("watcher: budget alert", "85% used")
    finally:
        server.shutdown()
        server.server_close()
    assert json.loads(received[0])["title"] == "watcher: budget alert"


# --- deploy/watcher.toml --------------------------------------------------------------------------


def test_the_stack_alert_url_delivers_over_plain_smtp_without_login() -> None:
    """The stack's mailto:// URL, pointed at a local SMTP server instead of Mailpit, delivers the alert."""
    [url] = tomllib.loads(_stack_config())["alerts"]["urls"]
    assert "mailpit:1025" in url
    with Mailbox() as mailbox:
        assert AppriseNotifier(url.replace("mailpit:1025", f"127.0.0.1:{mailbox.port}")).send("watcher", "85% used")
    assert "oncall@example.com" in mailbox.messages[0]


def test_the_stack_config_listens_beyond_loopback_only_with_a_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """deploy/watcher.toml listens on all interfaces (HTTP and gRPC), so the daemon refuses to start without a token."""
    monkeypatch.setenv("WATCHER_CONFIG", str(ROOT / "deploy" / "watcher.toml"))
    settings = Settings(state_dir=tmp_path)
    assert (settings.listen, settings.grpc_listen) == ("0.0.0.0:4318", "0.0.0.0:4317")
    with pytest.raises(ConfigError, match="without a token"):
        build(settings, budgets=[])


def test_the_stack_daemon_serves_its_budgets_and_metrics_only_with_the_token(daemon: DaemonProcess) -> None:
    """The stack's budgets load, and /metrics needs the bearer token: Prometheus must send it."""
    status, body = http(f"{daemon.url}/v1/budgets", token=TOKEN)
    assert status == 200
    assert {b["name"] for b in json.loads(body)["budgets"]} == {"extraction-hourly", "agent-daily", "total-daily"}
    assert http(f"{daemon.url}/metrics")[0] == 401
    status, metrics = http(f"{daemon.url}/metrics", token=TOKEN)
    assert status == 200 and b'watcher_budget_limit_usd{budget="agent-daily"} 40.0' in metrics


def test_an_application_set_up_as_documented_sends_spans_to_the_collector_and_obeys_the_daemon(
    daemon: DaemonProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With docs/deploy.md's variables, spans go to the Collector's endpoint and kill switches come from the daemon."""
    with OTLPReceiver() as collector, FakeAnthropic() as fake:
        for name, value in {
            "OTEL_EXPORTER_OTLP_ENDPOINT": collector.endpoint,
            "WATCHER_ENDPOINT": daemon.url,
            "WATCHER_TOKEN": TOKEN,
            "OTEL_SERVICE_NAME": "checkout-api",
            "WATCHER_KILLSWITCH_POLL_S": "0.2",
            "WATCHER_FAIL_MODE": "closed",  # polls once before the first call: no race with the first poll
        }.items():
            monkeypatch.setenv(name, value)
        assert http(f"{daemon.url}/v1/killswitch/extraction-hourly/engage", b"", token=TOKEN)[0] == 200
        watcher.instrument()
        try:
            with anthropic.Anthropic(base_url=fake.base_url, api_key="k", open_telemetry=False) as client:
                with pytest.raises(watcher.BudgetExceeded), watcher.request_type("extraction"):
                    client.messages.create(model="claude-haiku-4-5", max_tokens=8, messages=HI)
                with watcher.request_type("summarise"):
                    client.messages.create(model="claude-haiku-4-5", max_tokens=8, messages=HI)
            assert watcher.flush()
        finally:
            watcher.uninstrument()
            http(f"{daemon.url}/v1/killswitch/extraction-hourly/release", b"", token=TOKEN)
        [span] = collector.wait_for(1)
    assert span.resource["service.name"] == "checkout-api"
    assert span.attributes["watcher.request_type"] == "summarise"


# --- Dockerfile -----------------------------------------------------------------------------------


def _dockerfile() -> str:
    return (ROOT / "Dockerfile").read_text()


def test_the_dockerfile_runs_the_daemon_as_a_non_root_user_from_a_pinned_base() -> None:
    """A pinned python:3.11 slim base, the package with its postgres extra (a fleet's replicas run this image) but
    without test extras, a non-root user, state on a volume."""
    text = _dockerfile()
    assert re.search(r"^FROM python:3\.11\.\d+-slim-\w+$", text, re.M)
    assert re.search(r'^RUN pip install "/src\[postgres\]" ', text, re.M) and "[test]" not in text
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert any(requirement.startswith("psycopg[") for requirement in extras["postgres"])
    user = re.findall(r"^USER (\S+)$", text, re.M)
    assert user and user[-1] not in ("root", "0")
    assert "ENV WATCHER_STATE_DIR=/var/lib/watcher" in text
    assert re.search(r"^EXPOSE 4318 4317$", text, re.M)
    assert 'ENTRYPOINT ["watcher"]' in text
    assert 'CMD ["serve", "--config", "/etc/watcher/watcher.toml"]' in text


def _healthcheck(url: str) -> int:
    """The exit code of the image's HEALTHCHECK command, run as written against `url`."""
    match = re.search(r"^HEALTHCHECK .*\\\n\s*CMD (\[.*\])$", _dockerfile(), re.M)
    assert match
    program, flag, code = json.loads(match.group(1))
    assert (program, flag) == ("python", "-c")
    env = {**os.environ, "WATCHER_HEALTHCHECK_URL": url}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, timeout=30).returncode


def test_the_image_healthcheck_passes_on_a_live_daemon_and_fails_without_one(daemon: DaemonProcess) -> None:
    """The HEALTHCHECK command, run as written, exits 0 on /healthz (no token needed) and non-zero when none answers."""
    assert _healthcheck(f"{daemon.url}/healthz") == 0
    assert _healthcheck(f"http://127.0.0.1:{free_port()}/healthz") != 0


def test_the_image_healthcheck_fails_while_the_ledger_cannot_commit_and_passes_after() -> None:
    """A daemon whose last commit failed (its ledger locked) is unhealthy to the image, and healthy after the next."""
    with (
        DaemonProcess() as process,
        closing(sqlite3.connect(process.state_dir / "ledger.db", isolation_level=None)) as other,
    ):
        other.execute("BEGIN IMMEDIATE")  # holds the write lock: the daemon's commit times out
        assert http(f"{process.url}/v1/traces", _export_body(0.001, "hc"), **{"content-type": _PROTOBUF})[0] == 503
        assert _healthcheck(f"{process.url}/healthz") != 0
        other.execute("ROLLBACK")
        assert http(f"{process.url}/v1/traces", _export_body(0.001, "hc"), **{"content-type": _PROTOBUF})[0] == 200
        assert _healthcheck(f"{process.url}/healthz") == 0


# --- deploy/otel-collector.yaml -------------------------------------------------------------------


def _collector() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "deploy" / "otel-collector.yaml").read_text())  # type: ignore[no-any-return]


def test_the_collector_pipelines_use_only_defined_components() -> None:
    """Every receiver, processor, exporter and extension the service names is configured, and each one is used."""
    config = _collector()
    service = config["service"]
    assert set(service["extensions"]) == set(config["extensions"])
    used: dict[str, set[str]] = {"receivers": set(), "processors": set(), "exporters": set()}
    for pipeline in service["pipelines"].values():
        for kind in used:
            assert set(pipeline.get(kind, [])) <= set(config[kind]), kind
            used[kind] |= set(pipeline.get(kind, []))
    assert used == {kind: set(config[kind]) for kind in used}
    assert "batch" in config["processors"]
    assert list(service["pipelines"]) == ["traces"]


def test_the_collector_takes_otlp_from_anywhere_and_forwards_with_retries_and_a_queue() -> None:
    """OTLP on 0.0.0.0:4317/4318; the otlphttp exporter goes to the compose service `watcher`, retrying and queueing."""
    config = _collector()
    protocols = config["receivers"]["otlp"]["protocols"]
    assert (protocols["grpc"]["endpoint"], protocols["http"]["endpoint"]) == ("0.0.0.0:4317", "0.0.0.0:4318")
    exporter = config["exporters"]["otlphttp/watcher"]
    assert exporter["endpoint"] == "http://watcher:4318"
    assert exporter["headers"] == {"authorization": "Bearer ${env:WATCHER_TOKEN}"}
    assert exporter["retry_on_failure"]["enabled"] and exporter["sending_queue"]["enabled"]
    assert "WATCHER_TOKEN" in _compose()["services"]["otel-collector"]["environment"]


def test_the_daemon_accepts_an_export_shaped_like_the_collectors(daemon: DaemonProcess) -> None:
    """What the otlphttp exporter sends (gzip protobuf to /v1/traces, its header with the token) is accepted."""
    exporter = _collector()["exporters"]["otlphttp/watcher"]
    headers = {k: v.replace("${env:WATCHER_TOKEN}", TOKEN) for k, v in exporter["headers"].items()}
    body = gzip.compress(ExportTraceServiceRequest().SerializeToString())
    url = f"{daemon.url}/v1/traces"
    kinds = {"content-type": "application/x-protobuf", "content-encoding": exporter["compression"]}
    assert http(url, data=body, **kinds, **headers)[0] == 200
    assert http(url, data=body, **kinds)[0] == 401


# --- alerts/prometheus and deploy/prometheus.yml --------------------------------------------------

needs_promtool = pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
needs_prometheus = pytest.mark.skipif(shutil.which("prometheus") is None, reason="prometheus is not installed")


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["promtool", *args], capture_output=True, text=True, timeout=60, cwd=RULES)


@needs_promtool
def test_the_alert_rules_are_valid() -> None:
    """`promtool check rules` accepts watcher-rules.yml."""
    result = _promtool("check", "rules", "watcher-rules.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 9 rules found" in result.stdout


@needs_promtool
def test_the_alert_rules_pass_their_unit_tests() -> None:
    """`promtool test rules`: every alert fires when it should and stays quiet when it should."""
    result = _promtool("test", "rules", "watcher-rules.test.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def _prometheus_config(tmp_path: Path, target: str, interval: str = "15s") -> Path:
    """deploy/prometheus.yml with this machine's paths: the repo's rules, a token file, a local target."""
    config = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())
    config["global"] = {"scrape_interval": interval, "evaluation_interval": interval}
    config["rule_files"] = [rule.replace("/etc/prometheus/rules", str(RULES)) for rule in config["rule_files"]]
    [job] = config["scrape_configs"]
    job["scrape_interval"] = interval
    job["authorization"]["credentials_file"] = str(tmp_path / "run" / "token")
    job["static_configs"] = [{"targets": [target]}]
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


@needs_promtool
def test_the_prometheus_config_is_valid_and_loads_only_the_rules(tmp_path: Path) -> None:
    """`promtool check config` accepts the scrape config; its rule glob finds the rules but not their unit tests."""
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "token").write_text(TOKEN)
    result = _promtool("check", "config", str(_prometheus_config(tmp_path, "watcher:4318")))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "watcher-rules.yml" in result.stdout and "watcher-rules.test.yml" not in result.stdout
    job = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())["scrape_configs"][0]
    assert job["job_name"] == "watcher" and job["static_configs"] == [{"targets": ["watcher:4318"]}]


def _prometheus_command(tmp_path: Path, config: Path, port: int) -> str:
    """The compose service's shell command, as the container's shell gets it, with this machine's paths."""
    [command] = _compose()["services"]["prometheus"]["command"]
    replaced = (
        command.replace("$$", "$")
        .replace("/run/watcher/token", str(tmp_path / "run" / "token"))
        .replace("/bin/prometheus ", f"{shutil.which('prometheus')} ")
        .replace("/etc/prometheus/prometheus.yml", str(config))
        .replace("--storage.tsdb.path=/prometheus", f"--storage.tsdb.path={tmp_path / 'data'}")
    )
    return f"{replaced} --web.listen-address=127.0.0.1:{port}"


def _firing(prometheus: str) -> dict[tuple[str, str], str]:
    status, body = http(f"{prometheus}/api/v1/alerts")
    alerts = json.loads(body)["data"]["alerts"] if status == 200 else []
    return {(a["labels"]["alertname"], a["labels"].get("budget", "")): a["state"] for a in alerts}


@needs_prometheus
def test_prometheus_scrapes_the_daemon_with_the_token_and_raises_budget_alerts(tmp_path: Path) -> None:
    """End to end: spend past a budget; the daemon emails the alert; Prometheus scrapes it and fires the rules."""
    (tmp_path / "run").mkdir()
    with Mailbox() as mailbox:
        stack = _stack_config().replace("mailpit:1025", f"127.0.0.1:{mailbox.port}")
        config = stack + '\n[[budgets]]\nname = "tiny"\nlimit_usd = 0.001\nperiod = "day"\n'
        with pytest.MonkeyPatch.context() as env:
            env.setenv("WATCHER_TOKEN", TOKEN)
            daemon = DaemonProcess(config).start()
        port = free_port()
        command = _prometheus_command(tmp_path, _prometheus_config(tmp_path, f"127.0.0.1:{daemon.port}", "1s"), port)
        with (tmp_path / "prometheus.log").open("w") as log:
            prometheus = subprocess.Popen(
                ["/bin/sh", "-c", command], env={**os.environ, "WATCHER_TOKEN": TOKEN}, stderr=log
            )
        try:
            settings = Settings(endpoint=daemon.url, token=SecretStr(TOKEN), killswitch_poll_s=0)
            run_traffic(count=4, settings=settings, seed=1, sleep=lambda _: None)
            wait_for(lambda: any("tiny" in m for m in mailbox.messages), "the alert email")
            url = f"http://127.0.0.1:{port}"
            firing = wait_for(
                lambda: (
                    {k for k, v in _firing(url).items() if v == "firing"}
                    >= {("WatcherBudgetAlertThreshold", "tiny"), ("WatcherKillSwitchEngaged", "tiny")}
                    and _firing(url)
                ),
                "the budget alerts to fire",
            )
        finally:
            prometheus.terminate()
            prometheus.wait(timeout=30)
            daemon.stop()
    assert firing[("WatcherBudgetProjectedOverLimit", "tiny")] == "pending"  # it waits 30 minutes to fire
    assert ("WatcherBudgetAlertThreshold", "total-daily") not in firing
    # Only firing alerts count: WatcherAbsent may be pending from before the first scrape.
    fired = {name for (name, _), state in firing.items() if state == "firing"}
    assert not fired & {"WatcherDown", "WatcherAbsent", "WatcherSpansRejected"}
    assert (tmp_path / "run" / "token").read_text() == TOKEN


# --- docker-compose.yml ---------------------------------------------------------------------------


def test_compose_pins_every_image_and_puts_the_traffic_generator_in_the_demo_profile() -> None:
    """Five services by default; images pinned to explicit versions; `traffic` only under --profile demo; named
    volumes. (The fleet profile's services and PostgreSQL's two-part version: tests/test_stack_fleet.py.)"""
    services = {name: s for name, s in _compose()["services"].items() if s.get("profiles") != ["fleet"]}
    assert set(services) == {"watcher", "otel-collector", "prometheus", "grafana", "mailpit", "traffic"}
    for name, service in services.items():
        if "build" not in service:
            assert PINNED.match(service["image"]), f"{name}: {service['image']} is not pinned to a version"
    assert services["grafana"]["image"].startswith("grafana/grafana:11.")
    assert services["otel-collector"]["image"].startswith("otel/opentelemetry-collector-contrib:")
    assert [name for name, s in services.items() if s.get("profiles")] == ["traffic"]
    assert services["traffic"]["profiles"] == ["demo"]
    assert services["traffic"]["command"][0] == "traffic"
    assert "ledger:/var/lib/watcher" in services["watcher"]["volumes"]
    assert set(_compose()["volumes"]) >= {"ledger"}


def test_compose_mounts_only_paths_that_exist_in_the_repository() -> None:
    """Every host path a service mounts is a file or directory of this repository."""
    compose = _compose()
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source in compose.get("volumes", {}):
                continue
            assert source.startswith("./"), f"{name}: {volume}"
            assert (ROOT / source).exists(), f"{name} mounts {source}, which is not in the repository"


def test_compose_mounts_what_the_daemon_and_prometheus_read() -> None:
    """The daemon's config lands where the image's CMD reads it; Prometheus gets its config and the rules directory."""
    services = _compose()["services"]
    assert "./deploy/watcher.toml:/etc/watcher/watcher.toml:ro" in services["watcher"]["volumes"]
    assert "./deploy/prometheus.yml:/etc/prometheus/prometheus.yml:ro" in services["prometheus"]["volumes"]
    assert "./alerts/prometheus:/etc/prometheus/rules:ro" in services["prometheus"]["volumes"]
    assert "./deploy/otel-collector.yaml:/etc/otelcol-contrib/config.yaml:ro" in services["otel-collector"]["volumes"]
    grafana = services["grafana"]["volumes"]
    assert "./dashboards/provisioning:/etc/grafana/provisioning:ro" in grafana
    assert "./dashboards/grafana:/var/lib/grafana/dashboards:ro" in grafana


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose is not installed")
def test_docker_compose_accepts_the_file_and_hands_every_service_the_same_token() -> None:
    """`docker-compose config` resolves the file; WATCHER_TOKEN from the environment reaches all four users of it."""
    env = {**os.environ, "WATCHER_TOKEN": "from-the-environment"}
    result = subprocess.run(
        ["docker-compose", "-f", "docker-compose.yml", "--profile", "demo", "config"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    # docker-compose 1.x lists every profile's services; the fleet's are tests/test_stack_fleet.py's.
    services = {n: s for n, s in yaml.safe_load(result.stdout)["services"].items() if s.get("profiles") != ["fleet"]}
    users = {name for name, s in services.items() if s.get("environment", {}).get("WATCHER_TOKEN")}
    assert users == {"watcher", "otel-collector", "prometheus", "traffic"}
    assert {services[name]["environment"]["WATCHER_TOKEN"] for name in users} == {"from-the-environment"}
    published = {p.split(":")[-2] for s in services.values() for p in s.get("ports", [])}
    assert published >= {"4317", "4318", "9090", "3000", "8025", "1025"}
    traffic = services["traffic"]["environment"]
    assert traffic["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector:4318"
    assert traffic["WATCHER_ENDPOINT"] == "http://watcher:4318"
