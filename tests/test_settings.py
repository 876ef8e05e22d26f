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
    assert s.solver_base_url == "https://api.example.test/v1"
    assert s.solver_model_name == "big-model"
    assert s.default_mode == "socratic"
    assert s.solver_max_tokens == 256
    assert "sk-secret-123" not in repr(s)
    assert "sk-secret-123" not in s.model_dump_json()


def test_default_solver_is_embedded() -> None:
    s = Settings(port=9123)
    assert s.solver_base_url == "http://127.0.0.1:9123/v1"
    assert s.solver_model_name == s.decomposer_model_name == "gemma-3-270m"
    # The embedded default is the distilled solver: one step per line.
    assert s.solver_distilled(s.solver)
    assert s.solver_stop(s.solver) == ["\n"]
    # A model of your own at /v1 is not: it gets the chat prompts.
    own = Settings(decomposer={"model": "/models/mine"})
    assert not own.solver_distilled(own.solver)
    assert own.solver_stop(own.solver) == ["\n\n"]


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
