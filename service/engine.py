"""The in-process vLLM engine that serves the embedded (or any local) model.

One ``AsyncLLM`` per process, created and shut down by the app's lifespan. It
backs the ``vllm`` decomposer and, when enabled, the service's own
OpenAI-compatible ``/v1/chat/completions`` (the default solver).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from service.settings import DecomposerSettings

if TYPE_CHECKING:
    from vllm.v1.engine.async_llm import AsyncLLM

log = logging.getLogger(__name__)


def engine_args(s: DecomposerSettings) -> dict[str, Any]:
    """The vLLM engine arguments the decomposer settings fix, for the service's
    engine and for offline use (``distill data --local-teacher``).

    Also sets ``VLLM_CPU_KVCACHE_SPACE``, which vLLM's CPU worker reads from
    the environment when the engine starts (harmless on GPU).
    """
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(s.kv_cache_gib))
    return {
        "max_model_len": s.max_model_len,
        "enforce_eager": s.enforce_eager,
        "dtype": s.dtype,
        "gpu_memory_utilization": s.gpu_memory_utilization,
    }


@dataclass(frozen=True)
class Generation:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str


class EmbeddedEngine:
    """Thin async wrapper over vLLM's ``AsyncLLM`` with token accounting."""

    def __init__(
        self,
        settings: DecomposerSettings,
        model_path: str,
        served_name: str,
        adapters: dict[str, str] | None = None,
    ) -> None:
        self._settings = settings
        self._adapters = adapters or {}
        self._model_path = model_path
        self.served_name = served_name
        self._engine: AsyncLLM | None = None
        self._loras: dict[str, Any] = {}
        self._tokenizer: Any = None

    @property
    def ready(self) -> bool:
        return self._engine is not None

    @property
    def unfinished_requests(self) -> int:
        """Generations the engine is running or queueing now."""
        return 0 if self._engine is None else int(self._engine.get_num_unfinished_requests())

    async def start(self) -> None:
        # Importing vLLM (seconds) and constructing AsyncLLM (the engine core
        # process loads weights) both block; keep the event loop and
        # /healthz responsive meanwhile.
        engine = await asyncio.to_thread(self._build)
        if self._adapters:
            from vllm.lora.request import LoRARequest

            self._loras = {
                name: LoRARequest(name, i, path)
                for i, (name, path) in enumerate(sorted(self._adapters.items()), 1)
            }
        self._tokenizer = engine.tokenizer
        self._engine = engine
        log.info("vLLM engine ready", extra={"model": self._model_path})

    def _build(self) -> AsyncLLM:
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        s = self._settings
        args = AsyncEngineArgs(
            model=self._model_path,
            served_model_name=[self.served_name],
            **engine_args(s),
            enable_lora=bool(self._adapters),
            max_loras=max(1, len(self._adapters)),
            max_lora_rank=cast(Any, s.max_lora_rank),  # validated in settings
        )
        return AsyncLLM.from_engine_args(args)

    async def generate(
        self,
        prompt: str,
        *,
        request_id: str,
        max_tokens: int,
        temperature: float,
        stop: Sequence[str] = (),
        adapter: str | None = None,
    ) -> Generation:
        if self._engine is None:
            raise RuntimeError("engine not started")
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        params = SamplingParams(
            max_tokens=max_tokens,
            temperature=temperature,
            stop=list(stop) or None,
            output_kind=RequestOutputKind.FINAL_ONLY,
        )
        final = None
        try:
            async for out in self._engine.generate(
                prompt,
                params,
                request_id,
                lora_request=self._loras[adapter] if adapter else None,
            ):
                final = out
        except asyncio.CancelledError:
            # vLLM aborts on generator close too; doing it here makes the
            # guarantee ours rather than an implementation detail.
            with contextlib.suppress(Exception):
                await self._engine.abort(request_id)
            log.info("generation aborted", extra={"request_id": request_id})
            raise
        if final is None or not final.outputs:
            raise RuntimeError("engine returned no output")
        completion = final.outputs[0]
        return Generation(
            text=completion.text,
            prompt_tokens=len(final.prompt_token_ids or ()),
            completion_tokens=len(completion.token_ids),
            finish_reason=completion.finish_reason or "stop",
        )

    def render_chat(self, messages: Sequence[dict[str, str]]) -> str:
        """Apply the model's chat template (the project's own, if the model has none)."""
        from service.model_prep import chat_template

        tok = self._tokenizer
        template = None if getattr(tok, "chat_template", None) else chat_template()
        rendered = tok.apply_chat_template(
            list(messages), chat_template=template, tokenize=False, add_generation_prompt=True
        )
        return str(rendered)

    async def shutdown(self) -> None:
        engine, self._engine = self._engine, None
        if engine is not None:
            engine.shutdown()
            log.info("vLLM engine shut down")
