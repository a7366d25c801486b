"""The one settings object, read from the environment (12-factor).

Every variable is checked here, at start: a value the pipeline cannot use stops `lswh ingress`
and `lswh worker` with exit 2 and a message naming the variable (docs/configuration.md), instead
of failing every delivery later. Each variable has its own reader below.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from lswh_core.allowlist import AllowListError, parse_rules
from lswh_core.durations import parse_duration
from lswh_core.errors import SettingsError as SettingsError  # re-exported: callers import it from here
from lswh_core.ratelimits import DEFAULT_LIMITS, Limit, parse_limits

DEFAULT_S3_ALLOWED_HOSTS = (
    "*.s3.amazonaws.com",
    "*.s3.*.amazonaws.com",
    "s3.*.amazonaws.com",
    "storage.googleapis.com",
)
OUTPUT_MODES = ("correction_or_run", "correction", "run")
REDIS_SCHEMES = ("redis", "rediss", "unix")
# The ingress refuses longer candidates unread (ingress/auth.py); a longer configured secret
# could never match, so it is refused at start instead of answering 401 forever.
MAX_SECRET_BYTES = 1024
LOG_FORMATS = ("json", "text")
S3_PROXY_MODES = ("off", "env")


def _split(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise SettingsError(f"{name} must be at least {minimum}, got {value}")
    return value


def _http_url(env: Mapping[str, str], name: str) -> str | None:
    """An absolute http(s) URL with a host, or None when unset."""
    raw = env.get(name, "").strip()
    if not raw:
        return None
    try:
        parts = urlsplit(raw)
        parts.port  # noqa: B018 -- raises on a port that is not a number
    except ValueError as exc:
        raise SettingsError(f"{name} is not a URL ({exc}), got {raw!r}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SettingsError(f"{name} must be an http:// or https:// URL with a host, got {raw!r}")
    if parts.query or parts.fragment:
        raise SettingsError(f"{name} must have no query string or fragment, got {raw!r}")
    return raw


def _redis_url(env: Mapping[str, str]) -> str:
    raw = env.get("REDIS_URL", "").strip()
    if not raw:
        return Settings.redis_url
    # Imported here: `lswh healthcheck` loads settings every few seconds and needs no Redis.
    # The client that will connect decides what parses; from_url does not connect.
    import redis

    parts = urlsplit(raw)
    if parts.scheme not in REDIS_SCHEMES:
        raise SettingsError(f"REDIS_URL must start with redis://, rediss:// or unix://, got {parts.scheme!r}")
    # redis-py ignores a database it cannot read (`/x`) and would quietly use database 0.
    if parts.scheme != "unix" and parts.path.strip("/") and not parts.path.strip("/").isdigit():
        raise SettingsError("REDIS_URL's path must be a database number, e.g. redis://host:6379/0")
    try:
        redis.ConnectionPool.from_url(raw)
    except (ValueError, TypeError) as exc:
        # The message may hold the URL, whose password must not reach a log.
        raise SettingsError(f"REDIS_URL is not a Redis URL: {type(exc).__name__}") from None
    return raw


def _secrets(env: Mapping[str, str]) -> tuple[str, ...]:
    secrets = _split(env.get("LSWH_SECRETS", ""))
    for index, secret in enumerate(secrets):
        if len(secret.encode()) > MAX_SECRET_BYTES:
            raise SettingsError(f"LSWH_SECRETS: secret #{index + 1} is longer than {MAX_SECRET_BYTES} bytes")
    return secrets


def _rule_datasets(raw: str) -> dict[str, str]:
    routes: dict[str, str] = {}
    for entry in _split(raw):
        rule_id, sep, dataset = entry.partition("=")
        if not sep or not rule_id.strip() or not dataset.strip():
            raise SettingsError(f"LSWH_RULE_DATASETS entries are rule_id=dataset, got {entry!r}")
        if routes.get(rule_id.strip(), dataset.strip()) != dataset.strip():
            raise SettingsError(f"LSWH_RULE_DATASETS routes rule {rule_id.strip()!r} to two datasets")
        routes[rule_id.strip()] = dataset.strip()
    return routes


def _outputs(env: Mapping[str, str]) -> str:
    outputs = env.get("LSWH_OUTPUTS", "").strip() or "correction_or_run"
    if outputs not in OUTPUT_MODES:
        raise SettingsError(f"LSWH_OUTPUTS must be one of {', '.join(OUTPUT_MODES)}, got {outputs!r}")
    return outputs


def _s3_allowed_hosts(env: Mapping[str, str]) -> tuple[str, ...]:
    """Parsed with the parser the worker matches URLs with, so start-up refuses what it could
    not enforce (`minio.local:9ooo` would otherwise fail every delivery on its first job)."""
    hosts = _split(env.get("LSWH_S3_ALLOWED_HOSTS", "")) or DEFAULT_S3_ALLOWED_HOSTS
    try:
        parse_rules(hosts)
    except AllowListError as exc:
        raise SettingsError(f"LSWH_S3_ALLOWED_HOSTS: {exc}") from None
    return hosts


def _langsmith_endpoint(env: Mapping[str, str]) -> None:
    """The SDK reads LANGSMITH_ENDPOINT itself; a malformed one is still a bad setting."""
    _http_url(env, "LANGSMITH_ENDPOINT")


def _workspace_id(env: Mapping[str, str]) -> str | None:
    """LANGSMITH_WORKSPACE_ID, read as the SDK reads it (utils.get_workspace_id strips spaces and
    quotes), and a UUID: LangSmith's workspace ids are, and a typo would otherwise surface as a
    403 on every request mid-job."""
    raw = env.get("LANGSMITH_WORKSPACE_ID", "").strip().strip('"').strip("'")
    if not raw:
        return None
    try:
        return str(uuid.UUID(raw))
    except ValueError:
        raise SettingsError(f"LANGSMITH_WORKSPACE_ID must be a workspace id (a UUID), got {raw!r}") from None


def _s3_proxy(env: Mapping[str, str]) -> str:
    mode = env.get("LSWH_S3_PROXY", "").strip().lower() or "off"
    if mode not in S3_PROXY_MODES:
        raise SettingsError(f"LSWH_S3_PROXY must be one of {', '.join(S3_PROXY_MODES)}, got {mode!r}")
    return mode


def _rules_file(env: Mapping[str, str]) -> str | None:
    """Only that the file is there and readable: lswh_core.rules checks what it says, with the
    line of each mistake, when a process starts (lswh/cli.py)."""
    raw = env.get("LSWH_RULES_FILE", "").strip()
    if not raw:
        return None
    if not os.path.isfile(raw) or not os.access(raw, os.R_OK):
        raise SettingsError(f"LSWH_RULES_FILE: {raw!r} is not a readable file")
    return raw


def _duration(env: Mapping[str, str], name: str, default: float | None) -> float | None:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return parse_duration(raw)
    except ValueError as exc:
        raise SettingsError(f"{name}: {exc}") from None


@dataclass(frozen=True)
class Settings:
    redis_url: str = "redis://localhost:6379/0"
    secrets: tuple[str, ...] = ()
    dataset: str = "langsmith-webhook-examples"
    rule_datasets: dict[str, str] = field(default_factory=dict)
    outputs: str = "correction_or_run"
    s3_allowed_hosts: tuple[str, ...] = DEFAULT_S3_ALLOWED_HOSTS
    max_body_bytes: int = 26_214_400
    retries: int = 5
    retry_base_seconds: int = 10
    job_timeout: int = 600
    keep_days: int = 7
    replay_days: int = 2
    failed_keep_days: int = 30
    public_url: str | None = None
    # The rules file (lswh_core/rules.py); None = the variables above are all the rules there are.
    rules_file: str | None = None
    langsmith_rate_limits: Mapping[str, Limit] = field(default_factory=lambda: dict(DEFAULT_LIMITS))
    log_format: str = "json"
    metrics_port: int = 9100
    # Seconds between reconciliation passes (None = off) and how far behind now a pass's window ends.
    reconcile_every: float | None = None
    reconcile_grace: float = 600.0
    # LANGSMITH_WORKSPACE_ID: sent as X-Tenant-Id by every LangSmith client (workers/langsmith/clients.py).
    langsmith_workspace_id: str | None = None
    # Presigned object fetches: "off" = direct (the SSRF checks see the address connected to),
    # "env" = through the proxy lswh_core/egress.py picks (docs/langsmith.md: Accounts, workspaces and proxies).
    s3_proxy: str = "off"

    @property
    def keep_seconds(self) -> int:
        """How long a delivery's hash answers duplicates (LSWH_KEEP_DAYS)."""
        return self.keep_days * 86_400

    @property
    def replay_seconds(self) -> int:
        """How long a raw body stays for processing, requeue and replay (LSWH_REPLAY_DAYS)."""
        return self.replay_days * 86_400

    @property
    def failed_keep_seconds(self) -> int:
        return self.failed_keep_days * 86_400

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        _langsmith_endpoint(env)
        log_format = env.get("LSWH_LOG_FORMAT", "").strip().lower() or "json"
        if log_format not in LOG_FORMATS:
            raise SettingsError(f"LSWH_LOG_FORMAT must be one of {', '.join(LOG_FORMATS)}, got {log_format!r}")
        metrics_port = _int(env, "LSWH_METRICS_PORT", cls.metrics_port)
        if metrics_port > 65_535:
            raise SettingsError(f"LSWH_METRICS_PORT must be a TCP port (0 disables), got {metrics_port}")
        return cls(
            redis_url=_redis_url(env),
            secrets=_secrets(env),
            dataset=env.get("LSWH_DATASET", "").strip() or cls.dataset,
            rule_datasets=_rule_datasets(env.get("LSWH_RULE_DATASETS", "")),
            outputs=_outputs(env),
            s3_allowed_hosts=_s3_allowed_hosts(env),
            max_body_bytes=_int(env, "LSWH_MAX_BODY_BYTES", cls.max_body_bytes, minimum=1),
            retries=_int(env, "LSWH_RETRIES", cls.retries),
            retry_base_seconds=_int(env, "LSWH_RETRY_BASE_SECONDS", cls.retry_base_seconds),
            job_timeout=_int(env, "LSWH_JOB_TIMEOUT", cls.job_timeout, minimum=1),
            keep_days=_int(env, "LSWH_KEEP_DAYS", cls.keep_days, minimum=1),
            replay_days=_int(env, "LSWH_REPLAY_DAYS", cls.replay_days, minimum=1),
            failed_keep_days=_int(env, "LSWH_FAILED_KEEP_DAYS", cls.failed_keep_days, minimum=1),
            public_url=_http_url(env, "LSWH_PUBLIC_URL"),
            rules_file=_rules_file(env),
            langsmith_rate_limits=parse_limits(env.get("LSWH_LANGSMITH_RATE_LIMITS", "")),
            log_format=log_format,
            metrics_port=metrics_port,
            reconcile_every=_duration(env, "LSWH_RECONCILE_EVERY", None),
            reconcile_grace=_duration(env, "LSWH_RECONCILE_GRACE", cls.reconcile_grace) or cls.reconcile_grace,
            langsmith_workspace_id=_workspace_id(env),
            s3_proxy=_s3_proxy(env),
        )
