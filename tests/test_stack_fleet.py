"""The compose fleet works as written: PostgreSQL, a migration, two watcher replicas, a load-balancing Collector.

Docker does not run here: the compose file and the Collector config are checked as data (and by
`docker-compose config` where it is installed), and the replicas' commands run as real processes
against a real PostgreSQL database, fed as the fleet's Collector feeds them.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import grpc
import pytest
import yaml
from _postgres import fresh_database
from _support import metrics_text, sample
from test_daemon import _export_body

from watcher import Settings
from watcher.testing import DaemonProcess

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "fleet-test-token"
FLEET = {"postgres", "watcher-db-upgrade", "watcher-1", "watcher-2", "otel-collector-fleet"}
REPLICAS = ("watcher-1", "watcher-2")
EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
PINNED = re.compile(r"^[\w./-]+:v?\d+\.\d+\.\d+[\w.-]*$")
PINNED_POSTGRES = re.compile(r"^postgres:\d+\.\d+-[a-z]+$")  # PostgreSQL versions have two parts: 16.6

needs_compose = pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose is not installed")


def _compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())  # type: ignore[no-any-return]


def _collector() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "deploy" / "otel-collector-fleet.yaml").read_text())  # type: ignore[no-any-return]


def _resolved(**env: str) -> dict[str, Any]:
    """`docker-compose --profile fleet config` with these variables: the file as compose hands it to Docker."""
    result = subprocess.run(
        ["docker-compose", "-f", "docker-compose.yml", "--profile", "fleet", "config"],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)["services"]  # type: ignore[no-any-return]


def _host_ports(service: dict[str, Any]) -> set[str]:
    """The host ports a service publishes, from entries like "127.0.0.1:24317:4317"."""
    return {str(port).split(":")[-2] for port in service.get("ports", [])}


# --- docker-compose.yml: the fleet profile -------------------------------------------------------


def test_the_fleet_services_start_only_with_the_fleet_profile_from_pinned_images() -> None:
    """Five services under `fleet`, none of them without it; PostgreSQL and the Collector pinned to versions."""
    services = _compose()["services"]
    assert {name for name, s in services.items() if s.get("profiles") == ["fleet"]} == FLEET
    assert PINNED_POSTGRES.match(services["postgres"]["image"]), services["postgres"]["image"]
    assert PINNED.match(services["otel-collector-fleet"]["image"])
    assert services["otel-collector-fleet"]["image"] == services["otel-collector"]["image"]
    for name in ("watcher-db-upgrade", *REPLICAS):
        assert services[name]["build"] == "." and services[name]["image"] == services["watcher"]["image"], name


def test_the_database_keeps_its_data_on_a_named_volume_and_reports_its_health() -> None:
    """PostgreSQL's data directory is a named volume (the books survive `down`), and pg_isready is its healthcheck."""
    compose = _compose()
    postgres = compose["services"]["postgres"]
    [volume] = postgres["volumes"]
    source, target = volume.split(":")[:2]
    assert source in compose["volumes"] and target == "/var/lib/postgresql/data"
    assert postgres["healthcheck"]["test"][:2] == ["CMD", "pg_isready"]
    assert not postgres.get("ports"), "the database is not published on the host"


def test_the_replicas_start_after_a_healthy_database_and_a_successful_migration() -> None:
    """`watcher db upgrade` runs once, on a healthy database; each replica waits for it to exit 0."""
    services = _compose()["services"]
    assert services["watcher-db-upgrade"]["command"] == ["db", "upgrade"]
    assert services["watcher-db-upgrade"]["depends_on"]["postgres"] == {"condition": "service_healthy"}
    assert services["watcher-db-upgrade"]["restart"] == "no"
    for name in REPLICAS:
        depends = services[name]["depends_on"]
        assert depends["postgres"] == {"condition": "service_healthy"}, name
        assert depends["watcher-db-upgrade"] == {"condition": "service_completed_successfully"}, name
    collector = services["otel-collector-fleet"]["depends_on"]
    assert {name: collector[name]["condition"] for name in REPLICAS} == dict.fromkeys(REPLICAS, "service_healthy")


