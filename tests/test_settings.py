"""Environment configuration: prefix, nested delimiter, secrets, validation."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from service.core.settings import Settings


def test_env_nested(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIVCONQ_SOLVER__BASE_URL", "https://api.example.test/v1/")
    monkeypatch.setenv("DIVCONQ_SOLVER__MODEL", "big-model")
    monkeypatch.setenv("DIVCONQ_SOLVER__API_KEY", "sk-secret-123")
    monkeypatch.setenv("DIVCONQ_DEFAULT_MODE", "socratic")
    s = Settings()
    # A base URL and no backend: an OpenAI-compatible solver.
    assert s.solver.backend == "openai" and s.solver.base_url == "https://api.example.test/v1/"
    assert s.solver_model_name == "big-model"
    assert s.default_mode == "socratic"
    assert s.solver_max_tokens == 256
    assert "sk-secret-123" not in repr(s)
    assert "sk-secret-123" not in s.model_dump_json()


def test_default_solver_is_embedded() -> None:
    s = Settings()
    assert s.solver.backend == "embedded" and s.solver.embedded
    assert s.solver_model_name == s.decomposer_model_name == "gemma-3-270m"
    # The embedded default is the distilled solver: one step per line.
    assert s.solver_prompts(s.solver) == "distilled"
    assert (s.solver_stop(s.solver), s.solver_tokens(s.solver)) == (["\n"], 256)
    # A model of your own in process is not: it gets the chat prompts.
    own = Settings(decomposer={"model": "/models/mine"})
    assert own.solver_prompts(own.solver) == "chat"
    assert (own.solver_stop(own.solver), own.solver_tokens(own.solver)) == (["\n\n"], 96)


def test_embedded_solver_takes_no_url() -> None:
    with pytest.raises(ValidationError, match="takes no BASE_URL"):
        Settings(solver={"backend": "embedded", "base_url": "http://x.test/v1"})


def test_remote_backends_need_what_they_call() -> None:
    with pytest.raises(ValidationError, match="SOLVER__BASE_URL is required"):
        Settings(solver={"backend": "azure_openai", "model": "dep"})
    # Anthropic has a default URL; a remote solver gets no stop and chat prompts.
    s = Settings(solver={"backend": "anthropic", "model": "claude"})
    assert (s.solver_stop(s.solver), s.solver_prompts(s.solver)) == ([], "chat")


def test_remote_solver_needs_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIVCONQ_SOLVER__BASE_URL", "https://api.example.test/v1")
    with pytest.raises(ValidationError, match="SOLVER__MODEL"):
        Settings()


def test_http_decomposer_needs_remote_solver(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIVCONQ_DECOMPOSER__BACKEND", "openai")
    with pytest.raises(ValidationError, match="SOLVER__BASE_URL"):
        Settings()


def test_bad_mode_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIVCONQ_DEFAULT_MODE", "telepathy")
    with pytest.raises(ValidationError):
        Settings()


def test_empty_env_is_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIVCONQ_SOLVER__BASE_URL", "")
    monkeypatch.setenv("DIVCONQ_SOLVER__API_KEY", "")
    s = Settings()
    assert s.solver.base_url is None
    assert s.solver.api_key is None
