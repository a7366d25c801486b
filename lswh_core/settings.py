"""The one settings object, read from the environment (12-factor)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

DEFAULT_S3_ALLOWED_HOSTS = (
    "*.s3.amazonaws.com",
    "*.s3.*.amazonaws.com",
    "s3.*.amazonaws.com",
    "storage.googleapis.com",
)
OUTPUT_MODES = ("correction_or_run", "correction", "run")
LOG_FORMATS = ("json", "text")


class SettingsError(ValueError):
    """A configuration variable has a value we cannot use."""


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


def _rule_datasets(raw: str) -> dict[str, str]:
    routes: dict[str, str] = {}
    for entry in _split(raw):
        rule_id, sep, dataset = entry.partition("=")
        if not sep or not rule_id.strip() or not dataset.strip():
            raise SettingsError(f"LSWH_RULE_DATASETS entries are rule_id=dataset, got {entry!r}")
        routes[rule_id.strip()] = dataset.strip()
    return routes


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
    failed_keep_days: int = 30
    public_url: str | None = None
    log_format: str = "json"
    metrics_port: int = 9100

    @property
    def keep_seconds(self) -> int:
        return self.keep_days * 86_400

    @property
    def failed_keep_seconds(self) -> int:
        return self.failed_keep_days * 86_400

    def dataset_for(self, rule_id: str | None) -> str:
        if rule_id and rule_id in self.rule_datasets:
            return self.rule_datasets[rule_id]
        return self.dataset

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        outputs = env.get("LSWH_OUTPUTS", "").strip() or "correction_or_run"
        if outputs not in OUTPUT_MODES:
            raise SettingsError(f"LSWH_OUTPUTS must be one of {', '.join(OUTPUT_MODES)}, got {outputs!r}")
        hosts = _split(env.get("LSWH_S3_ALLOWED_HOSTS", ""))
        log_format = env.get("LSWH_LOG_FORMAT", "").strip().lower() or "json"
        if log_format not in LOG_FORMATS:
            raise SettingsError(f"LSWH_LOG_FORMAT must be one of {', '.join(LOG_FORMATS)}, got {log_format!r}")
        metrics_port = _int(env, "LSWH_METRICS_PORT", cls.metrics_port)
        if metrics_port > 65_535:
            raise SettingsError(f"LSWH_METRICS_PORT must be a TCP port (0 disables), got {metrics_port}")
        return cls(
            redis_url=env.get("REDIS_URL", "").strip() or cls.redis_url,
            secrets=_split(env.get("LSWH_SECRETS", "")),
            dataset=env.get("LSWH_DATASET", "").strip() or cls.dataset,
            rule_datasets=_rule_datasets(env.get("LSWH_RULE_DATASETS", "")),
            outputs=outputs,
            s3_allowed_hosts=hosts or DEFAULT_S3_ALLOWED_HOSTS,
            max_body_bytes=_int(env, "LSWH_MAX_BODY_BYTES", cls.max_body_bytes, minimum=1),
            retries=_int(env, "LSWH_RETRIES", cls.retries),
            retry_base_seconds=_int(env, "LSWH_RETRY_BASE_SECONDS", cls.retry_base_seconds),
            job_timeout=_int(env, "LSWH_JOB_TIMEOUT", cls.job_timeout, minimum=1),
            keep_days=_int(env, "LSWH_KEEP_DAYS", cls.keep_days, minimum=1),
            failed_keep_days=_int(env, "LSWH_FAILED_KEEP_DAYS", cls.failed_keep_days, minimum=1),
            public_url=env.get("LSWH_PUBLIC_URL", "").strip() or None,
            log_format=log_format,
            metrics_port=metrics_port,
        )
