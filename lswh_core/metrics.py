"""Every metric the pipeline exports: name, kind, labels and help, defined once.

Plain data, no prometheus-client import: the ingress and the workers each build their own
registry from these specs (ingress/metrics.py, workers/bookkeeping/metrics.py), and the tests check the
shipped dashboard and alert rules against the same names.

Labels carry bounded values only (outcomes, reason classes, route templates, rule ids): never
a secret, a URL, or an id per run or delivery, each of which would make a new time series.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Kind = Literal["counter", "gauge", "histogram"]

# Seconds: the ingress answers in milliseconds; LangSmith gives up at 5 s.
FAST_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
# Seconds: LangSmith, S3, slices and budget waits take from milliseconds to minutes.
SLOW_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
BODY_BYTES = tuple(float(2**n) for n in range(10, 26, 2))  # 1 KiB .. 16 MiB, x4
RUNS_PER_SLICE = (1.0, 10.0, 50.0, 100.0, 250.0, 500.0, 1000.0)

DELIVERY_OUTCOMES = ("accepted", "duplicate", "unauthorized", "bad_request", "too_large", "timeout", "unavailable")
RUN_OUTCOMES = ("written", "updated", "unchanged", "skipped", "failed")
# Why a run failed, as the job path classifies it; anything else is counted as "other".
REASON_CLASSES = ("permanent", "transient", "transform", "not_found", "invalid", "other")
SERVICES = ("langsmith", "s3")
WORKER_STATES = ("idle", "busy", "suspended", "started", "waiting_info")


@dataclass(frozen=True)
class Metric:
    name: str
    kind: Kind
    help: str
    labels: tuple[str, ...] = ()
    buckets: tuple[float, ...] = ()


# The ingress process (ingress/metrics.py).
DELIVERIES = Metric("lswh_deliveries_total", "counter", "Webhook deliveries answered, by outcome.", ("outcome",))
RUNS_RECEIVED = Metric("lswh_ingress_runs_total", "counter", "Runs in deliveries stored (accepted, not duplicate).")
REQUEST_SECONDS = Metric("lswh_ingress_request_duration_seconds", "histogram",
                         "Time from request start to answer for webhook deliveries.", buckets=FAST_SECONDS)
BODY_SIZE = Metric("lswh_ingress_request_body_bytes", "histogram", "Size of webhook delivery bodies read.",
                   buckets=BODY_BYTES)

# Read from Redis by the ingress at scrape time: the same value on every ingress replica, so
# rules and dashboards take max() over them.
QUEUE_DEPTH = Metric("lswh_queue_depth", "gauge", "Jobs waiting in the queue.", ("queue",))
QUEUE_OLDEST_AGE = Metric("lswh_queue_oldest_age_seconds", "gauge",
                          "Age of the oldest job waiting in the queue (0 when empty).", ("queue",))
JOBS_SCHEDULED = Metric("lswh_jobs_scheduled", "gauge", "Jobs waiting for a retry at a set time.", ("queue",))
JOBS_STARTED = Metric("lswh_jobs_started", "gauge", "Jobs a worker is running now.", ("queue",))
JOBS_FAILED = Metric("lswh_jobs_failed", "gauge", "Jobs in the failed registry (one per failed run).", ("queue",))
WORKERS = Metric("lswh_workers", "gauge", "Live workers on the queue, by state.", ("state",))
RECONCILE_LAST_SUCCESS = Metric("lswh_reconcile_last_success_timestamp_seconds", "gauge",
                                "Unix time the last reconciliation pass finished (absent until one has).")
REDIS_UP = Metric("lswh_redis_up", "gauge", "1 if the ingress could read queue figures from Redis at this scrape.")

# Each worker process (workers/bookkeeping/metrics.py), on its own port.
RUNS = Metric("lswh_runs_total", "counter",
              "Runs processed, by outcome; failed runs by reason class (empty for the others).",
              ("outcome", "reason_class"))
UPSTREAM_REQUESTS = Metric("lswh_upstream_requests_total", "counter",
                           "Requests to LangSmith and S3, by service, route template and status.",
                           ("service", "route", "status"))
UPSTREAM_SECONDS = Metric("lswh_upstream_request_duration_seconds", "histogram",
                          "Latency of requests to LangSmith and S3, by service and route template.",
                          ("service", "route"), SLOW_SECONDS)
RATE_LIMITED = Metric("lswh_rate_limited_total", "counter", "429 answers from LangSmith, by route.", ("route",))
BUDGET_WAIT = Metric("lswh_budget_wait_seconds", "histogram",
                     "Time spent waiting for the shared per-route rate budget.", ("route",), SLOW_SECONDS)
SLICE_SECONDS = Metric("lswh_slice_duration_seconds", "histogram",
                       "Time to hydrate, write and record one slice of a delivery.", buckets=SLOW_SECONDS)
SLICE_RUNS = Metric("lswh_slice_runs", "histogram", "Runs per processed slice.", buckets=RUNS_PER_SLICE)
# rule_id is a label here (and only here): a deployment has a handful of rules, each one a
# webhook someone configured, so the series stay few, and "which rule loses runs" is the question.
RUNS_LOST = Metric("lswh_runs_lost_total", "counter",
                   "Runs reconciliation found matched by a rule but never delivered.", ("rule_id",))

LANGSMITH_INFO_WAITING = Metric("lswh_langsmith_info_waiting", "gauge",
                                "1 while this worker waits for LangSmith's /info and takes no jobs, else 0.")

INGRESS_METRICS = (DELIVERIES, RUNS_RECEIVED, REQUEST_SECONDS, BODY_SIZE)
QUEUE_METRICS = (QUEUE_DEPTH, QUEUE_OLDEST_AGE, JOBS_SCHEDULED, JOBS_STARTED, JOBS_FAILED, WORKERS,
                 RECONCILE_LAST_SUCCESS, REDIS_UP)
WORKER_METRICS = (RUNS, UPSTREAM_REQUESTS, UPSTREAM_SECONDS, RATE_LIMITED, BUDGET_WAIT, SLICE_SECONDS, SLICE_RUNS,
                  RUNS_LOST, LANGSMITH_INFO_WAITING)
