"""schemathesis against /openapi.json: no input gets a 5xx, every answer fits the schema.

Property-based requests from the published schema (with the limits the
service enforces written into it, ``service/api/openapi.py``), a fixed seed
and a bounded number of examples per operation, checked with
``not_a_server_error`` and ``response_schema_conformance``:

- against the app with the fake decomposer and a scripted solver on a real
  socket (fast tier: every operation, 20 examples each);
- against the live service of the session (the real engine, ``vllm serve``
  as the solver; slow tier), where the embedded model's own
  ``/v1/chat/completions`` is served too. Generation there is real CPU
  decoding, so the examples are fewer and each is made cheap (``_cheap``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, given, settings

from tests.fakes import FakeDecomposer, ScriptedSolver, settings_for
from tests.streams import live

# schemathesis is imported in ``published_schema`` and ``run``: at module level every
# xdist worker would import it (most of a second) to collect these two tests.


def fuzz(max_examples: int) -> settings:
    return settings(
        max_examples=max_examples,
        derandomize=True,  # a fixed seed: the same examples every run
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )


def published_schema(url: str) -> Any:
    """The schema the service publishes at ``url``."""
    import schemathesis

    return schemathesis.openapi.from_url(f"{url}/openapi.json")


def run(schema: Any, max_examples: int, prepare: Callable[[Any], None] | None = None) -> int:
    """Every operation of ``schema``, ``max_examples`` generated requests each; returns
    how many requests were sent. The first failing check fails the test."""
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import response_schema_conformance

    checks = [not_a_server_error, response_schema_conformance]
    sent = 0
    for result in schema.get_all_operations():
        operation = result.ok()

        @fuzz(max_examples)
        @given(case=operation.as_strategy())
        def check(case: Any) -> None:
            nonlocal sent
            if prepare is not None:
                prepare(case)
            sent += 1
            case.call_and_validate(checks=checks, timeout=300)

        check()
    return sent


def test_no_server_error_with_fakes() -> None:
    decomposer = FakeDecomposer("1. How many apples does Tom have?\n2. How many in total?")
    # No embedded model (the fake has no engine): pipeline models and /solve only.
    settings = settings_for(serve_openai_api=False)
    with live(settings, ScriptedSolver("ok"), decomposer) as url:
        sent = run(published_schema(url), 20)
    assert sent >= 3 * 15


def _cheap(case: Any) -> None:
    """Bound the CPU a generated request may cost the real engine on a 2-core box.

    Short generations and plans; no generated deadline (one second is a fine
    deadline for a hosted pair, and a true 504 on CPU decoding); and never the
    base engine (``decomposer_adapter: "none"`` starts a second vLLM engine:
    minutes, on its first request).
    """
    body = case.body
    if isinstance(body, dict):
        for key in ("max_tokens", "max_completion_tokens"):
            if isinstance(body.get(key), int):
                body[key] = min(body[key], 8)
        if isinstance(body.get("max_subquestions"), int):
            body["max_subquestions"] = min(body["max_subquestions"], 2)
        body.pop("timeout_s", None)
        if body.get("decomposer_adapter") == "none":
            body.pop("decomposer_adapter")


def test_no_server_error_live(service_url: str) -> None:
    # Three per operation: the schema's edges are covered in process above (20
    # each); here they meet the real engine and `vllm serve`, seconds a request.
    sent = run(published_schema(service_url), 3, _cheap)
    assert sent >= 3 * 3  # the three POST operations, three examples each
