"""JSON-lines logging with the request id on every line and secrets redacted.

The request id lives in a context variable set by ``RequestIdMiddleware``;
asyncio tasks and ``to_thread`` copy the context, so every log line written
while serving a request carries its id without passing it around. So does the
current OpenTelemetry span: in a traced request every line carries
``trace_id`` and ``span_id``.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from service.observability import spans

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "request_id", default=None
)

# Attributes every LogRecord has; anything else came in through ``extra=``.
_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}
# uvicorn's ANSI-coloured duplicate of the message.
_STANDARD.add("color_message")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        rid = record.__dict__.get("request_id") or request_id_var.get()
        if rid:
            line["request_id"] = rid
        span = spans.current().get_span_context()
        if span.is_valid:
            line.update(spans.hex_ids(span))
        for key, value in record.__dict__.items():
            if key not in _STANDARD and key not in line:
                line[key] = value
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


class RedactSecrets(logging.Filter):
    """Last line of defence: replace configured secret values wherever they appear."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self._secrets = [s for s in secrets if s]

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._secrets:
            return True
        message = record.getMessage()
        if any(s in message for s in self._secrets):
            for secret in self._secrets:
                message = message.replace(secret, "***")
            record.msg, record.args = message, None
        return True


def configure_logging(level: str, secrets: Iterable[str] = ()) -> None:
    """Send every logger (ours, uvicorn's, vLLM's frontend) as JSON lines to stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RedactSecrets(secrets))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "vllm"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
    # We write one access line per request ourselves, with mode and stage timings.
    logging.getLogger("uvicorn.access").disabled = True
    # httpx2 logs every request line at INFO; keep it to warnings.
    logging.getLogger("httpx2").setLevel(logging.WARNING)
