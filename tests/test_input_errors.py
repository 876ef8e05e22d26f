"""Errors that say what to fix: malformed JSON, a body that is not JSON, and the
OpenAI fields the facade cannot honour (docs/api.md has the table)."""

from __future__ import annotations

from typing import Any

import pytest

from service.core.settings import Settings
from tests.fakes import Q, ScriptedSolver, error_of, metric, serve, settings_for


@pytest.mark.parametrize(
    ("raw", "where", "expected"),
    [
        (b'{"question": "x",\n  "mode": static}', "line 2, column 11", "expected a value"),
        (b'{"question": "x" "mode": "static"}', "line 1, column 18", "a comma"),
        (b'{question: "x"}', "line 1, column 2", "a property name in double quotes"),
        (b'{"question": "x"} {}', "line 1, column 19", "more after the JSON value"),
        (b'{"question": "x', "line 1, column 14", "the closing double quote"),
    ],
)
async def test_malformed_json_names_line_column_and_what_was_expected(
    raw: bytes, where: str, expected: str
) -> None:
    async with serve(settings_for(), ScriptedSolver("ok")) as client:
        resp = await client.post(
            "/solve", content=raw, headers={"content-type": "application/json"}
        )
    message = error_of(resp, 422, "invalid_request")["message"]
    assert message.startswith("the body is not valid JSON: at " + where), message
    assert expected in message


async def test_an_empty_body_says_so() -> None:
    async with serve(settings_for(), ScriptedSolver("ok")) as client:
        resp = await client.post(
            "/solve", content=b"", headers={"content-type": "application/json"}
        )
    assert error_of(resp, 422, "invalid_request")["message"].startswith("the body is empty")


@pytest.mark.parametrize(
    ("headers", "said"),
    [
        (
            {"content-type": "application/x-www-form-urlencoded"},
            "application/x-www-form-urlencoded",
        ),
        ({"content-type": "text/plain"}, "'text/plain'"),
        ({}, "has no Content-Type"),
    ],
)
async def test_a_body_without_a_json_content_type_says_so(
    headers: dict[str, str], said: str
) -> None:
    async with serve(settings_for(), ScriptedSolver("ok")) as client:
        resp = await client.post(
            "/solve", content=b'{"question": "What is 2 + 3?"}', headers=headers
        )
    message = error_of(resp, 422, "invalid_request")["message"]
    assert "Content-Type: application/json" in message and said in message


# --- the facade: one set of limits, unsupported fields named ------------------------------

MESSAGES = [{"role": "user", "content": Q}]


@pytest.mark.parametrize("model", ["divconq-static", "divconq-direct", "gemma-3-270m"])
@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "'tools'"),
        ({"tool_choice": "required"}, "'tool_choice'"),
        ({"functions": [{"name": "f"}]}, "'functions'"),
        ({"response_format": {"type": "json_object"}}, "'response_format'"),
        ({"response_format": {"type": "json_schema", "json_schema": {}}}, "'response_format'"),
        ({"logprobs": True}, "'logprobs'"),
        ({"top_logprobs": 3}, "'top_logprobs'"),
        ({"n": 2}, "n:"),
        ({"max_tokens": 5000}, "max_tokens: must be at most 2048"),
        ({"max_completion_tokens": 2049}, "max_completion_tokens: must be at most 2048"),
        ({"temperature": 2.5}, "temperature"),
    ],
)
async def test_every_model_refuses_what_it_cannot_honour(
    model: str, payload: dict[str, Any], field: str
) -> None:
    solver = ScriptedSolver("ok")
    async with serve(Settings(), solver) as client:
        resp = await client.post(
            "/v1/chat/completions", json={"model": model, "messages": MESSAGES, **payload}
        )
        counted = await metric(client, "divconq_requests_total", status="422")
    assert field in error_of(resp, 422, "invalid_request")["message"]
    assert solver.hits == 0
    # A pipeline model's refusal is counted as the facade's, as /solve's are.
    assert counted == (0 if model == "gemma-3-270m" else 1)


@pytest.mark.parametrize(
    "payload",
    [
        {"tools": []},
        {"tool_choice": "none"},
        {"response_format": {"type": "text"}},
        {"logprobs": False},
        {"top_logprobs": 0},
        {"n": 1},
        {"max_tokens": 2048},
        {"max_completion_tokens": 2048},
    ],
)
async def test_what_is_honoured_anyway_is_served(payload: dict[str, Any]) -> None:
    async with serve(settings_for(), ScriptedSolver("ok")) as client:
        resp = await client.post(
            "/v1/chat/completions",
            json={"model": "divconq-direct", "messages": MESSAGES, **payload},
        )
    assert resp.status_code == 200, resp.text
