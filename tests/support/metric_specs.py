"""What the tests check the metric specs (lswh_core/metrics.py) against: every metric at once,
the labels never allowed, and the sample names PromQL refers to."""

from __future__ import annotations

from lswh_core.metrics import INGRESS_METRICS, QUEUE_METRICS, WORKER_METRICS, Metric

ALL = INGRESS_METRICS + QUEUE_METRICS + WORKER_METRICS

# A label value never allowed: these would leak or explode (docs/operations.md, Metrics: no secret, URL or run id).
FORBIDDEN_LABELS = ("url", "secret", "run_id", "delivery_id", "trace_id", "job_id", "path")


def sample_names(metric: Metric) -> tuple[str, ...]:
    """The names its samples carry in the text format (what PromQL refers to)."""
    if metric.kind == "histogram":
        return tuple(f"{metric.name}{suffix}" for suffix in ("_bucket", "_sum", "_count"))
    return (metric.name,)
