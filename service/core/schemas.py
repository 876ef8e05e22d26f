"""Request and response bodies of the HTTP API (the public contract)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from service.core.settings import Mode


class _Strict(BaseModel):
    # Unknown fields are a client bug (a typo like "modes"); say so.
    model_config = ConfigDict(extra="forbid")


class DecomposeRequest(_Strict):
    question: str = Field(..., description="The problem to decompose.")
    decomposer_adapter: str | None = Field(
        None,
        description="LoRA adapter for the decomposer ('none' = the base model); default "
        "DIVCONQ_DECOMPOSER__ADAPTER.",
    )
    max_subquestions: int | None = Field(
        None, ge=1, description="Cap on subquestions; default and upper bound from config."
    )
    context: str | None = Field(None, description="Optional passage the question is about.")
    timeout_s: float | None = Field(
        None,
        ge=1,
        allow_inf_nan=False,
        description="Deadline for this request, in seconds (at least 1); default "
        "DIVCONQ_REQUEST_TIMEOUT_S, at most DIVCONQ_MAX_REQUEST_TIMEOUT_S.",
    )

    @field_validator("question")
    @classmethod
    def _not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("question must not be empty")
        return v


class SolveRequest(DecomposeRequest):
    mode: Mode | None = Field(None, description="Default from config (DIVCONQ_DEFAULT_MODE).")
    solver: str | None = Field(
        None, description="Solver profile name; default from config (DIVCONQ_DEFAULT_SOLVER)."
    )
    stream: bool = Field(
        False,
        description="Answer text/event-stream: decomposition, subquestion, answer, usage "
        "(and error) events as they happen, then done.",
    )
    cache: bool | None = Field(
        None,
        description="Response cache: unset = cache when deterministic (temperature 0); true "
        "= cache even at a higher temperature; false = neither read nor write it (as "
        "Cache-Control: no-cache, no-store).",
    )


class TokenUsage(BaseModel):
    prompt_tokens: int
    completion_tokens: int


class StageUsage(BaseModel):
    model: str
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_ms: float = 0.0
    cost_usd: float = Field(0.0, description="From DIVCONQ_PRICES; 0 where unset.")
    estimated: bool = Field(
        False,
        description="Some call's backend reported no usage: its tokens were counted with a "
        "tokenizer here.",
    )
    adapter: str | None = Field(
        None, description="Decomposer only: the LoRA adapter that served it (None = base)."
    )
    answered_by: list[str] = Field(
        default_factory=list,
        description="Solver profiles that answered, in order of first use (a fallback shows "
        "here); empty for the decomposer.",
    )
    cached_calls: int = Field(
        0,
        description="Calls answered from the response cache: not in calls, tokens or cost "
        "(a hit spends nothing).",
    )


class TotalUsage(TokenUsage):
    cost_usd: float = 0.0


class SolveUsage(BaseModel):
    decomposer: StageUsage
    solver: StageUsage
    total: TotalUsage


class SubquestionResult(BaseModel):
    question: str
    answer: str
    latency_ms: float
    usage: TokenUsage


class SolveResponse(BaseModel):
    id: str
    mode: Mode
    answer: str = Field(..., description="Extracted final answer (a number for math problems).")
    answer_text: str = Field(..., description="The solver's full final answer.")
    subquestions: list[SubquestionResult]
    usage: SolveUsage
    latency_ms: float
    cached: bool = Field(
        False,
        description="The whole answer came from the response cache (no model ran; every "
        "stage's calls are in cached_calls and cost 0).",
    )


class DecomposeUsage(BaseModel):
    decomposer: StageUsage


class DecomposeResponse(BaseModel):
    id: str
    subquestions: list[str]
    repeats_dropped: int = Field(
        0, description="Subquestions the decomposer wrote again, dropped from the list."
    )
    usage: DecomposeUsage
    latency_ms: float


class ErrorBody(BaseModel):
    type: str
    message: str
    stage: str | None = None
    # In a traced request: the trace and the server span, to look it up.
    trace_id: str | None = None
    span_id: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody


# --- streamed /solve: the data of each server-sent event -----------------------------


class DecompositionEvent(BaseModel):
    """``decomposition``: the subquestions written so far (socratic: one more each round)."""

    subquestions: list[str]
    repeats_dropped: int = 0


class SubquestionEvent(SubquestionResult):
    """``subquestion``: one answered subquestion (``index`` into the decomposition)."""

    index: int


class AnswerDeltaEvent(BaseModel):
    """``answer_delta``: the next piece of the final answer's text, as the solver writes it.

    The pieces, in order, add up to ``answer_text`` (leading and trailing
    whitespace dropped, as there); they all come before ``answer``.
    """

    text: str


class AnswerEvent(BaseModel):
    """``answer``: the final answer, as in the non-streamed response."""

    id: str
    mode: Mode
    answer: str
    answer_text: str


class DoneEvent(BaseModel):
    """``done``: the stream ends (after ``usage``, or after ``error``)."""

    id: str
    latency_ms: float
