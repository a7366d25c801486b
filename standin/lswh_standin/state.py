"""Everything the stand-in holds, in memory, and the small helpers every route shares."""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from lswh_standin.limits import CLOUD_LIMITS, Limit, SlidingWindows
from lswh_standin.profiles import Profile

# Any key with this prefix is a valid API key and its own rate-limit bucket.
API_KEY_PREFIX = "lsv2-standin"
DEFAULT_API_KEY = "lsv2-standin-key"
TENANT_ID = "2ebda79f-2946-4491-a9ad-d642f49e0815"
SESSION_ID = "6a3be6a2-9a8c-4fc8-b4c6-a8983b286cc5"


def now() -> datetime:
    return datetime.now(UTC)


def iso(moment: datetime | None = None) -> str:
    return (moment or now()).isoformat()


def parse_time(value: Any) -> datetime | None:
    """An RFC 3339 time (naive ones read as UTC), or None when it is not one."""
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def rfc3339_or_none(value: Any) -> datetime | None:
    """A time as LangSmith's API schema types it, `format: date-time` (OpenAPI: RFC 3339 section
    5.6 `date-time`, whose offset is required); None for anything else, a time without an offset
    included. The SDK's generated client marks these fields `PropertyInfo(format="iso8601")`
    (types/annotation_queues/item_create_params.py `start_time`, types/run_query_v2_params.py
    `min_start_time`/`max_start_time`, whose docstring says "(RFC3339)"), the mark its generator
    gives a schema's date-time. Whether
    LangSmith itself refuses a time without an offset is not documented: the stand-in is as strict
    as the schema reads, so a client that relies on leniency fails here first."""
    if not isinstance(value, str) or "T" not in value.upper():
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


def uuid_or_none(value: Any) -> str | None:
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        return None


class ApiError(Exception):
    """A request the stand-in refuses, with LangSmith's status for it."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


class BadRequest(ApiError):
    def __init__(self, detail: str) -> None:
        super().__init__(400, detail)


class Unprocessable(ApiError):
    """422, FastAPI's answer to a body or parameter that fails validation, as LangSmith's API gives it."""

    def __init__(self, detail: str) -> None:
        super().__init__(422, detail)


def uuid_params(request: Request, name: str) -> list[str]:
    """A repeatable UUID query parameter; one malformed value refuses the request with 422, as
    LangSmith's API validates its parameters (issue 9: a malformed run id fails the whole listing)."""
    values = request.query_params.getlist(name)
    ids = [uuid_or_none(v) for v in values]
    bad = [v for v, i in zip(values, ids, strict=True) if i is None]
    if bad:
        raise Unprocessable(f"{name}: not a UUID: {bad[0][:80]!r}")
    return [str(i) for i in ids]


def detail(status: int, text: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": text}, status_code=status, headers=headers)


async def json_body(request: Request) -> Any:
    try:
        return json.loads(await request.body())
    except ValueError as e:
        raise BadRequest(f"body is not JSON: {e}") from None


@dataclass
class Fault:
    method: str
    prefix: str
    times: int
    status: int | None = None
    retry_after: int | None = None
    stall_seconds: float = 0.0

    def matches(self, method: str, path: str) -> bool:
        return self.method in ("*", method) and path.startswith(self.prefix)

    def describe(self) -> dict[str, Any]:
        return {
            "route": f"{self.method} {self.prefix}",
            "times": self.times,
            "status": self.status,
            "retry_after": self.retry_after,
            "stall_seconds": self.stall_seconds,
        }


@dataclass
class S3Object:
    data: bytes
    redirect_to: str | None = None


@dataclass
class Race:
    """Examples another writer creates right after the stand-in answers an examples listing."""

    times: int
    examples: list[dict[str, Any]]  # given specs; empty = create the listed ids that are missing
    per_list: int | None = None  # with listed ids: how many of the missing ones to create each time
    fired: int = 0

    def describe(self) -> dict[str, Any]:
        mode = "given" if self.examples else "listed"
        return {"mode": mode, "times": self.times, "per_list": self.per_list, "fired": self.fired}


@dataclass
class State:
    startup_latency_ms: int
    startup_limits: bool
    startup_profile: Profile
    latency_ms: int = 0
    # `GET /info` answers 503 this many more times (`--info-failures`, `POST /_admin/info {"fail": N}`).
    info_failures: int = 0
    limits_enabled: bool = True
    profile: Profile = field(init=False)
    limits: dict[str, Limit] = field(default_factory=lambda: dict(CLOUD_LIMITS))
    windows: SlidingWindows = field(default_factory=SlidingWindows)
    secret: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    datasets: dict[str, dict[str, Any]] = field(default_factory=dict)
    examples: dict[str, dict[str, Any]] = field(default_factory=dict)
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)
    feedback: dict[str, dict[str, Any]] = field(default_factory=dict)
    rules: dict[str, dict[str, Any]] = field(default_factory=dict)
    queues: dict[str, dict[str, Any]] = field(default_factory=dict)
    objects: dict[str, S3Object] = field(default_factory=dict)
    faults: list[Fault] = field(default_factory=list)
    races: list[Race] = field(default_factory=list)
    stats: Counter[str] = field(default_factory=Counter)
    rate_limited: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self.profile = self.startup_profile
        self.limits_enabled = self.startup_limits

    def take_fault(self, method: str, path: str) -> Fault | None:
        for fault in self.faults:
            if fault.matches(method, path):
                fault.times -= 1
                if fault.times <= 0:
                    self.faults.remove(fault)
                return fault
        return None

    def sign(self, bucket: str, key: str, amz_date: str, expires: str) -> str:
        message = f"{bucket}\n{key}\n{amz_date}\n{expires}".encode()
        return hmac.new(self.secret, message, hashlib.sha256).hexdigest()

    def reset(self, *, everything: bool) -> None:
        """Back to how the process started; runs, feedback and objects stay unless `everything`."""
        self.datasets.clear()
        self.examples.clear()
        self.faults.clear()
        self.races.clear()
        self.stats.clear()
        self.rate_limited.clear()
        self.windows.clear()
        self.limits = dict(CLOUD_LIMITS)
        self.limits_enabled = self.startup_limits
        self.profile = self.startup_profile
        self.latency_ms = self.startup_latency_ms
        self.info_failures = 0
        if everything:
            self.runs.clear()
            self.feedback.clear()
            self.objects.clear()
            self.rules.clear()
            self.queues.clear()


def state_of(request: Request) -> State:
    state: State = request.app.state.standin
    return state