def test_the_fleet_publishes_host_ports_the_single_stack_does_not_use() -> None:
    """`--profile fleet` adds the fleet beside the single stack: no host port is published twice."""
    services = _compose()["services"]
    published = [port for service in services.values() for port in _host_ports(service)]
    assert len(published) == len(set(published)), sorted(published)
    assert _host_ports(services["otel-collector-fleet"]) == {"24317", "24318"}
    assert {name: _host_ports(services[name]) for name in REPLICAS} == {"watcher-1": {"24321"}, "watcher-2": {"24322"}}


def test_the_replicas_run_the_single_daemons_config_mounted_from_the_repository() -> None:
    """Both replicas read deploy/watcher.toml where the image's CMD does; every fleet mount is in the repository."""
    services = _compose()["services"]
    for name in REPLICAS:
        assert services[name]["volumes"] == ["./deploy/watcher.toml:/etc/watcher/watcher.toml:ro"], name
        assert services[name]["command"] == ["serve", "--config", "/etc/watcher/watcher.toml"], name
    assert services["otel-collector-fleet"]["volumes"] == [
        "./deploy/otel-collector-fleet.yaml:/etc/otelcol-contrib/config.yaml:ro"
    ]
    for name in FLEET:
        for volume in services[name].get("volumes", []):
            source = volume.split(":")[0]
            assert source in _compose()["volumes"] or (ROOT / source).exists(), f"{name} mounts {source}"


@needs_compose
def test_docker_compose_hands_every_replica_the_same_token_and_database() -> None:
    """`docker-compose --profile fleet config` resolves; the token and password from the environment reach all users."""
    services = _resolved(WATCHER_TOKEN="from-the-environment", FLEET_POSTGRES_PASSWORD="pw0from0env")
    assert set(services) >= FLEET
    tokens = {name: services[name]["environment"]["WATCHER_TOKEN"] for name in (*REPLICAS, "otel-collector-fleet")}
    assert set(tokens.values()) == {"from-the-environment"}
    assert services["watcher"]["environment"]["WATCHER_TOKEN"] == "from-the-environment"
    urls = {services[name]["environment"]["WATCHER_DATABASE_URL"] for name in (*REPLICAS, "watcher-db-upgrade")}
    [url] = urls
    parts = urlsplit(url)
    database = services["postgres"]["environment"]
    assert (parts.scheme, parts.hostname, parts.port) == ("postgresql", "postgres", 5432)
    assert (parts.username, parts.password, parts.path) == (
        database["POSTGRES_USER"],
        database["POSTGRES_PASSWORD"],
        f"/{database['POSTGRES_DB']}",
    )
    assert parts.password == "pw0from0env"


@needs_compose
def test_the_daemon_reads_the_fleets_database_url_as_its_shared_postgresql_ledger() -> None:
    """The URL compose hands the replicas is, to the daemon's settings, a PostgreSQL ledger (not the SQLite default)."""
    url = _resolved()["watcher-1"]["environment"]["WATCHER_DATABASE_URL"]
    assert Settings(database_url=url).ledger_url() == url
    assert url.startswith("postgresql://watcher:watcher-local-dev-password@postgres:5432/")


# --- deploy/otel-collector-fleet.yaml -------------------------------------------------------------


def test_the_fleet_collector_pipelines_use_only_defined_components() -> None:
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
    assert service["pipelines"]["traces"]["exporters"] == ["loadbalancing/watcher"]


def test_the_fleet_collector_balances_over_both_replicas_grpc_ports_with_the_token() -> None:
    """The static resolver names each replica at the gRPC port deploy/watcher.toml sets, with the bearer header."""
    exporter = _collector()["exporters"]["loadbalancing/watcher"]
    grpc_port = tomllib.loads((ROOT / "deploy" / "watcher.toml").read_text())["grpc_listen"].rsplit(":", 1)[1]
    assert exporter["resolver"]["static"]["hostnames"] == [f"{name}:{grpc_port}" for name in REPLICAS]
    assert set(exporter["resolver"]) == {"static"}
    otlp = exporter["protocol"]["otlp"]
    assert "endpoint" not in otlp, "the resolver sets each replica's endpoint"
    assert otlp["headers"] == {"authorization": "Bearer ${env:WATCHER_TOKEN}"}
    assert otlp["tls"] == {"insecure": True}
    assert exporter["routing_key"] == "traceID"


