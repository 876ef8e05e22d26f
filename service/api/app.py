"""The app factory and the lifespan that owns the engine and the HTTP client.

Nothing happens at import time: ``create_app(settings)`` builds an app, and
its lifespan creates one pooled ``httpx2.AsyncClient``, the decomposer (and
the chat replies of its engine, ``EmbeddedChat``), the solver chains and the
adapter registry, once. The
decomposer loads in a background task, so the server answers ``/healthz`` at
once and ``/readyz`` (and ``/solve``) say 503 until the model is ready.

The client is httpx2 (httpx's API, by its author) rather than httpx: with
hundreds of pooled solver connections, httpcore 1.0 spends most of the
service's CPU rescanning its pool on every request (docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator

import httpx2
from fastapi import FastAPI
from fastapi_offline import FastAPIOffline
from opentelemetry.sdk.trace import TracerProvider

from service import __version__
from service.api import openai_compat, openapi, routes, usage
from service.api.errors import install_error_handlers
from service.api.limits import SpendMiddleware
from service.api.middleware import (
    AdmissionMiddleware,
    BodyLimitMiddleware,
    ObservabilityMiddleware,
    RequestIdMiddleware,
)
from service.api.recording import LedgerMiddleware
from service.api.state import Services
from service.api.trace_middleware import TraceMiddleware
from service.cache import build_cache
from service.core.settings import Settings
from service.decomposer import Decomposer, build_decomposer
from service.decomposer.adapters import Adapters
from service.embedded.chat import EmbeddedChat
from service.ledger import LedgerWriter, default_url, open_store
from service.observability.client_trace import carry_trace
from service.observability.metrics import Metrics
from service.observability.trace_setup import Tracing
from service.pipeline.budget import Budget
from service.pipeline.modes import Pipeline
from service.pipeline.token_estimate import TokenEstimator, tokenizer_file
from service.solver import SolverDeps, build_solvers
from service.tenancy.limiter import Limiter
from service.tenancy.redis_store import RedisStore, connect
from service.tenancy.store import LimitStore, MemoryStore

log = logging.getLogger(__name__)


def _http_client(
    settings: Settings, transport: httpx2.AsyncBaseTransport | None, traced: bool
) -> httpx2.AsyncClient:
    s = settings.solver
    return httpx2.AsyncClient(
        transport=transport,
        # Traced: every call carries its request's trace (none when tracing is off).
        event_hooks={"request": [carry_trace]} if traced else None,
        limits=httpx2.Limits(
            max_connections=s.max_connections, max_keepalive_connections=s.max_connections
        ),
        timeout=httpx2.Timeout(s.read_timeout_s, connect=s.connect_timeout_s),
    )


def _limits_store(settings: Settings) -> LimitStore:
    """Redis when DIVCONQ_REDIS_URL is set (every replica shares it), else this process."""
    if settings.redis_url is None:
        return MemoryStore()
    client = connect(settings.redis_url.get_secret_value(), settings.limits.store_timeout_s)
    return RedisStore(client, settings.limits.key_prefix)


def ledger_url(settings: Settings) -> str:
    """``DIVCONQ_LEDGER_URL``, else SQLite under the data directory."""
    if settings.ledger_url is not None:
        return settings.ledger_url.get_secret_value()
    return default_url(settings.data_dir)


async def open_ledger(settings: Settings, metrics: Metrics) -> LedgerWriter | None:
    """The ledger's writer, its store connected and migrated (``LedgerUnavailable`` if not)."""
    if not settings.ledger.enabled:
        return None
    store = open_store(ledger_url(settings))
    await store.open()
    writer = LedgerWriter(store, settings.ledger, metrics)
    writer.start()
    return writer


def _log_load_failure(task: asyncio.Task[None]) -> None:
    # The decomposer records its own failure state; this only marks the
    # exception as retrieved so asyncio does not warn at shutdown.
    if not task.cancelled():
        task.exception()


# A server's young-generation threshold (``gc.set_threshold``'s first value;
# Python's is 700): see ``_tune_collector``.
SERVER_GC_YOUNG = 10_000


def _tune_collector(task: asyncio.Task[None]) -> None:
    """Set the garbage collector for a long-running server, once startup is over.

    - **Freeze what startup made** (modules, the app, the engine's client):
      a full collection walks every tracked object, about 40 ms on the
      service's startup heap, and it came round every few dozen requests
      once requests left objects alive for a while (spans waiting for the
      batch exporter do): a 40 ms stall in the middle of some request.
      Frozen (``gc.freeze``), those objects are never walked again.
    - **A larger young generation** (``SERVER_GC_YOUNG`` allocations, not
      700): each request leaves some objects to the collector (reference
      cycles in the HTTP stack, spans queued for export), so at 700 a young
      collection, about 0.2 ms with the caches cold, fell inside 15 % of
      untraced `static` requests and 23 % of traced ones. At 10,000 it falls
      inside about one request in a hundred and takes about ten times as
      long: the same work, moved from the median to the tail.
    """
    if not task.cancelled():
        gc.freeze()
        _, older, oldest = gc.get_threshold()
        gc.set_threshold(SERVER_GC_YOUNG, older, oldest)


