"""Logging for every process: one JSON object per line (LSWH_LOG_FORMAT=json, the default) or
readable text (`text`, what `lswh dev` uses), with the redacting filter on the one handler.

A delivery is followed by its `delivery_id` field: the ingress writes it on its line per
delivery, and code running a job binds it (and `rule_id`, `run_id`) with `log_context`, so every
line logged meanwhile, RQ's own included, carries it. `grep <delivery_id>` then finds them all.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import sys
import time
from collections.abc import Iterator
from typing import Any, TextIO

import orjson

from lswh_core.redact import RedactingFilter, install_log_redaction, redact

_context: contextvars.ContextVar[dict[str, Any]] = contextvars.ContextVar("lswh_log_context", default={})  # noqa: B039

# What every LogRecord has; anything else on a record came from `extra=` or log_context.
# uvicorn's color_message repeats the message with terminal colour codes.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message", "asctime", "taskName", "color_message"}
# Values we compute ourselves (hex ids, counts, fixed words): not worth the redaction regexes.
_TRUSTED = frozenset({"delivery_id", "job_id", "outcome", "runs", "bytes", "ms", "status"})
_PLAIN = (int, float, bool, type(None))
# A record with this attribute set true is built from such values only (the ingress's line per
# delivery, on the hot path): the redacting filter leaves it alone (lswh_core.redact).
TRUSTED = "lswh_trusted"


@contextlib.contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Fields added to every line logged in this context (thread or task); None values are left out."""
    token = _context.set({**_context.get(), **{k: v for k, v in fields.items() if v is not None}})
    try:
        yield
    finally:
        _context.reset(token)


class ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in _context.get().items():
            if key not in record.__dict__:
                setattr(record, key, value)
        return True


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    out: dict[str, Any] = {}
    attributes = record.__dict__
    for key in attributes.keys() - _STANDARD:  # a set difference in C: records carry ~25 attributes
        value = attributes[key]
        if value is None or key.startswith("_") or key == TRUSTED:
            continue
        if not isinstance(value, _PLAIN):
            value = str(value)
            if key not in _TRUSTED:
                value = redact(value)  # a run id or rule id comes from the payload: anything
        out[key] = value
    return out


def _exception(record: logging.LogRecord, formatter: logging.Formatter) -> str | None:
    if record.exc_info:  # the redacting filter has normally turned it into exc_text already
        return redact(formatter.formatException(record.exc_info))
    return record.exc_text or None


class JsonFormatter(logging.Formatter):
    """{"time", "level", "logger", "message", ...fields, "exception"?} on one line."""

    _second = -1
    _second_text = ""

    def _time(self, record: logging.LogRecord) -> str:
        second = int(record.created)
        if second != self._second:  # strftime once a second, not once a line
            self._second, self._second_text = second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._second_text}.{int(record.msecs):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self._time(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(_fields(record))
        exception = _exception(record, self)
        if exception:
            entry["exception"] = exception
        return orjson.dumps(entry, default=str).decode()


class TextFormatter(logging.Formatter):
    """`time level logger: message key=value ...`, for a terminal."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = " ".join(f"{k}={v}" for k, v in _fields(record).items())
        return f"{line} {fields}" if fields else line

    def formatException(self, ei: Any) -> str:
        return redact(super().formatException(ei))


def formatter_for(log_format: str) -> logging.Formatter:
    return TextFormatter() if log_format == "text" else JsonFormatter()


def skip_unused_record_attributes() -> None:
    """Neither format prints the caller's file and line, thread, process or task, so logging need
    not look them up for each record (the `Optimization` section of the logging HOWTO)."""
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    if hasattr(logging, "logAsyncioTasks"):
        logging.logAsyncioTasks = False


class TurnBatchedStreamHandler(logging.StreamHandler[TextIO]):
    """Lines logged while an event loop runs are written together when the loop's turn ends:
    one write, one system call, per turn instead of per line (the ingress logs a line per
    delivery, many deliveries finish in one turn under load). A line logged with no loop
    running (start-up, another thread) is written at once, after any still waiting. flush()
    writes what waits, so logging.shutdown at exit loses nothing; a SIGKILL loses at most the
    lines of the turn in progress."""

    def __init__(self, stream: Any = None) -> None:
        super().__init__(stream)
        self._waiting: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._write_waiting()
            super().emit(record)
            return
        try:
            line = self.format(record)
        except Exception:
            self.handleError(record)
            return
        if not self._waiting:
            loop.call_soon(self._write_waiting)
        self._waiting.append(line)

    def _write_waiting(self) -> None:
        with self.lock:  # type: ignore[union-attr]  # Handler.__init__ sets it; typeshed allows None
            lines, self._waiting = self._waiting, []
            if not lines:
                return
            try:
                self.stream.write(self.terminator.join(lines) + self.terminator)
                super().flush()
            except Exception:
                self.handleError(logging.makeLogRecord({"msg": f"writing {len(lines)} log lines"}))

    def flush(self) -> None:
        self._write_waiting()
        super().flush()


def setup_logging(log_format: str, level: str = "INFO") -> None:
    """One handler on the root logger; every library logger (RQ, uvicorn) propagates to it."""
    skip_unused_record_attributes()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter_for(log_format))
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level)
    install_log_redaction()


def uvicorn_log_config(log_format: str) -> dict[str, Any]:
    """uvicorn's logging as ours (its loggers propagate to our root handler), access log off:
    it prints the query string, the secret, and redacting it halved the ingress's throughput.
    The ingress writes its own line per delivery instead (ingress/app.py), batched per turn of
    its event loop (TurnBatchedStreamHandler)."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {
            "context": {"()": f"{__name__}.ContextFilter"},
            "redact": {"()": f"{RedactingFilter.__module__}.RedactingFilter"},
        },
        "formatters": {"lswh": {"()": f"{__name__}.{type(formatter_for(log_format)).__name__}"}},
        "handlers": {"default": {"class": f"{__name__}.TurnBatchedStreamHandler", "stream": "ext://sys.stderr",
                                 "formatter": "lswh", "filters": ["context", "redact"]}},
        "root": {"handlers": ["default"], "level": "INFO"},
        "loggers": {
            "uvicorn": {"level": "INFO"},
            "uvicorn.error": {"level": "INFO"},
            "uvicorn.access": {"level": "WARNING", "propagate": False},
        },
    }
