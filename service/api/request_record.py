"""The per-request record: the facts one request gathers on its way through the app.

``RequestIdMiddleware`` (the outermost middleware) creates one ``RequestRecord``
per HTTP request and puts it in the ASGI scope under ``SCOPE_KEY``
(``"divconq.request"``: namespaced, as Starlette names its own scope keys
``"starlette.*"``). Everything below it, middleware and handlers alike, reads
and writes that one typed object through ``record(scope)`` or
``record_of(request)``; nothing passes per-request facts in bare string keys of
``scope["state"]`` any more.

Adding a per-request fact (a tenant, a trace id, a cache result, ...):

1. add a typed field here, with a default and a comment saying who writes it
   and who reads it;
2. write it where the fact becomes known (a middleware, a handler, the
   streaming response) with ``record(scope).field = ...`` or
   ``record_of(request).field = ...``;
3. read it where it is needed (``ObservabilityMiddleware`` records the access
   log line from ``log_fields`` and the metrics from ``endpoint``, ``mode``
   and ``status``).

Keep fields bounded and free of secrets: the access log and the metric labels
are built from them.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel
from starlette.requests import Request
from starlette.types import Message, Scope, Send

from service.core.keys import ApiKey
from service.tenancy.limiter import Ticket

if TYPE_CHECKING:
    from service.pipeline.plan import Plan

SCOPE_KEY = "divconq.request"


def _admitted_up_front() -> None:
    """``admit`` where admission needs no decision from the handler: a no-op."""


@dataclass
class RequestRecord:
    """What is known about one request; created by ``RequestIdMiddleware``."""

    # The request's id (``X-Request-ID`` given or made); echoed in the response,
    # every log line and error messages.
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    # The metric label of the endpoint where the path alone does not say
    # (``/v1/chat/completions``: ``chat_completions`` for a pipeline model);
    # written by the handler, read by ObservabilityMiddleware.
    endpoint: str | None = None
    # The mode the request runs in (a metric label); written by the handler.
    mode: str | None = None
    # Bounded facts for the access log line (stage timings, token counts).
    log_fields: dict[str, Any] = field(default_factory=dict)
    # What the request came to where the status line cannot say: a stream that
    # failed or lost its client after it began, a client gone before its body
    # (499). None = the status line's.
    status: int | None = None
    # Takes an in-flight slot for a request whose handler decides whether it
    # is admitted (``/v1/chat/completions``): set by AdmissionMiddleware,
    # raises ``Overloaded`` past the bound.
    admit: Callable[[], None] = _admitted_up_front
    # In a traced request, the server span's ``trace_id`` and ``span_id`` (hex):
    # written by TraceMiddleware, read by the 500 handler, which runs outside it.
    trace_ids: dict[str, str] = field(default_factory=dict)
    # The API key the request authenticated with: its tenant (name, limits,
    # admin). Written by ``auth.require_api_key``; None without keys configured.
    # Read through ``service.api.caller``
    # (the name for logs, metric labels, the cache namespace and the ledger).
    api_key: ApiKey | None = None
    # What per-key admission counted for this request (``service.api.limits``);
    # settled by ``SpendMiddleware`` when the request ends.
    limits_ticket: Ticket | None = None
    # The resolved plan and the response model of a pipeline request (content
    # included): written by the handlers, read by LedgerMiddleware for the
    # request's ledger row. Never logged.
    plan: Plan | None = None
    result: BaseModel | None = None


def record(scope: Scope) -> RequestRecord:
    """The request's record (created here if no middleware made one: a bare app in a test)."""
    rec = scope.get(SCOPE_KEY)
    if not isinstance(rec, RequestRecord):
        rec = scope[SCOPE_KEY] = RequestRecord()
    return rec


def record_of(request: Request) -> RequestRecord:
    """``record(request.scope)``, for handlers."""
    return record(request.scope)


class StatusLine:
    """Passes the app's messages on to ``send``, keeping the status it answered with.

    For the middleware that account for a request once it ends (metrics and
    the access log, the ledger): ``final`` is what the request came to.
    """

    def __init__(self, send: Send) -> None:
        # What the client gets if the app dies before answering.
        self.status = 500
        self._send = send

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = int(message["status"])
        await self._send(message)

    def final(self, rec: RequestRecord) -> int:
        """The record's status where it says (a stream that failed after it began,
        a client gone), else the status line's."""
        return rec.status if rec.status is not None else self.status
