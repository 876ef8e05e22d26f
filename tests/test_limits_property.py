"""Property: a body up to every documented limit, to every operation, never gets a 5xx.

Hypothesis builds bodies whose text fields sit at, just under and just over
their character limits (long runs of ASCII, accents, CJK, emoji, control
characters), numeric fields around their bounds, spelled in JSON with and
without ``\\u`` escapes. Each goes over a real socket to the app with its
fakes (the embedded model faked by ``FakeEngine``, a remote profile by a
scripted solver). What comes back is a 200, or an error that names what to
fix (413 only where the body really is over the cap); never a 5xx.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.core.settings import Settings
from tests.fakes import FakeDecomposer, FakeEngine, ScriptedSolver, url_of
from tests.streams import live

S = Settings()
Q, C = S.max_question_chars, S.max_context_chars
# Pieces a long string is made of: ASCII, combining marks, CJK, emoji (4 bytes in
# UTF-8, 12 as an escaped surrogate pair), whitespace, quotes, control characters.
UNITS = st.one_of(
    st.sampled_from(
        ["x", "7 ", "é", "e\u0301", "中文", "😀", "\U0001f9ee ", " ", "\n", '"\\', "\x00"]
    ),
    st.text(min_size=1, max_size=4),
)


def around(limit: int) -> st.SearchStrategy[int]:
    """Lengths at the edges of ``limit`` and anywhere below it."""
    return st.one_of(st.sampled_from([1, limit - 1, limit, limit + 1]), st.integers(1, limit))


@st.composite
def long_text(draw: st.DrawFn, limit: int) -> str:
    unit, length = draw(UNITS), draw(around(limit))
    return (unit * (length // len(unit) + 1))[:length]


def _common(draw: st.DrawFn) -> dict[str, Any]:
    body: dict[str, Any] = {"question": draw(long_text(Q))}
    if draw(st.booleans()):
        body["context"] = draw(long_text(C))
    optional = {
        "max_subquestions": st.sampled_from([1, S.max_subquestions_limit, 99]),
        "timeout_s": st.sampled_from([1, 1.5, S.max_request_timeout_s, 1e9]),
        "decomposer_adapter": st.sampled_from(["none", "gsm8k-socratic"]),
    }
    for name, values in optional.items():
        if draw(st.booleans()):
            body[name] = draw(values)
    return body


@st.composite
def decompose_bodies(draw: st.DrawFn) -> dict[str, Any]:
    return _common(draw)


@st.composite
def solve_bodies(draw: st.DrawFn) -> dict[str, Any]:
    body = _common(draw)
    body["mode"] = draw(st.sampled_from(["static", "hinted", "socratic", "direct"]))
    body["solver"] = draw(st.sampled_from(["default", "remote"]))
    body["stream"] = draw(st.booleans())
    return body


@st.composite
def chat_bodies(draw: st.DrawFn) -> dict[str, Any]:
    roles = st.sampled_from(["system", "developer", "user", "assistant", "tool"])
    messages = [
        {"role": draw(roles), "content": draw(long_text(C))} for _ in range(draw(st.integers(0, 3)))
    ]
    messages.append({"role": "user", "content": draw(long_text(Q))})
    body: dict[str, Any] = {
        "model": draw(st.sampled_from(["divconq-static", "divconq-direct", "gemma-3-270m"])),
        "messages": messages,
        "stream": draw(st.booleans()),
    }
    optional = {
        "max_tokens": st.sampled_from(
            [1, S.decomposer.max_model_len, S.decomposer.max_model_len + 1]
        ),
        "temperature": st.sampled_from([0, 2, 2.5]),
        "stop": st.sampled_from(["\n", ["a", "b", "c", "d"]]),
        "n": st.sampled_from([1, 2]),
        "solver": st.sampled_from(["default", "remote"]),
    }
    for name, values in optional.items():
        if draw(st.booleans()):
            body[name] = draw(values)
    return body


def _check(path: str, resp: httpx.Response, raw: bytes) -> None:
    assert resp.status_code < 500, resp.text[:500]
    if path != "/v1/chat/completions":
        # Whatever the schema admits fits the cap (docs/api.md, "Limits").
        assert resp.status_code != 413, len(raw)
    if resp.status_code == 413:
        assert len(raw) > S.max_body_bytes, "the body cap refused a body under it"
    elif resp.status_code != 200:
        error = resp.json()["error"]
        assert error["message"] and error["type"] != "internal_error"
    else:
        assert "internal_error" not in resp.text


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    settings = Settings(
        usage_tokenizer="none",
        solvers={"remote": {"backend": "openai", "base_url": url_of("solver"), "model": "m"}},
    )
    decomposer = FakeDecomposer(
        "1. How many are there?\n2. How many in all?",
        engine=FakeEngine("It is 7. The answer is 7."),
    )
    with live(settings, ScriptedSolver("ok"), decomposer) as base:
        yield base


def _property(path: str, bodies: st.SearchStrategy[dict[str, Any]], url: str) -> list[int]:
    seen: list[int] = []

    @settings(
        max_examples=40,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(body=bodies, ascii_only=st.booleans())
    def check(body: dict[str, Any], ascii_only: bool) -> None:
        raw = json.dumps(body, ensure_ascii=ascii_only).encode()
        headers = {"content-type": "application/json"}
        resp = httpx.post(f"{url}{path}", content=raw, headers=headers, timeout=60)
        seen.append(resp.status_code)
        _check(path, resp, raw)

    check()
    return seen


@pytest.mark.parametrize(
    ("path", "bodies"),
    [
        ("/solve", solve_bodies()),
        ("/decompose", decompose_bodies()),
        ("/v1/chat/completions", chat_bodies()),
    ],
    ids=["solve", "decompose", "chat_completions"],
)
def test_no_body_within_the_limits_gets_a_5xx(
    url: str, path: str, bodies: st.SearchStrategy[dict[str, Any]]
) -> None:
    seen = _property(path, bodies, url)
    # The bodies reach both sides of the limits: some served, some refused.
    assert 200 in seen and 422 in seen, seen
