"""What the job path counts, in one place: the worker's Prometheus figures (workers/metrics.py)."""

from __future__ import annotations

from workers import metrics


class Recorder:
    """Routes are templates (e.g. "POST /api/v2/runs/query") or budget names, never URLs;
    outcomes and reason classes are small fixed sets, so no label is unbounded."""

    def runs(self, outcome: str, n: int, reason_class: str | None) -> None:
        metrics.count_runs(outcome, n, reason_class)

    def request(self, service: str, route: str, status: str, seconds: float) -> None:
        metrics.observe_request(service, route, status, seconds)

    def rate_limited(self, route: str) -> None:
        metrics.count_rate_limited(route)

    def budget_wait(self, route: str, seconds: float) -> None:
        metrics.observe_budget_wait(route, seconds)

    def slice(self, seconds: float, runs: int) -> None:
        metrics.observe_slice(seconds, runs)
