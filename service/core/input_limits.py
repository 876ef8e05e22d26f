"""The limits a request's fields must keep, defined once from the settings.

Both the check (``service/pipeline/plan.py`` calls ``InputLimits.check``) and
the OpenAPI schema (``service/api/openapi.py`` writes ``json_schema()`` into
``/openapi.json``) read them from here, so what the schema admits and what the
service accepts cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from service.core.errors import InvalidRequest
from service.core.settings import Settings

Schema = dict[str, Any]


@dataclass(frozen=True)
class InputLimits:
    """The settings' limits on ``/solve``, ``/decompose`` and the facade's bodies."""

    question_chars: int
    context_chars: int
    subquestions: int
    timeout_s: float
    # /v1/chat/completions: the largest max_tokens (max_completion_tokens) on every
    # model it serves: the embedded model's context window where it is served here.
    reply_tokens: int | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> InputLimits:
        embedded = settings.serve_openai_api and settings.decomposer.backend == "vllm"
        return cls(
            question_chars=settings.max_question_chars,
            context_chars=settings.max_context_chars,
            subquestions=settings.max_subquestions_limit,
            timeout_s=settings.max_request_timeout_s,
            reply_tokens=settings.decomposer.max_model_len if embedded else None,
        )

    def check(
        self,
        question: str,
        context: str | None,
        max_subquestions: int | None,
        timeout_s: float | None,
    ) -> None:
        """422 naming the first limit the fields break."""
        if len(question) > self.question_chars:
            raise InvalidRequest(
                f"question is {len(question)} characters; the limit is {self.question_chars}"
            )
        if context is not None and len(context) > self.context_chars:
            raise InvalidRequest(
                f"context is {len(context)} characters; the limit is {self.context_chars}"
            )
        if max_subquestions is not None and max_subquestions > self.subquestions:
            raise InvalidRequest(f"max_subquestions must be between 1 and {self.subquestions}")
        if timeout_s is not None and timeout_s > self.timeout_s:
            raise InvalidRequest(f"timeout_s must be at most {self.timeout_s:g} seconds")

    def check_reply_tokens(self, **caps: int | None) -> None:
        """422 naming a reply cap (``max_tokens=...``) over ``reply_tokens``."""
        for name, value in caps.items():
            if self.reply_tokens is not None and value is not None and value > self.reply_tokens:
                raise InvalidRequest(
                    f"{name}: must be at most {self.reply_tokens} (the model's context)"
                )

    def json_schema(self) -> dict[str, Schema]:
        """Per body field, the JSON Schema keywords that state these limits."""
        reply = {} if self.reply_tokens is None else {"maximum": self.reply_tokens}
        return {
            # The question must hold something besides whitespace.
            "question": {"maxLength": self.question_chars, "pattern": r"\S"},
            "context": {"maxLength": self.context_chars},
            "max_subquestions": {"maximum": self.subquestions},
            "timeout_s": {"maximum": self.timeout_s},
            "max_tokens": reply,
            "max_completion_tokens": reply,
        }
