"""Every setting is checked at start, and every setting reaches the containers.

The list of variables is never kept by hand here: it is what `Settings.from_env` reads
(recorded while it reads) plus what the README's Essential settings table and docs/configuration.md's
table document.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from lswh_core import egress
from lswh_core.allowlist import AllowListError, HostRule, parse_rule, parse_rules
from lswh_core.settings import DEFAULT_S3_ALLOWED_HOSTS, MAX_SECRET_BYTES, Settings, SettingsError
from tests.support.procs import Proc, free_port, lswh

ROOT = Path(__file__).resolve().parent.parent


class RecordingEnv(dict[str, str]):
    """An environment that remembers every name it was asked for."""

    def __init__(self, values: dict[str, str] | None = None) -> None:
        super().__init__(values or {})
        self.asked: set[str] = set()

    def get(self, key: str, default: Any = None) -> Any:
        self.asked.add(key)
        return super().get(key, default)

    def __getitem__(self, key: str) -> str:
        self.asked.add(key)
        return super().__getitem__(key)

    def __contains__(self, key: object) -> bool:
        self.asked.add(str(key))
        return super().__contains__(key)


def variables_settings_read() -> set[str]:
    env = RecordingEnv()
    Settings.from_env(env)
    return env.asked


def readme_configuration_variables() -> set[str]:
    """The variables the settings tables document: the README's essential ones and the rest in
    docs/configuration.md (each variable in exactly one of them)."""
    sections = [
        (ROOT / "README.md").read_text().split("\n## Essential settings\n", 1)[1].split("\n## ", 1)[0],
        (ROOT / "docs" / "configuration.md").read_text().split("\n## Environment variables\n", 1)[1],
    ]
    found: list[set[str]] = []
    for section in sections:
        names: set[str] = set()
        for line in section.splitlines():
            if line.startswith("| `"):
                first_column = line.split("|")[1]
                names |= set(re.findall(r"`([A-Z][A-Z0-9_]*)`", first_column))
        assert names, "a settings table is empty or gone"
        found.append(names)
    assert found[0] & found[1] == set(), "a variable is documented twice"
    return found[0] | found[1]


def every_variable() -> set[str]:
    """What Settings reads, what the docs document, and the proxy/CA variables the worker
    reads through lswh_core/egress.py (as requests reads them, so not through Settings)."""
    return variables_settings_read() | readme_configuration_variables() | set(egress.PASSED)


# --- defaults and good values --------------------------------------------------------------


def test_defaults_keep_hashes_a_week_and_raw_bodies_two_days() -> None:
    settings = Settings.from_env({})
    assert (settings.keep_days, settings.replay_days) == (7, 2)
    assert (settings.keep_seconds, settings.replay_seconds) == (7 * 86_400, 2 * 86_400)


def test_replay_days_is_read_from_its_variable() -> None:
    assert Settings.from_env({"LSWH_REPLAY_DAYS": "5"}).replay_days == 5


@pytest.mark.parametrize("value", ["redis://localhost:6379/0", "rediss://:pw@cache.example.com:6380/2",
                                   "redis://redis", "unix:///run/redis.sock?db=1"])
def test_redis_urls_redis_py_accepts_are_accepted(value: str) -> None:
    assert Settings.from_env({"REDIS_URL": value}).redis_url == value


def test_good_allow_list_entries_parse_to_the_rules_the_worker_matches_with() -> None:
    assert parse_rules(("http://minio.local:9000", "*.s3.amazonaws.com", "https://[::1]:9000/", "10.0.0.5")) == (
        HostRule("http", "minio.local", 9000),
        HostRule("https", "*.s3.amazonaws.com", None),
        HostRule("https", "::1", 9000),
        HostRule("https", "10.0.0.5", None),
    )


def test_default_allow_list_parses() -> None:
    assert len(parse_rules(DEFAULT_S3_ALLOWED_HOSTS)) == len(DEFAULT_S3_ALLOWED_HOSTS)


# --- bad values: refused, naming the variable ----------------------------------------------


@pytest.mark.parametrize("entry", ["minio.local:9ooo", "minio.local:0", "minio.local:70000", "ftp://minio.local",
                                   "minio.local/bucket", "user@minio.local", "[::1", "[::1]x", "[nothost]:9000",
                                   "::1", "minio local", "http://", "minio.local:", "[a-z].example.com"])
def test_bad_allow_list_entries_are_refused_naming_the_entry(entry: str) -> None:
    with pytest.raises(AllowListError, match=re.escape(repr(entry))):
        parse_rule(entry)


BAD_VALUES = [
    ("LSWH_S3_ALLOWED_HOSTS", "*.s3.amazonaws.com,minio.local:9ooo"),
    ("REDIS_URL", "http://localhost:6379"),
    ("REDIS_URL", "redis://localhost:abc/0"),
    ("REDIS_URL", "redis://localhost:6379/zero"),
    ("LSWH_SECRETS", "ok," + "x" * (MAX_SECRET_BYTES + 1)),
    ("LSWH_RULE_DATASETS", "rule-a"),
    ("LSWH_RULE_DATASETS", "r=a,r=b"),
    ("LSWH_OUTPUTS", "both"),
    ("LSWH_MAX_BODY_BYTES", "25MiB"),
    ("LSWH_MAX_BODY_BYTES", "0"),
    ("LSWH_RETRIES", "-1"),
    ("LSWH_RETRY_BASE_SECONDS", "ten"),
    ("LSWH_JOB_TIMEOUT", "0"),
    ("LSWH_KEEP_DAYS", "0"),
    ("LSWH_REPLAY_DAYS", "0"),
    ("LSWH_REPLAY_DAYS", "1.5"),
    ("LSWH_FAILED_KEEP_DAYS", "never"),
    ("LSWH_PUBLIC_URL", "hooks.example.com"),
    ("LSWH_PUBLIC_URL", "https://hooks.example.com/?secret=x"),
    ("LANGSMITH_ENDPOINT", "api.smith.langchain.com"),
    ("LANGSMITH_ENDPOINT", "https://api.smith.langchain.com:port"),
    ("LSWH_RULES_FILE", "/nonexistent/rules.toml"),
    ("LSWH_LANGSMITH_RATE_LIMITS", "run_query=fast"),
    ("LSWH_LOG_FORMAT", "xml"),
    ("LSWH_METRICS_PORT", "70000"),
    ("LSWH_METRICS_PORT", "http"),
    ("LSWH_LANGSMITH_RATE_LIMITS", "runs=15/10s"),
    ("LSWH_RECONCILE_EVERY", "quarter-hour"),
    ("LSWH_RECONCILE_EVERY", "0s"),
    ("LSWH_RECONCILE_GRACE", "-5m"),
    ("LANGSMITH_WORKSPACE_ID", "my-workspace"),
    ("LANGSMITH_WORKSPACE_ID", "2ebda79f-2946-4491-a9ad"),
    ("LSWH_S3_PROXY", "on"),
]


@pytest.mark.parametrize(("name", "value"), BAD_VALUES, ids=[f"{n}={v[:30]}" for n, v in BAD_VALUES])
def test_a_bad_value_is_refused_naming_its_variable(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({name: value})


def test_a_bad_redis_url_message_never_holds_its_password() -> None:
    with pytest.raises(SettingsError) as info:
        Settings.from_env({"REDIS_URL": "redis://:hunter2@localhost:abc/0"})
    assert "hunter2" not in str(info.value)


def test_every_variable_settings_read_is_checked_by_some_bad_value_here() -> None:
    """A new variable gets a bad-value case above, or this fails."""
    checked = {name for name, _ in BAD_VALUES}
    unchecked = variables_settings_read() - checked - {"LSWH_DATASET"}  # any non-empty name is a dataset name
    assert unchecked == set()


def test_a_workspace_id_is_read_as_the_sdk_reads_it_and_kept_as_a_uuid() -> None:
    raw = ' "2EBDA79F-2946-4491-A9AD-D642F49E0815" '
    assert Settings.from_env({"LANGSMITH_WORKSPACE_ID": raw}).langsmith_workspace_id == (
        "2ebda79f-2946-4491-a9ad-d642f49e0815")
    assert Settings.from_env({}).langsmith_workspace_id is None


def test_presigned_fetches_skip_the_proxy_unless_told() -> None:
    assert Settings.from_env({}).s3_proxy == "off"
    assert Settings.from_env({"LSWH_S3_PROXY": "ENV"}).s3_proxy == "env"


# --- through the real command line -----------------------------------------------------------


def finished(proc: Proc, timeout: float = 60.0) -> int:
    code = proc.popen.wait(timeout)
    proc.stop()
    return code


@pytest.mark.parametrize("command", ["ingress", "worker"])
@pytest.mark.parametrize(("name", "value"), [("LSWH_S3_ALLOWED_HOSTS", "minio.local:9ooo"),
                                             ("LSWH_REPLAY_DAYS", "0"), ("REDIS_URL", "redis://h:6379/zero"),
                                             ("LANGSMITH_WORKSPACE_ID", "not-a-uuid")])
def test_commands_exit_2_naming_the_bad_variable(command: str, name: str, value: str) -> None:
    args = ["--port", str(free_port())] if command == "ingress" else []
    # Nothing to connect to: the check must come before any connection is tried.
    env = {"LSWH_SECRETS": "a-secret", "REDIS_URL": "redis://127.0.0.1:1/0",
           "LANGSMITH_ENDPOINT": "http://127.0.0.1:1", "LANGSMITH_API_KEY": "k", name: value}
    proc = lswh(command, *args, env=env, name=f"lswh-{command}-bad")
    assert finished(proc) == 2, proc.output()
    output = proc.output()
    assert name in output and "Traceback" not in output


@pytest.mark.parametrize(("name", "value"), [("HTTPS_PROXY", "ftp://user:hunter2@proxy.example.com"),
                                             ("HTTP_PROXY", "http://user:hunter2@proxy:port"),
                                             ("REQUESTS_CA_BUNDLE", "/nonexistent/ca.pem")])
def test_worker_exits_2_on_a_bad_proxy_or_ca_bundle_and_never_prints_proxy_credentials(name: str,
                                                                                       value: str) -> None:
    env = {"REDIS_URL": "redis://127.0.0.1:1/0", "LANGSMITH_ENDPOINT": "http://127.0.0.1:1",
           "LANGSMITH_API_KEY": "k", "http_proxy": "", "https_proxy": "", name: value}
    proc = lswh("worker", env=env, name="lswh-worker-bad-egress")
    assert finished(proc) == 2, proc.output()
    output = proc.output()
    assert name in output and "Traceback" not in output and "hunter2" not in output


# --- every variable reaches the containers ---------------------------------------------------


def compose_environment(service: str) -> set[str]:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return set(compose["services"][service].get("environment") or {})


def k8s_documents() -> Iterator[dict[str, Any]]:
    for path in sorted((ROOT / "deploy" / "k8s").glob("*.yaml")):
        yield from (doc for doc in yaml.safe_load_all(path.read_text()) if doc)


def k8s_keys(kind: str, name: str, field: str) -> set[str]:
    for doc in k8s_documents():
        if doc["kind"] == kind and doc["metadata"]["name"] == name:
            return set(doc[field])
    raise AssertionError(f"no {kind} {name}")


def env_example_names() -> set[str]:
    text = (ROOT / ".env.example").read_text()
    return set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", text, flags=re.M))


# Secrets go only to the service that uses them (a leak is smaller); everything else to both.
ONLY_FOR = {"LSWH_SECRETS": "ingress", "LANGSMITH_API_KEY": "worker", "LANGSMITH_ENDPOINT": "worker",
            # Only workers reach out (LangSmith, object stores): the ingress makes no request.
            **dict.fromkeys(egress.PASSED, "worker")}


def test_the_docs_document_every_variable_settings_read() -> None:
    assert variables_settings_read() - readme_configuration_variables() == set()


def test_every_variable_reaches_the_compose_ingress_and_worker() -> None:
    ingress, worker = compose_environment("ingress"), compose_environment("worker")
    for name in sorted(every_variable()):
        wanted = {ONLY_FOR[name]} if name in ONLY_FOR else {"ingress", "worker"}
        given = {s for s, env in (("ingress", ingress), ("worker", worker)) if name in env}
        assert given == wanted, name


def test_every_variable_is_in_the_kubernetes_config_or_secret() -> None:
    config = k8s_keys("ConfigMap", "lswh-config", "data")
    secret = k8s_keys("Secret", "lswh-secrets", "stringData")
    assert every_variable() - (config | secret) == set()


def test_every_variable_is_in_env_example() -> None:
    assert every_variable() - env_example_names() == set()


# --- Redis sized on purpose ------------------------------------------------------------------

# docs/production.md "Redis: sizing": what Redis holds per delivery, by what keeps it. Measured on a real
# redis-server by the test below (which fails if a change makes a delivery cost more).
BODY_OVERHEAD = 1.03  # allocator rounding of a large string
PER_DELIVERY_JOB_BYTES = 4_096  # job hash + result while queued or finished (result_ttl 1 day)
PER_DELIVERY_SEEN_BYTES = 200  # the duplicate-check key, LSWH_KEEP_DAYS
PER_RUN_DONE_BYTES = 110  # a run id in the done set, LSWH_KEEP_DAYS
# The load the shipped defaults are sized for (the example), and the share of
# maxmemory it may take: the rest is headroom for bursts before the 85 % alert.
DESIGN_DELIVERIES_A_DAY, DESIGN_BODY_BYTES, DESIGN_RUNS = 288, 2 * 1024 * 1024, 1_000
DESIGN_SHARE = 0.75


def redis_bytes(deliveries_a_day: int, body_bytes: int, runs: int, settings: Settings) -> float:
    return deliveries_a_day * (body_bytes * BODY_OVERHEAD * settings.replay_days
                               + PER_DELIVERY_JOB_BYTES
                               + (PER_DELIVERY_SEEN_BYTES + runs * PER_RUN_DONE_BYTES) * settings.keep_days)


def memory_bytes(text: str) -> int:
    number, unit = re.fullmatch(r"(\d+)\s*(b|kb|mb|gb)", text.strip().lower()).groups()  # type: ignore[union-attr]
    return int(number) * {"b": 1, "kb": 1024, "mb": 1024**2, "gb": 1024**3}[unit]


def maxmemory_settings() -> dict[str, int]:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["redis"]["command"]
    compose_value = compose[compose.index("--maxmemory") + 1]
    default = re.fullmatch(r"\$\{REDIS_MAXMEMORY:-(\w+)\}", compose_value).group(1)  # type: ignore[union-attr]
    env_example = re.search(r"^REDIS_MAXMEMORY=(\w+)", (ROOT / ".env.example").read_text(), flags=re.M)
    (redis,) = [d for d in k8s_documents() if d["kind"] == "StatefulSet" and d["metadata"]["name"] == "redis"]
    (container,) = redis["spec"]["template"]["spec"]["containers"]
    k8s_value = container["command"][container["command"].index("--maxmemory") + 1]
    return {"compose default": memory_bytes(default), ".env.example": memory_bytes(env_example.group(1)),  # type: ignore[union-attr]
            "k8s": memory_bytes(k8s_value)}


def test_compose_and_k8s_maxmemory_hold_the_design_load_at_the_default_retention() -> None:
    needed = redis_bytes(DESIGN_DELIVERIES_A_DAY, DESIGN_BODY_BYTES, DESIGN_RUNS, Settings())
    for where, maxmemory in maxmemory_settings().items():
        assert needed <= DESIGN_SHARE * maxmemory, f"{where}: {needed / 2**30:.2f} GiB of {maxmemory / 2**30:.2f}"


def test_k8s_redis_memory_limit_leaves_room_above_maxmemory_for_aof_rewrites() -> None:
    (redis,) = [d for d in k8s_documents() if d["kind"] == "StatefulSet" and d["metadata"]["name"] == "redis"]
    (container,) = redis["spec"]["template"]["spec"]["containers"]
    limit = container["resources"]["limits"]["memory"]
    limit_bytes = int(limit.removesuffix("Gi")) * 1024**3
    assert limit_bytes >= maxmemory_settings()["k8s"] * 1.4


def test_a_delivery_costs_redis_what_the_sizing_table_assumes() -> None:
    import asyncio

    import redis as redis_lib

    from ingress.enqueue import DeliveryQueue
    from lswh_core import contract
    from lswh_core.redis import async_redis
    from tests.support.procs import RedisServer

    server = RedisServer()
    try:
        settings = Settings(redis_url=server.url)
        client = redis_lib.Redis(port=server.port)
        count, size = 300, 64 * 1024

        async def store() -> None:
            connection = async_redis(settings.redis_url)
            queue = DeliveryQueue(connection, settings)
            for index in range(count):
                body = b'{"runs": [{"id": "%d"}], "pad": "' % index + b"x" * size + b'"}'
                await queue.store(body, contract.delivery_id_of(body), 1)
            await connection.aclose()

        before = client.info("memory")["used_memory"]
        asyncio.run(store())
        stored = client.info("memory")["used_memory"] - before
        assert stored / count <= size * BODY_OVERHEAD + PER_DELIVERY_JOB_BYTES + PER_DELIVERY_SEEN_BYTES
        client.delete(*client.keys("lswh:delivery:*"), *client.keys("rq:*"))
        seen = client.info("memory")["used_memory"] - before
        assert 0 < seen / count <= PER_DELIVERY_SEEN_BYTES
    finally:
        server.stop()
