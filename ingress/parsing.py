"""Check a delivery's body without stalling the event loop: small ones inline, large ones in
a pool of processes.

Measured (bench/ingress_large.py --measure-parse, the shared 2-core machine, quiet / busy):
parse_delivery takes 0.01 / 0.03 ms at 1.5 KB, 0.2 / 0.8 ms at 64 KiB, 4 / 24 ms at 1 MiB and
156 / 650 ms at 25 MiB, of which orjson.loads is 87 / 360 ms. orjson holds the GIL throughout,
so a thread would not help: the event loop would still wait out every parse, and four 25 MiB
bodies would hold small deliveries for up to a second or more. A process parses on another
core; the body crosses a pipe (written by the executor's feeder thread, GIL released) and only
the run count comes back. The trip costs ~1 ms at 64 KiB and ~3 ms at 256 KiB (quiet), but
the event loop is stalled only while the body is copied, not while it is parsed. At or under
INLINE_MAX_BYTES the stall of parsing inline stays under a millisecond, so it stays inline.

The pool is small on purpose: it also bounds how many large bodies are expanded into Python
objects at once (a 25 MiB body takes ~200 MB while parsed); more wait their turn.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from ingress.payload import parse_delivery, threads_in
from lswh_core.contract import delivery_id_of

INLINE_MAX_BYTES = 64 * 1024
PARSE_PROCESSES = max(1, min(2, (os.cpu_count() or 1)))


class ParserUnavailable(Exception):
    """The parse process died (e.g. killed for memory): answered 503, LangSmith retries."""


# (runs, threads): the number of runs, None for a body without `runs` (a thread rule's delivery
# or a shape not known yet); the number of threads when `threads` is a list, else None.
Counts = tuple[int | None, int | None]


def counts_in(body: bytes) -> Counts:
    """The body's counts, or BadDelivery (pickled back as is from the parse process)."""
    doc = parse_delivery(body)
    runs = doc.get("runs")
    return (len(runs) if isinstance(runs, list) else None), threads_in(doc)


def _ready() -> int:
    return os.getpid()


def _leave_signals_to_the_ingress() -> None:
    """A stop signal reaches the whole process group (Ctrl-C, tini -g, a test's killpg): the
    ingress drains in-flight requests, then shuts the pool down itself. A parse process that
    died first would turn those requests into 503s. If the ingress dies outright, the pool's
    pipe closes and its processes exit on their own."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


class BodyChecker:
    def __init__(self, processes: int = PARSE_PROCESSES) -> None:
        self._processes = processes
        self._pool: ProcessPoolExecutor | None = None

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            # spawn: forking a process that runs an event loop and threads is unsafe, and a
            # spawned child imports only this module's few dependencies.
            self._pool = ProcessPoolExecutor(self._processes, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=_leave_signals_to_the_ingress)
        return self._pool

    async def start(self) -> None:
        """Start the processes now, not on the first large delivery (spawning takes ~0.2 s)."""
        loop = asyncio.get_running_loop()
        pool = self._executor()
        await asyncio.gather(*(loop.run_in_executor(pool, _ready) for _ in range(self._processes)))

    async def check(self, body: bytes) -> tuple[str, int | None, int | None]:
        """(delivery id, number of runs or None without `runs`, number of threads or None), or
        BadDelivery."""
        if len(body) <= INLINE_MAX_BYTES:
            return delivery_id_of(body), *counts_in(body)
        loop = asyncio.get_running_loop()
        try:
            runs, threads = await loop.run_in_executor(self._executor(), counts_in, body)
        except BrokenProcessPool:
            broken, self._pool = self._pool, None  # a new pool for the next request
            if broken is not None:
                broken.shutdown(wait=False, cancel_futures=True)
            raise ParserUnavailable from None
        # hashlib releases the GIL for large inputs: ~40 ms at 25 MiB, off the loop.
        return await asyncio.to_thread(delivery_id_of, body), runs, threads

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