def create_app(
    settings: Settings | None = None,
    *,
    transport: httpx2.AsyncBaseTransport | None = None,
    decomposer: Decomposer | None = None,
    tracer_provider: TracerProvider | None = None,
    limit_store: LimitStore | None = None,
    server_gc: bool = False,
) -> FastAPI:
    """The app. ``transport``, ``decomposer``, ``tracer_provider`` and ``limit_store``
    are the test seam; ``server_gc`` is the server process's (``divconq serve``):
    once the decomposer has started, the garbage collector is set for a server
    (``_tune_collector``: the startup heap frozen, a larger young generation),
    which one app per process allows and a test process with many apps does not.

    - ``transport`` carries every upstream HTTP call (solvers, an HTTP
      decomposer): ``httpx2.MockTransport(handler)`` answers them in process.
    - ``decomposer`` replaces the configured backend (the in-process vLLM
      engine): any object with the ``Decomposer`` protocol.
    - ``tracer_provider`` replaces the one the standard ``OTEL_*`` variables
      configure (``service.observability.tracing``): a ``spans.Provider``
      with an in-memory exporter records the spans in process (our light
      spans); any other SDK provider gets the SDK's own spans.
    - ``limit_store`` replaces the per-key limits' store (in process or
      Redis): a ``MemoryStore`` on a test's clock, a store that fails.
    """
    settings = settings or Settings()
    # One registry per app: tests run several apps in one process.
    metrics = Metrics(max_in_flight=settings.max_in_flight)
    tracing = Tracing(tracer_provider)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        tracing.start_from_env(metrics.span_dropped)
        http = _http_client(settings, transport, tracing.enabled)
        decomposer_ = decomposer or build_decomposer(settings, http)
        # The decomposer's engine (once loaded) answers the embedded solver and /v1.
        embedded = EmbeddedChat(
            lambda: getattr(decomposer_, "engine", None),
            calculator=settings.calculator,
            count=lambda outcome: metrics.calculator.labels(outcome).inc(),
        )
        solvers = build_solvers(settings, SolverDeps(http, embedded), metrics)
        cache = build_cache(settings, metrics)
        store = limit_store if limit_store is not None else _limits_store(settings)
        ledger = await open_ledger(settings, metrics)
        estimator = TokenEstimator(tokenizer_file(settings))
        app.state.services = Services(
            settings=settings,
            http=http,
            decomposer=decomposer_,
            embedded=embedded,
            adapters=Adapters.from_settings(settings),
            solvers=solvers,
            # A disabled cache is no cache: no key built, no lookup, no "miss" on a trace.
            pipeline=Pipeline(
                settings, decomposer_, metrics, estimator, cache=cache if cache.enabled else None
            ),
            metrics=metrics,
            cache=cache,
            limiter=Limiter(settings, store, metrics),
            ledger=ledger,
            budget=Budget(settings, decomposer_, estimator),
        )
        loader = asyncio.create_task(decomposer_.start(), name="decomposer-start")
        loader.add_done_callback(_log_load_failure)
        if server_gc:
            loader.add_done_callback(_tune_collector)
        try:
            yield
        finally:
            loader.cancel()
            with contextlib.suppress(BaseException):
                await loader
            await decomposer_.aclose()
            if ledger is not None:
                # After the server finished its requests: every row is queued.
                await ledger.aclose()
            await cache.aclose()
            await store.aclose()
            await http.aclose()
            # Flushing may wait on the trace endpoint (bounded): not on the event loop.
            await asyncio.to_thread(tracing.shutdown)

    # Swagger UI and ReDoc from the package's own copies (fastapi-offline), not
    # a CDN: /docs works on a machine without network, as the service does.
    app = FastAPIOffline(
        title="divconq",
        version=__version__,
        description="Decompose-then-solve: a small decomposer LLM and a large solver LLM.",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    openapi.install(app, settings)
    app.include_router(routes.router)
    app.include_router(usage.router)
    # The pipeline models always; the embedded model where this process runs it.
    app.include_router(openai_compat.router)
    # Added last = outermost: the id exists before anything else runs, and
    # 429s from admission and 413s from the body limit are counted and logged.
    # The spend (per-key limits' settlement) wraps only the app itself.
    app.add_middleware(SpendMiddleware)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(AdmissionMiddleware, metrics=metrics, max_in_flight=settings.max_in_flight)
    app.add_middleware(ObservabilityMiddleware, metrics=metrics)
    # Inside the request id: the server span covers every answer, 413s and 429s included.
    app.add_middleware(TraceMiddleware, tracing_=tracing)
    # Outside the 413s and 429s too: every API request gets its row.
    app.add_middleware(
        LedgerMiddleware,
        writer=lambda: getattr(getattr(app.state, "services", None), "ledger", None),
        content=settings.ledger.content,
    )
    app.add_middleware(RequestIdMiddleware)
    return app
