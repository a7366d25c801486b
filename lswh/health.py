"""`lswh healthcheck --worker`: is the worker of this container (or pod) alive?

A worker proves it is alive by its RQ heartbeat: RQ writes `last_heartbeat` into the worker's
registration at every turn of its loop (at most MAINTENANCE_SECONDS apart when idle) and the
worker's own thread every HEARTBEAT_SECONDS while a job runs (workers/worker.py). One worker
process runs per container, and RQ registers it with the container's hostname, so "this
container's worker" is the registered worker with this hostname. Any fresh heartbeat counts as
alive, whatever the worker is doing or waiting for.

Redis that cannot be read is not the worker's fault, and restarting the worker would not help
(it waits for Redis itself): the check then passes and says why.
"""

from __future__ import annotations

import datetime as dt
import socket

import redis
from rq import Worker

# Four idle turns of the worker's loop (MAINTENANCE_SECONDS = 10 in workers/worker.py) and more
# than twice its heartbeat TTL: a worker that misses this is wedged, not busy.
MAX_AGE_SECONDS = 60.0


def worker_health(connection: redis.Redis, hostname: str | None = None,
                  max_age: float = MAX_AGE_SECONDS) -> tuple[bool, str]:
    """(alive, why) for the worker registered from `hostname` (default: this host)."""
    hostname = hostname or socket.gethostname()
    try:
        workers = [w for w in Worker.all(connection=connection) if w.hostname == hostname]
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
        return True, f"cannot read Redis ({type(exc).__name__}); not the worker's fault, not restarting it"
    if not workers:
        return False, f"no worker registered from host {hostname}"
    now = dt.datetime.now(dt.UTC)
    beats = [w.last_heartbeat for w in workers if w.last_heartbeat is not None]
    if not beats:
        return False, f"worker on {hostname} has no heartbeat"
    latest = max(b if b.tzinfo else b.replace(tzinfo=dt.UTC) for b in beats)
    age = (now - latest).total_seconds()
    if age > max_age:
        return False, f"worker on {hostname}: last heartbeat {age:.0f} s ago (limit {max_age:.0f} s)"
    return True, f"worker on {hostname}: heartbeat {age:.0f} s ago"
