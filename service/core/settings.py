"""Typed configuration, read from ``DIVCONQ_*`` environment variables.

Nested groups use ``__``: ``DIVCONQ_SOLVER__BASE_URL``, ``DIVCONQ_DECOMPOSER__MODEL``.
Settings are built by the app factory (never at import time) so tests and the
CLI can pass their own.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from service.core.keys import ApiKey, check_unique, parse_keys
from service.core.model_settings import (
    EMBEDDED_BACKEND,
    EMBEDDED_MODEL_NAME,
    MODES,
    NEEDS_BASE_URL,
    NO_ADAPTER,
    SHIPPED_ADAPTER,
    DecomposerSettings,
    Mode,
    PromptStyleName,
    SolverSettings,
    shipped_adapters,
)
from service.core.platform_settings import CacheSettings, LedgerSettings, LimitSettings

# Re-exported: the rest of the package imports them from here.
__all__ = [
    "EMBEDDED_BACKEND",
    "EMBEDDED_MODEL_NAME",
    "MODES",
    "NEEDS_BASE_URL",
    "NO_ADAPTER",
    "SHIPPED_ADAPTER",
    "CacheSettings",
    "DecomposerSettings",
    "LedgerSettings",
    "LimitSettings",
    "Mode",
    "PromptStyleName",
    "Settings",
    "SolverSettings",
    "shipped_adapters",
]


# Room in a request body for everything but the question and context.
BODY_SLACK_BYTES = 4096


def _default_data_dir() -> Path:
    return Path.home() / ".cache" / "divconq"


class ModelPrice(BaseModel):
    """USD per million tokens; used for cost accounting only."""

    input_per_mtok: float = Field(0.0, ge=0.0)
    output_per_mtok: float = Field(0.0, ge=0.0)

    def cost_usd(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (
            prompt_tokens * self.input_per_mtok + completion_tokens * self.output_per_mtok
        ) / 1e6


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="DIVCONQ_",
        env_nested_delimiter="__",
        # Compose files pass unset variables as "": treat them as unset.
        env_ignore_empty=True,
        extra="ignore",
    )

    host: str = Field("127.0.0.1", description="Bind address. The image sets 0.0.0.0.")
    port: int = Field(8000, description="Port: the API, the embedded /v1 and /metrics.")
    keep_alive_s: int = Field(
        75,
        ge=1,
        description="How long an idle keep-alive connection stays open, in seconds. Keep it "
        "longer than the idle timeout of the load balancer or proxy in front (AWS ALB and "
        "nginx ingress: 60 s; Google Cloud load balancers: 600 s, so 620), so that the "
        "balancer, not this server, closes an idle connection: a server that closes first "
        "races the balancer's next request on it (a 502 at the balancer).",
    )
    data_dir: Path = Field(
        default_factory=_default_data_dir,
        description="Model cache: the converted embedded model, Hugging Face downloads. "
        "The image sets /data (a volume).",
    )
    log_level: str = Field("info", description="Log level: debug, info, warning, error.")

    default_mode: Mode = Field("static", description="Mode when a request names none.")
    max_subquestions: int = Field(4, ge=1, description="Default cap per request.")
    max_subquestions_limit: int = Field(8, ge=1, description="Largest cap a request may ask for.")
    max_question_chars: int = Field(
        4000,
        ge=1,
        description="Longest question accepted, in characters (Unicode code points; longer: 422).",
    )
    max_context_chars: int = Field(
        16000,
        ge=0,
        description="Longest optional context passage, in characters (Unicode code "
        "points; longer: 422).",
    )
    max_body_bytes: int = Field(
        262144,
        ge=1024,
        description="Largest request body, in bytes (larger: 413). It must hold a request "
        "at the character limits in the longest JSON spelling (12 bytes a character: an "
        "escaped surrogate pair), so that every body the schema admits is read: at least "
        "12 x (question + context characters) + 4096; start-up fails below that.",
    )
    max_in_flight: int = Field(
        64, ge=1, description="Bound on concurrent /solve and /decompose requests."
    )
    serve_openai_api: bool = Field(
        True, description="Expose the embedded model at /v1/chat/completions."
    )
    pipeline_models: dict[str, Mode] = Field(
        default_factory=lambda: {f"divconq-{m}": m for m in MODES},
        description="Model names of the OpenAI-compatible facade, JSON name -> mode: a "
        "/v1/chat/completions request naming one runs the pipeline in that mode.",
    )
    calculator: bool = Field(
        True,
        description="Embedded /v1: compute every <<expression=value>> annotation the model "
        "closes and write the true value (GSM8K's calculator in the loop).",
    )

    usage_tokenizer: str | None = Field(
        None,
        description="tokenizer.json (or a model directory) that counts the tokens of calls "
        "whose backend reported no usage; unset = the embedded model's; 'none' = count "
        "words and punctuation.",
    )
    prices: dict[str, ModelPrice] = Field(
        default_factory=dict,
        description="Per-model prices, JSON: "
        '{"gpt-4o-mini": {"input_per_mtok": 0.15, "output_per_mtok": 0.6}}; unset = 0.',
    )

    request_timeout_s: float = Field(
        300.0, gt=0, description="Deadline for one /solve or /decompose request."
    )
    max_request_timeout_s: float = Field(
        900.0, gt=0, description="Largest deadline a request may ask for (timeout_s)."
    )
    parallel_subquestions: bool = Field(
        True, description="static mode: solve subquestions that need no earlier answer at once."
    )
    api_keys: list[ApiKey] = Field(
        default_factory=list,
        description="Bearer keys for the API, JSON list: plain strings (unlimited keys "
        'named key-1, key-2 ...) or objects {"name", "key", "requests_per_minute", '
        '"tokens_per_minute", "usd_per_day", "admin"} (docs/tenancy.md); empty = no auth.',
    )
    allow_unauthenticated: bool = Field(
        False,
        description="Serve on a non-loopback address with no DIVCONQ_API_KEYS (anyone who "
        "reaches the port spends the solver's budget); without it such a start is refused.",
    )
    limits: LimitSettings = Field(default_factory=LimitSettings)

    redis_url: SecretStr | None = Field(
        None,
        description="Redis shared by every replica (redis://[:password@]host:6379/0, "
        "rediss:// for TLS, unix:///path): where per-key limits are counted (unset = in "
        "process, one node) and the response cache's store unless DIVCONQ_CACHE__URL says "
        "otherwise.",
    )
    cache: CacheSettings = Field(default_factory=CacheSettings)
    ledger_url: SecretStr | None = Field(
        None,
        description="Where the request ledger lives: postgresql://user:pass@host/db for many "
        "replicas, or sqlite:///path; unset = SQLite at <data_dir>/ledger.sqlite3.",
    )
    ledger: LedgerSettings = Field(default_factory=LedgerSettings)

    decomposer: DecomposerSettings = Field(default_factory=DecomposerSettings)
    solver: SolverSettings = Field(
        default_factory=SolverSettings, description="The profile named 'default'."
    )
    solvers: dict[str, SolverSettings] = Field(
        default_factory=dict,
        description="More named solver profiles: DIVCONQ_SOLVERS__<NAME>__BASE_URL, ...",
    )
    default_solver: str = Field("default", description="Profile used when a request names none.")

    @field_validator("api_keys", mode="before")
    @classmethod
    def _keys_as_tenants(cls, v: Any) -> Any:
        return parse_keys(v)

    @model_validator(mode="after")
    def _check_solver_target(self) -> Settings:
        check_unique(self.api_keys)
        profiles = self.solver_profiles
        for name, profile in profiles.items():
            env = "DIVCONQ_SOLVER" if name == "default" else f"DIVCONQ_SOLVERS__{name.upper()}"
            if profile.embedded:
                if self.decomposer.backend != "vllm":
                    raise ValueError(
                        f"{env}__BACKEND is embedded (the default), which runs on the "
                        "in-process 'vllm' decomposer's engine; set "
                        f"{env}__BASE_URL and {env}__MODEL for a remote solver"
                    )
                if profile.base_url or profile.model:
                    raise ValueError(
                        f"{env}: the embedded solver is the in-process model; it takes no "
                        "BASE_URL or MODEL (a remote solver: set BACKEND=openai)"
                    )
            elif not profile.model:
                raise ValueError(f"{env}__MODEL is required for backend {profile.backend!r}")
            elif profile.backend in NEEDS_BASE_URL and not profile.base_url:
                raise ValueError(f"{env}__BASE_URL is required for backend {profile.backend!r}")
            for fallback in profile.fallbacks:
                if fallback not in profiles or fallback == name:
                    raise ValueError(f"{env}__FALLBACKS names unknown profile {fallback!r}")
        adapters = self.decomposer_adapters
        adapter = self.default_adapter_among(adapters)
        if adapter is not None and adapter not in adapters:
            raise ValueError(f"DIVCONQ_DECOMPOSER__ADAPTER names unknown adapter {adapter!r}")
        if self.default_solver not in profiles:
            raise ValueError(
                f"DIVCONQ_DEFAULT_SOLVER names unknown profile {self.default_solver!r}"
            )
        if self.decomposer_model_name in self.pipeline_models:
            raise ValueError(
                f"DIVCONQ_PIPELINE_MODELS: {self.decomposer_model_name!r} is the embedded "
                "model's own name"
            )
        if self.max_subquestions > self.max_subquestions_limit:
            raise ValueError("max_subquestions must not exceed max_subquestions_limit")
        if self.max_body_bytes < self.min_body_bytes:
            raise ValueError(
                f"DIVCONQ_MAX_BODY_BYTES={self.max_body_bytes} cannot hold a request at the "
                f"character limits ({self.max_question_chars} + {self.max_context_chars}, up "
                f"to 12 bytes each in JSON): set at least {self.min_body_bytes}, or lower "
                "DIVCONQ_MAX_QUESTION_CHARS / DIVCONQ_MAX_CONTEXT_CHARS"
            )
        return self

    @property
    def min_body_bytes(self) -> int:
        """The body a request at the character limits may take: every character
        spelled as a JSON-escaped surrogate pair (``\\ud83d\\ude00``, 12 bytes), and
        4096 bytes for the other fields."""
        return 12 * (self.max_question_chars + self.max_context_chars) + BODY_SLACK_BYTES

    @property
    def decomposer_adapters(self) -> dict[str, str]:
        """Adapters the decomposer can serve, by name (scans the shipped ones on disk:
        at start-up only; requests read ``service.decomposer.adapters.Adapters``)."""
        d = self.decomposer
        # Shipped adapters were trained on the embedded model only.
        shipped = shipped_adapters() if d.model is None and d.backend == "vllm" else {}
        return {**shipped, **d.adapters}

    @property
    def default_adapter(self) -> str | None:
        """The adapter used when a request names none (None = base model)."""
        return self.default_adapter_among(self.decomposer_adapters)

    def default_adapter_among(self, known: Mapping[str, str]) -> str | None:
        """``default_adapter`` given the adapters already found (no disk scan)."""
        name = self.decomposer.adapter
        if name == NO_ADAPTER:
            return None
        if name in known:
            return name
        # The shipped default does not apply to another model or a sidecar
        # (there, adapters are the names in DIVCONQ_DECOMPOSER__ADAPTERS).
        return None if name == SHIPPED_ADAPTER else name

    @property
    def solver_profiles(self) -> dict[str, SolverSettings]:
        """Every solver profile by name; DIVCONQ_SOLVER__* is 'default'."""
        return {"default": self.solver, **self.solvers}

    def solver_model(self, profile: SolverSettings) -> str:
        return self.decomposer_model_name if profile.embedded else str(profile.model)

    def solver_prompts(self, profile: SolverSettings) -> PromptStyleName:
        """The prompt style this profile gets (``service.pipeline.styles``)."""
        if profile.prompts != "auto":
            return profile.prompts
        # The embedded default serves the distilled checkpoint (model_prep.py).
        shipped = profile.embedded and self.decomposer.model is None
        return "distilled" if shipped else "chat"

    def solver_stop(self, profile: SolverSettings) -> list[str]:
        if profile.stop or not profile.embedded:
            return profile.stop
        # The distilled solver writes one step per line; a base model rambles
        # on after its first paragraph.
        return ["\n"] if self.solver_prompts(profile) == "distilled" else ["\n\n"]

    def solver_tokens(self, profile: SolverSettings) -> int:
        if profile.max_tokens is not None:
            return profile.max_tokens
        # The distilled solver writes a whole GSM8K solution in `direct` mode (95th
        # percentile 227 tokens); its steps end at the newline well before. A base
        # model on CPU writes ~20 tokens/s and rambles: keep it snappy.
        rambles = profile.embedded and self.solver_prompts(profile) == "chat"
        return 96 if rambles else 256

    def price(self, model: str) -> ModelPrice:
        return self.prices.get(model) or ModelPrice()

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def embedded_model_dir(self) -> Path:
        return self.models_dir / EMBEDDED_MODEL_NAME

    @property
    def decomposer_model_name(self) -> str:
        d = self.decomposer
        if d.served_model_name:
            return d.served_model_name
        return d.model or EMBEDDED_MODEL_NAME

    @property
    def solver_max_tokens(self) -> int:
        return self.solver_tokens(self.solver)

    @property
    def solver_model_name(self) -> str:
        return self.solver_model(self.solver)
