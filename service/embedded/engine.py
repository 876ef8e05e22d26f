"""The in-process vLLM engine that serves the embedded (or any local) model.

One ``AsyncLLM`` per process, created and shut down by the app's lifespan. It
backs the ``vllm`` decomposer, the ``embedded`` solver (the default) and,
when enabled, the raw model at ``/v1/chat/completions``
(``service/embedded/chat.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from service.core.completion import Completion, TextSink
from service.core.errors import InvalidRequest, NotReady
from service.core.settings import DecomposerSettings
from service.embedded.engine_config import (
    apply_engine_env,
    engine_args,
    engine_env,
    executor_backend,
    local_hardware,
)
from service.embedded.engine_process import in_fresh_thread, watch_parent_in_forked_children
from service.embedded.hardware import EngineHardware

if TYPE_CHECKING:
    from vllm.v1.engine.async_llm import AsyncLLM

log = logging.getLogger(__name__)

ENGINE_DEAD = "the vLLM engine stopped (see the service log for why); restart the service"


def _already_shut_down(timeout: float | None = None) -> None:
    return None


@contextlib.contextmanager
def tokenizer_copies_in_background() -> Iterator[list[threading.Thread]]:
    """While ``AsyncLLM`` is built, make vLLM's renderer tokenizer copies off the critical path.

    vLLM's renderer deep-copies the tokenizer (``renderer_num_workers + 1``
    copies, for thread safety) *before* it starts the engine-core process.
    Gemma's 262k-token tokenizer takes about 4 s a copy on a 2-core CPU, so
    those copies delayed the engine core, and ``/readyz``, by about 8 s. Here
    vLLM's own pooling function runs unchanged, but in a thread: the engine
    core boots (a separate process, minutes of imports) meanwhile, and the
    caller joins the yielded threads before the first request. Until the pool
    is installed the tokenizer is used only by the building thread, as before.
    """
    import vllm.renderers.hf as hf_renderer

    original = hf_renderer.maybe_make_thread_pool  # type: ignore[attr-defined]
    threads: list[threading.Thread] = []

    def in_background(tokenizer: Any, copies: int = 1) -> Any:
        thread = threading.Thread(
            target=original, args=(tokenizer, copies), name="tokenizer-copies", daemon=True
        )
        thread.start()
        threads.append(thread)
        return tokenizer

    hf_renderer.maybe_make_thread_pool = in_background  # type: ignore[attr-defined]
    try:
        yield threads
    finally:
        hf_renderer.maybe_make_thread_pool = original  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Generation:
    """One engine call: the prompt, its sampling, and where its text goes as it is written."""

    prompt: str
    request_id: str
    max_tokens: int
    temperature: float
    stop: Sequence[str] = ()
    # A LoRA adapter's name (None = the base model).
    adapter: str | None = None
    # Tokens that end the text besides the model's end of sequence (a chat turn's end).
    stop_token_ids: Sequence[int] = ()
    on_text: TextSink | None = None


class EmbeddedEngine:
    """Thin async wrapper over vLLM's ``AsyncLLM`` with token accounting."""

    def __init__(
        self,
        settings: DecomposerSettings,
        model_path: str,
        served_name: str,
        adapters: dict[str, str] | None = None,
        hardware: EngineHardware | None = None,
    ) -> None:
        self._settings = settings
        self._adapters = adapters or {}
        self._model_path = model_path
        self.served_name = served_name
        self._engine: AsyncLLM | None = None
        self._loras: dict[str, Any] = {}
        self._tokenizer: Any = None
        # Resolved once: by the caller when it already has it, else in _build.
        self.hardware: EngineHardware | None = hardware
        self._turn_end_ids: list[int] = []

    @property
    def ready(self) -> bool:
        return self._engine is not None and not self.dead

    @property
    def dead(self) -> bool:
        """The engine core stopped (killed, crashed): vLLM does not restart it."""
        return self._engine is not None and bool(self._engine.errored)

    @property
    def unfinished_requests(self) -> int:
        """Generations the engine is running or queueing now."""
        return 0 if self._engine is None else int(self._engine.get_num_unfinished_requests())

    async def start(self) -> None:
        # Importing vLLM (seconds) and constructing AsyncLLM (the engine core
        # process loads weights) both block; keep the event loop and
        # /healthz responsive meanwhile.
        engine = await in_fresh_thread(self._build, name="engine-build")
        if self._adapters:
            from vllm.lora.request import LoRARequest

            self._loras = {
                name: LoRARequest(name, i, path)
                for i, (name, path) in enumerate(sorted(self._adapters.items()), 1)
            }
        self._tokenizer = engine.tokenizer
        self._turn_end_ids = self._find_turn_end_ids()
        self._engine = engine
        hw = self.hardware
        log.info(
            f"vLLM engine ready: {self._model_path} ({hw.dtype if hw else '?'}, "
            f"OpenMP threads bound to CPUs {hw.omp_threads_bind if hw else '?'}, "
            f"executor {hw.executor if hw else '?'}, "
            f"engine core started by {hw.start_method if hw else '?'})",
            extra={"model": self._model_path, **(hw.as_dict() if hw else {})},
        )

    def _build(self) -> AsyncLLM:
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        s = self._settings
        hw = self.hardware = self.hardware or local_hardware(s)
        apply_engine_env(engine_env(s, hw))
        args = AsyncEngineArgs(
            model=self._model_path,
            served_model_name=[self.served_name],
            **engine_args(s, hw),
            enable_lora=bool(self._adapters),
            max_loras=max(1, len(self._adapters)),
            max_lora_rank=cast(Any, s.max_lora_rank),  # validated in settings
            distributed_executor_backend=executor_backend(hw),
        )
        from vllm.v1.executor import Executor

        # AsyncLLM.from_engine_args in two steps: vLLM's CPU platform sets
        # spawn while it builds the config, so the start method is set after
        # (hardware.resolve_start_method says why fork).
        config = args.create_engine_config()
        os.environ["VLLM_WORKER_MULTIPROC_METHOD"] = hw.start_method
        # A forked core must not outlive the service (engine_process.py).
        watch_parent_in_forked_children()
        with tokenizer_copies_in_background() as copying:
            engine = AsyncLLM(
                vllm_config=config,
                executor_class=Executor.get_class(config),
                log_requests=args.enable_log_requests,
                log_stats=not args.disable_log_stats,
            )
        for thread in copying:
            thread.join()
        return engine

    async def generate(self, gen: Generation) -> Completion:
        """One generation. An input the engine refuses (a prompt past the model's
        context, a bad sampling value) is ``InvalidRequest`` (422): mapped here,
        once, for every caller (the decomposer, the embedded ``/v1``).

        ``gen.on_text`` gets the text as it is written. vLLM holds back the tail
        that may yet turn out to be a stop string, so the pieces add up to the
        returned text."""
        if self._engine is None:
            raise RuntimeError("engine not started")
        from vllm import SamplingParams
        from vllm.exceptions import VLLMClientError
        from vllm.sampling_params import RequestOutputKind
        from vllm.v1.engine.exceptions import EngineDeadError

        final = None
        request_id, on_text = gen.request_id, gen.on_text
        try:
            params = SamplingParams(
                max_tokens=gen.max_tokens,
                temperature=gen.temperature,
                stop=list(gen.stop) or None,
                stop_token_ids=list(gen.stop_token_ids) or None,
                output_kind=(
                    RequestOutputKind.CUMULATIVE if on_text else RequestOutputKind.FINAL_ONLY
                ),
            )
            written = 0
            async for out in self._engine.generate(
                gen.prompt,
                params,
                request_id,
                lora_request=self._loras[gen.adapter] if gen.adapter else None,
            ):
                final = out
                text = out.outputs[0].text if on_text and out.outputs else ""
                if on_text and len(text) > written:
                    on_text(text[written:])
                    written = len(text)
        except asyncio.CancelledError:
            # vLLM aborts on generator close too; doing it here makes the
            # guarantee ours rather than an implementation detail.
            with contextlib.suppress(Exception):
                await self._engine.abort(request_id)
            log.info("generation aborted", extra={"request_id": request_id})
            raise
        except EngineDeadError:
            # A 503 (and /readyz not ready), not a 500: the service cannot
            # answer until it is restarted; vLLM logged the cause.
            raise NotReady(ENGINE_DEAD) from None
        except (VLLMClientError, ValueError) as exc:
            # vLLM's own OpenAI server answers these with a 400: the request's
            # fault, never retried. The pinned vLLM raises VLLMValidationError
            # (a VLLMClientError, not a ValueError) for a prompt past
            # max_model_len; older code paths still raise ValueError.
            raise InvalidRequest(
                f"the model {self.served_name} cannot take this input: {exc}"
            ) from None
        if final is None or not final.outputs:
            raise RuntimeError("engine returned no output")
        completion = final.outputs[0]
        return Completion(
            text=completion.text,
            prompt_tokens=len(final.prompt_token_ids or ()),
            completion_tokens=len(completion.token_ids),
            finish_reason=completion.finish_reason or "stop",
            stop_reason=completion.stop_reason if isinstance(completion.stop_reason, str) else None,
            model=self.served_name,
        )

    def render_chat(self, messages: Sequence[dict[str, str]]) -> str:
        """Apply the model's chat template (the project's own, if the model has none)."""
        from service.embedded.model_prep import chat_template

        tok = self._tokenizer
        template = None if getattr(tok, "chat_template", None) else chat_template()
        rendered = tok.apply_chat_template(
            list(messages), chat_template=template, tokenize=False, add_generation_prompt=True
        )
        return str(rendered)

    def count_tokens(self, prompt: str) -> int:
        """The tokens ``prompt`` takes in this engine (as ``generate`` will tokenize it)."""
        return len(self._tokenizer.encode(prompt))

    @property
    def turn_end_ids(self) -> list[int]:
        """Token ids that end a chat turn, looked up once at start-up."""
        return self._turn_end_ids

    def _find_turn_end_ids(self) -> list[int]:
        """Token ids that end a chat turn (Gemma's ``<end_of_turn>``): a chat reply stops there.

        The GGUF-derived checkpoint's end-of-sequence token is ``<eos>`` only,
        so without this a reply would run on into the next turn.
        """
        tok = self._tokenizer
        ids = []
        for marker in ("<end_of_turn>",):
            token_id = tok.convert_tokens_to_ids(marker) if tok is not None else None
            if isinstance(token_id, int) and token_id != getattr(tok, "unk_token_id", None):
                ids.append(token_id)
        return ids

    async def shutdown(self) -> None:
        engine, self._engine = self._engine, None
        if engine is None:
            return
        engine.shutdown()
        # Done once, here. AsyncLLM.__del__ shuts down again when the object
        # goes, which for an in-process run (a finished build future still
        # holds it) is at interpreter exit, with module globals already gone:
        # a TypeError traceback after the last line of output.
        engine.shutdown = _already_shut_down  # type: ignore[method-assign]
        log.info("vLLM engine shut down")
