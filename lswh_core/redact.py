"""Keep secrets and presigned URLs out of logs and stored exceptions.

A webhook secret travels in `?secret=`, a presigned URL's signature in its query string, and
uvicorn's access log, httpx's request log and `raise_for_status` all print full URLs. Every
query string is therefore dropped from text we log or store; paths stay, for debugging.
"""

from __future__ import annotations

import logging
import re

# (?!<redacted>): a line may pass through the filter more than once (handler and logger).
_URL_QUERY = re.compile(r"((?:[a-zA-Z][a-zA-Z0-9+.-]*://|/)[^\s?#\"'<>]*)\?(?!<redacted>)[^\s\"'<>]*")
_SECRET_PARAM = re.compile(r"(?i)((?:secret|signature|x-amz-[a-z-]+|token|sig|key)=)[^&\s\"']+")
_BEARER = re.compile(r"(?i)(bearer\s+)[^\s\"',]+")
_API_KEY = re.compile(r"(?i)(api[ _-]?key[\"']?\s*[:=]\s*[\"']?)[^\s\"',]+")
_USERINFO = re.compile(r"(://)[^/\s@]+@")

REDACTED = "<redacted>"


def redact(text: str) -> str:
    text = _URL_QUERY.sub(rf"\1?{REDACTED}", text)
    text = _SECRET_PARAM.sub(rf"\1{REDACTED}", text)
    text = _BEARER.sub(rf"\1{REDACTED}", text)
    text = _API_KEY.sub(rf"\1{REDACTED}", text)
    return _USERINFO.sub(rf"\1{REDACTED}@", text)


class RedactingFilter(logging.Filter):
    """Redacts the message and every string argument, keeping the args tuple's shape
    (uvicorn's access formatter reads its args by position)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "lswh_trusted", False):  # built from our own ids and counts (lswh_core.logs)
            return True
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {k: redact(v) if isinstance(v, str) else v for k, v in record.args.items()}
        if record.exc_info and record.exc_info[1] is not None and not record.exc_text:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True


_FILTER = RedactingFilter()
_NOISY_URL_LOGGERS = ("httpx", "httpcore", "urllib3", "requests")


def install_log_redaction() -> None:
    """Attach the filter to every handler that exists now (root and uvicorn's), and quiet the
    HTTP clients that log whole URLs at INFO/DEBUG."""
    loggers = [logging.getLogger(), *(logging.getLogger(n) for n in ("uvicorn", "uvicorn.access",
                                                                     "uvicorn.error", "rq.worker"))]
    for logger in loggers:
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
        for handler in logger.handlers:
            if _FILTER not in handler.filters:
                handler.addFilter(_FILTER)
    for name in _NOISY_URL_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