def test_the_fleet_collector_retries_and_queues_once_for_all_replicas() -> None:
    """Retries and the queue at the exporter's top level; the per-replica exporters neither retry nor queue again."""
    exporter = _collector()["exporters"]["loadbalancing/watcher"]
    assert exporter["retry_on_failure"]["enabled"] and exporter["sending_queue"]["enabled"]
    otlp = exporter["protocol"]["otlp"]
    assert otlp["retry_on_failure"] == {"enabled": False} and otlp["sending_queue"] == {"enabled": False}
    protocols = _collector()["receivers"]["otlp"]["protocols"]
    assert (protocols["grpc"]["endpoint"], protocols["http"]["endpoint"]) == ("0.0.0.0:4317", "0.0.0.0:4318")


# --- the replicas, run as compose runs them, on a real PostgreSQL ---------------------------------


@pytest.fixture
def database() -> Iterator[str]:
    with fresh_database() as url:
        yield url


def _upgrade(url: str) -> subprocess.CompletedProcess[str]:
    """The `watcher-db-upgrade` service's command, with its environment, against `url`."""
    command = _compose()["services"]["watcher-db-upgrade"]["command"]
    env = {**os.environ, "WATCHER_DATABASE_URL": url}
    return subprocess.run(
        [sys.executable, "-m", "watcher.cli", *command], env=env, capture_output=True, text=True, timeout=60
    )


def _export_like_the_fleet_collector(port: int, body: bytes) -> None:
    """One OTLP/gRPC Export as the loadbalancing exporter's per-replica template sends it (gzip, the header)."""
    otlp = _collector()["exporters"]["loadbalancing/watcher"]["protocol"]["otlp"]
    metadata = [(k, v.replace("${env:WATCHER_TOKEN}", TOKEN)) for k, v in otlp["headers"].items()]
    assert otlp["compression"] == "gzip"
    with grpc.insecure_channel(f"127.0.0.1:{port}", compression=grpc.Compression.Gzip) as channel:
        channel.unary_unary(EXPORT)(body, metadata=metadata, timeout=30)


def _requests_booked(replica: DaemonProcess) -> float:
    text = metrics_text(replica.url, token=TOKEN)
    total = 0.0
    for line in text.splitlines():
        if line.startswith("watcher_requests_total{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


@pytest.mark.slow
def test_the_migration_then_two_replicas_book_a_span_sent_to_both_once(database: str) -> None:
    """As the fleet starts: `watcher db upgrade` migrates, then the replicas (the stack's config) take the
    Collector's gRPC exports; the same span re-sent to the other replica is stored once, counted once."""
    upgraded = _upgrade(database)
    assert upgraded.returncode == 0, upgraded.stderr
    assert re.search(r"^state .*: schema version 0 -> \d+$", upgraded.stdout, re.M), upgraded.stdout
    assert _upgrade(database).stdout.count("up to date") == 2, "a second run has nothing to do"

    config = (ROOT / "deploy" / "watcher.toml").read_text()
    with pytest.MonkeyPatch.context() as env:
        env.setenv("WATCHER_TOKEN", TOKEN)
        env.setenv("WATCHER_DATABASE_URL", database)
        replicas = [DaemonProcess(config, grpc=True).start() for _ in REPLICAS]
    try:
        body = _export_body(0.004, "fleet-compose-1", end=datetime.now(UTC) - timedelta(minutes=1))
        for replica in replicas:
            assert replica.grpc_port is not None
            _export_like_the_fleet_collector(replica.grpc_port, body)
        assert sum(_requests_booked(replica) for replica in replicas) == 1
        psycopg = pytest.importorskip("psycopg")
        with psycopg.connect(database) as db:
            assert db.execute("SELECT count(*) FROM ledger_entries").fetchone() == (1,)
        with pytest.raises(grpc.RpcError) as refused, grpc.insecure_channel(f"127.0.0.1:{replicas[0].grpc_port}") as ch:
            ch.unary_unary(EXPORT)(body, timeout=30)
        assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED
        budgets = metrics_text(replicas[1].url, token=TOKEN)
        assert sample(budgets, "watcher_budget_limit_usd", budget="agent-daily") == 40
    finally:
        for replica in replicas:
            replica.stop()
