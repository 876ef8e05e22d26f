"""Bodies of the OpenAI-compatible ``/v1`` API: what OpenAI clients send and expect.

One request body serves both kinds of model behind ``/v1/chat/completions``:
the pipeline models (the facade: ``divconq-static`` ...) and the embedded
model itself (raw). Unknown fields are ignored, as OpenAI clients send many
(``user``, ``logit_bias``, ...); every sampling field that is declared is
checked against OpenAI's own ranges, so a bad value is a 422, never an engine
error. Limits that come from settings (``max_tokens`` against the model's
context, the facade's ``max_subquestions`` ...) are enforced by the handler
and published in the OpenAPI schema (``service/api/openapi.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from service.core.schemas import SolveUsage, SubquestionResult
from service.core.settings import Mode

Float = Annotated[float, Field(allow_inf_nan=False)]
StopWord = Annotated[str, Field(min_length=1)]


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = Field(
        None, description="Text, or text parts (other part types are not served)."
    )

    @property
    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(p.text for p in self.content)
        return self.content or ""


class StreamOptions(BaseModel):
    include_usage: bool = False


class ChatRequest(BaseModel):
    """``POST /v1/chat/completions``: OpenAI's body, and the facade's extensions."""

    model_config = ConfigDict(extra="ignore")

    model: str | None = Field(
        None,
        description="A pipeline model (GET /v1/models; divconq-static ...) or the embedded "
        "model; unset = the embedded model.",
    )
    messages: list[ChatMessage] = Field(..., min_length=1, max_length=256)
    max_tokens: int | None = Field(None, ge=1, description="Embedded model: the reply's cap.")
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: Float | None = Field(None, ge=0.0, le=2.0)
    top_p: Float | None = Field(None, gt=0.0, le=1.0)
    n: int | None = Field(None, ge=1, le=1, description="One choice only.")
    presence_penalty: Float | None = Field(None, ge=-2.0, le=2.0)
    frequency_penalty: Float | None = Field(None, ge=-2.0, le=2.0)
    seed: int | None = Field(None, ge=-(2**63), le=2**63 - 1)
    stop: StopWord | Annotated[list[StopWord], Field(max_length=4)] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    # --- OpenAI fields this service cannot honour: 422 naming the field (UNSUPPORTED) ---
    tools: list[Any] | None = Field(None, description="Not supported (422 unless empty).")
    tool_choice: Any = Field(None, description="Not supported (422 unless 'none').")
    functions: list[Any] | None = Field(None, description="Not supported (422 unless empty).")
    function_call: Any = Field(None, description="Not supported (422 unless 'none').")
    response_format: dict[str, Any] | None = Field(
        None, description="Only {'type': 'text'}: JSON output is not supported (422)."
    )
    logprobs: bool | None = Field(None, description="Not supported (422 when true).")
    top_logprobs: int | None = Field(None, ge=0, description="Not supported (422 above 0).")
    # --- pipeline models only (the openai SDK sends them with extra_body) ---
    max_subquestions: int | None = Field(None, ge=1, description="Pipeline models: the cap.")
    solver: str | None = Field(None, description="Pipeline models: the solver profile.")
    decomposer_adapter: str | None = Field(
        None, description="Pipeline models: the decomposer's LoRA adapter ('none' = base)."
    )
    timeout_s: Float | None = Field(
        None, ge=1, description="Pipeline models: the deadline, in seconds."
    )


# What each unsupported field may hold and still be honoured (what OpenAI does anyway).
_HONOURED: dict[str, Callable[[Any], bool]] = {
    "tools": lambda v: not v,
    "tool_choice": lambda v: v in (None, "none"),
    "functions": lambda v: not v,
    "function_call": lambda v: v in (None, "none"),
    "response_format": lambda v: v is None or v.get("type") == "text",
    "logprobs": lambda v: not v,
    "top_logprobs": lambda v: not v,
}
UNSUPPORTED = {
    "tools": "tool calls are not supported: the models here answer in text",
    "tool_choice": "tool calls are not supported: the models here answer in text",
    "functions": "function calls are not supported: the models here answer in text",
    "function_call": "function calls are not supported: the models here answer in text",
    "response_format": "only {'type': 'text'} is supported: no JSON mode or schema",
    "logprobs": "log probabilities are not returned",
    "top_logprobs": "log probabilities are not returned",
}


def unsupported_field(body: ChatRequest) -> str | None:
    """The first field of ``body`` asking for what this service cannot do, with why."""
    for name, honoured in _HONOURED.items():
        if not honoured(getattr(body, name)):
            return f"Unsupported parameter: '{name}': {UNSUPPORTED[name]}"
    return None


class ReplyMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class Choice(BaseModel):
    index: int = 0
    message: ReplyMessage
    finish_reason: str


class ChatUsage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class PipelineDetail(BaseModel):
    """The facade's extension field ``divconq``: what ``/solve`` would have returned."""

    id: str
    mode: Mode
    answer: str
    subquestions: list[SubquestionResult]
    usage: SolveUsage
    latency_ms: float


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: ChatUsage
    divconq: PipelineDetail | None = Field(
        None, description="Pipeline models only: subquestions and per-stage usage."
    )


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "divconq"
    divconq_mode: Mode | None = Field(None, description="A pipeline model's mode.")


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
