"""What the job path counts, in one place: the worker's Prometheus figures (workers/metrics.py)."""

from __future__ import annotations


class Recorder:
    """Routes are templates (e.g. "POST /api/v2/runs/query"), never URLs; outcomes and reason
    classes are small fixed sets, so no label is unbounded."""

    def runs(self, outcome: str, n: int, reason_class: str | None) -> None:
        pass

    def request(self, service: str, route: str, status: str, seconds: float) -> None:
        pass

    def rate_limited(self, route: str) -> None:
        pass

    def budget_wait(self, route: str, seconds: float) -> None:
        pass

    def slice(self, seconds: float, runs: int) -> None:
        pass
