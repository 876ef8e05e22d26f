"""The two models' settings: the decomposer, and each solver profile.

Part of ``Settings`` (``service/core/settings.py``, which re-exports both):
``DIVCONQ_DECOMPOSER__*`` and ``DIVCONQ_SOLVER__*`` / ``DIVCONQ_SOLVERS__<NAME>__*``.
Each ``Field`` description is the setting's documentation: docs/configuration.md
and .env.example are generated from them (``divconq config-docs``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator

Mode = Literal["static", "hinted", "socratic", "direct"]
MODES: tuple[Mode, ...] = ("static", "hinted", "socratic", "direct")

EMBEDDED_MODEL_NAME = "gemma-3-270m"
# The distilled decomposer shipped in service/adapters/, trained for the embedded model.
SHIPPED_ADAPTER = "gsm8k-socratic"
NO_ADAPTER = "none"
# The solver backend that runs on the in-process engine.
EMBEDDED_BACKEND = "embedded"
# Remote solver backends with no default base URL.
NEEDS_BASE_URL = frozenset({"openai", "azure_openai"})
PromptStyleName = Literal["chat", "distilled"]


def shipped_adapters() -> dict[str, str]:
    root = Path(__file__).resolve().parents[1] / "adapters"
    if not root.is_dir():
        return {}
    return {p.name: str(p) for p in sorted(root.iterdir()) if (p / "adapter_config.json").is_file()}


class DecomposerSettings(BaseModel):
    """The small model that writes subquestions."""

    backend: str = Field(
        "vllm", description="Registry name: 'vllm' (in-process) or 'openai' (HTTP)."
    )
    model: str | None = Field(
        None, description="Hugging Face id or local path; unset = the embedded Gemma 3 270M."
    )
    served_model_name: str | None = Field(
        None, description="Name reported in usage (and sent to an 'openai' backend)."
    )
    adapters: dict[str, str] = Field(
        default_factory=dict,
        description="Named LoRA adapters (distilled decomposers): name -> directory, JSON.",
    )
    adapter: str = Field(
        SHIPPED_ADAPTER,
        description="Adapter used when a request names none; 'none' = the base model. The "
        "shipped adapter applies only to the embedded model.",
    )
    # An int, not a Literal: Literal[int] fields reject the strings env vars give.
    max_lora_rank: int = Field(16, description="One of 8, 16, 32, 64, 128, 256.")
    base_url: str | None = Field(None, description="'openai' backend: server URL ending in /v1.")
    api_key: SecretStr | None = Field(None, description="'openai' backend: its bearer key.")
    max_tokens: int = Field(160, ge=1, description="Cap on one static decomposition.")
    socratic_max_tokens: int = Field(48, ge=1, description="Cap on one socratic subquestion.")
    temperature: float = Field(0.0, ge=0.0, description="Sampling temperature (0 = greedy).")
    timeout_s: float = Field(
        120.0, gt=0, description="Timeout of one decomposer call, in seconds (504 past it)."
    )
    # vLLM engine knobs; the defaults suit a CPU box with a few GiB to spare.
    max_model_len: int = Field(2048, description="vLLM engine: context length.")
    kv_cache_gib: int = Field(1, ge=1, description="VLLM_CPU_KVCACHE_SPACE on CPU.")
    gpu_memory_utilization: float = Field(
        0.3, description="vLLM on GPU: the share of the GPU's memory the engine takes."
    )
    enforce_eager: bool = Field(
        True,
        description="vLLM: skip CUDA graphs and torch.compile (a faster start; false = "
        "faster decoding on GPU).",
    )
    dtype: Literal["auto", "half", "float16", "bfloat16", "float", "float32"] = Field(
        "auto",
        description="'auto': bfloat16 on GPUs and on CPUs with native bf16 (AVX512-BF16, "
        "AMX), float32 on other CPUs, where bf16 is emulated and 3-5x slower.",
    )
    omp_threads_bind: str = Field(
        "auto",
        description="CPU engine: VLLM_CPU_OMP_THREADS_BIND. 'auto' binds every CPU this "
        "process may use; or a list such as '0-3' or '0,2'.",
    )
    executor: Literal["auto", "uni", "mp"] = Field(
        "auto",
        description="Where the model runs: 'auto'/'uni' in vLLM's engine-core process; 'mp' "
        "in a worker process of its own (vLLM's CPU default: one more process to start).",
    )
    start_method: Literal["auto", "fork", "spawn"] = Field(
        "auto",
        description="How vLLM's engine-core process starts: 'fork' shares the service's "
        "imports (about 12 s less cold start on 2 cores); 'spawn' is a fresh interpreter "
        "(vLLM's CPU default). 'auto': fork with the 'uni' executor on CPU, else spawn.",
    )
    vocabulary: Literal["task", "full"] = Field(
        "task",
        description="Embedded model only: the distilled checkpoint keeps the 34k of its 262k "
        "tokens that GSM8K and the prompts use ('task'; an 8x smaller output layer, 'static' "
        "1.8x faster on a 2-core AVX2 CPU; other text still encodes, in smaller pieces), or "
        "all of them ('full').",
    )
    base_engine: Literal["lazy", "eager", "off"] = Field(
        "lazy",
        description="Embedded model only: the base checkpoint (for 'decomposer_adapter': "
        "'none' and for adapters of your own) runs in a second engine, started on the first "
        "request that needs it ('lazy'), at start-up ('eager'), or never ('off').",
    )

    @field_validator("max_lora_rank")
    @classmethod
    def _vllm_lora_rank(cls, v: int) -> int:
        if v not in (8, 16, 32, 64, 128, 256):
            raise ValueError("max_lora_rank must be one of 8, 16, 32, 64, 128, 256")
        return v


class SolverSettings(BaseModel):
    """One solver profile: the model that answers subquestions."""

    backend: str = Field(
        "embedded",
        description="Registry name: embedded (the in-process model, with the calculator; "
        "the default), openai (any OpenAI-compatible), azure_openai, anthropic. A profile "
        "that sets base_url and no backend is openai.",
    )
    base_url: str | None = Field(
        None,
        description="API base URL of a remote solver (OpenAI-compatible ones end in /v1; "
        "anthropic: unset = https://api.anthropic.com/v1). The embedded solver takes none.",
    )
    model: str | None = Field(
        None,
        description="Model (Azure: deployment) name of a remote solver; the embedded solver "
        "is the in-process model.",
    )
    api_key: SecretStr | None = Field(
        None, description="Bearer key for the solver (a secret: never logged or echoed)."
    )
    api_version: str = Field(
        "2024-10-21",
        description="azure_openai: api-version; anthropic: anthropic-version "
        "is fixed by the backend.",
    )
    connect_timeout_s: float = Field(
        5.0, gt=0, description="Connect timeout of one solver call, in seconds."
    )
    read_timeout_s: float = Field(
        120.0, gt=0, description="Read timeout of one solver call, in seconds (504 past it)."
    )
    max_tokens: int | None = Field(
        None,
        ge=1,
        description="Cap on one solver reply. Unset = 256, or 96 for an embedded solver "
        "with chat prompts (a model of your own, which rambles on a CPU). /readyz shows "
        "each profile's.",
    )
    temperature: float = Field(0.0, ge=0.0, description="Sampling temperature (0 = greedy).")
    stop: list[str] = Field(
        default_factory=list,
        description="Stop strings. Unset = none for a remote solver; for the embedded one "
        'a newline ("\\n": the distilled solver writes one step per line), or a blank '
        "line with chat prompts. /readyz shows each profile's.",
    )
    context_tokens: int | None = Field(
        None,
        ge=1,
        description="The solver model's context window in tokens: a request whose prompt "
        "and max_tokens cannot fit is refused with 422 before any model call. Unset = "
        "DIVCONQ_DECOMPOSER__MAX_MODEL_LEN for the embedded solver; not checked for a "
        "remote one (its own 400 is answered 422).",
    )
    max_connections: int = Field(100, ge=1, description="Connection pool size to the solver.")
    max_concurrency: int = Field(32, ge=1, description="Calls in flight to this solver.")
    max_retries: int = Field(
        2, ge=0, description="Retries on connect errors, timeouts, 408, 409, 429, 5xx."
    )
    backoff_base_s: float = Field(0.25, ge=0, description="First retry delay (doubles).")
    backoff_max_s: float = Field(8.0, ge=0, description="Cap on one retry delay.")
    fallbacks: list[str] = Field(
        default_factory=list, description="Profiles tried in order when this one fails."
    )
    prompts: Literal["auto", "chat", "distilled"] = Field(
        "auto",
        description="How subquestions are put to this solver: 'chat' (instructions, for "
        "hosted models), 'distilled' (the multi-turn format the embedded distilled solver "
        "was trained on; docs/solvers.md). 'auto': distilled for the embedded solver on "
        "the shipped model, else chat.",
    )

    @model_validator(mode="before")
    @classmethod
    def _openai_when_a_url_is_set(cls, data: object) -> object:
        # Settings written before the embedded backend existed name only a URL.
        if isinstance(data, dict) and data.get("base_url") and not data.get("backend"):
            return {**data, "backend": "openai"}
        return data

    @property
    def embedded(self) -> bool:
        """Whether this profile is the in-process model (service/solver/embedded.py)."""
        return self.backend == EMBEDDED_BACKEND
