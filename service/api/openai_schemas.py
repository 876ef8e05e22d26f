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

from typing import Annotated, Literal

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
    # --- pipeline models only (the openai SDK sends them with extra_body) ---
    max_subquestions: int | None = Field(None, ge=1, description="Pipeline models: the cap.")
    solver: str | None = Field(None, description="Pipeline models: the solver profile.")
    decomposer_adapter: str | None = Field(
        None, description="Pipeline models: the decomposer's LoRA adapter ('none' = base)."
    )
    timeout_s: Float | None = Field(
        None, ge=1, description="Pipeline models: the deadline, in seconds."
    )


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
