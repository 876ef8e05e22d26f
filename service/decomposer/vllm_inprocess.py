"""``vllm`` decomposer: the model runs inside this process on vLLM's AsyncLLM.

On the embedded default there are two checkpoints (``service/embedded/model_prep.py``):

- the **distilled** one, the base model with the shipped adapter folded in.
  It serves the default path (static and socratic decomposition, the
  embedded solver, and the raw model at ``/v1``) with no LoRA in the engine: merged weights
  cost nothing per token, a LoRA-enabled CPU engine about 2x.
- the **base** one, for ``"decomposer_adapter": "none"`` (the few-shot base
  model) and for adapters of your own, which are trained on the base. It runs
  in a second engine, started on the first request that needs it
  (``DIVCONQ_DECOMPOSER__BASE_ENGINE``): most deployments never pay for it.

A model of your own (``DIVCONQ_DECOMPOSER__MODEL``) runs in one engine, with
LoRA enabled when adapters are configured.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import httpx2

from service.core.completion import Completion, PromptCall
from service.core.errors import InvalidRequest, NotReady
from service.core.settings import SHIPPED_ADAPTER, Settings
from service.decomposer.base import register
from service.embedded.engine import EmbeddedEngine, Generation
from service.embedded.engine_config import local_hardware
from service.embedded.hardware import EngineHardware

log = logging.getLogger(__name__)


@register("vllm")
class VllmDecomposer:
    def __init__(self, settings: Settings, http: httpx2.AsyncClient) -> None:
        self._settings = settings
        self.model_name = settings.decomposer_model_name
        # The main engine; it also answers the embedded solver and the raw /v1.
        self.engine: EmbeddedEngine | None = None
        # Embedded default only: the adapter folded into the main engine's
        # weights, and the base checkpoint's engine (None until needed).
        self.distilled: str | None = None
        self._base_dir: str | None = None
        self._base: EmbeddedEngine | None = None
        self._user_adapters: dict[str, str] = {}
        # Resolved once for the merge's dtype and handed to the engines.
        self._hardware: EngineHardware | None = None
        self._base_lock = asyncio.Lock()
        self._state = "loading"

    @property
    def ready(self) -> bool:
        return self.engine is not None and self.engine.ready

    @property
    def state(self) -> str:
        if self.engine is not None and self.engine.dead:
            return "failed: the vLLM engine stopped"
        return self._state

    @property
    def base_engine_state(self) -> str:
        if self._base_dir is None:
            return "none"
        if self._base is not None and self._base.ready:
            return "ready"
        if self._base_lock.locked():
            return "loading"
        return self._settings.decomposer.base_engine if self._base is None else "failed"

    async def start(self) -> None:
        try:
            path, adapters = await self._checkpoints()
            self._state = "loading: starting the vLLM engine"
            engine = EmbeddedEngine(
                self._settings.decomposer,
                path,
                self.model_name,
                adapters=adapters,
                hardware=self._hardware,
            )
            await engine.start()
            self.engine = engine
            self._state = "ready"
            if self._base_dir is not None and self._settings.decomposer.base_engine == "eager":
                await self._base_engine()
        except asyncio.CancelledError:
            self._state = "stopped"
            raise
        except Exception as exc:
            self._state = f"failed: {type(exc).__name__}: {exc}"
            log.exception("decomposer failed to start")
            raise

    async def _checkpoints(self) -> tuple[str, dict[str, str]]:
        """The main engine's checkpoint and the LoRA adapters it serves."""
        s = self._settings
        path = s.decomposer.model
        if path is not None:
            if path.startswith((".", "/", "~")):
                # A local path, not a hub id: fail now with a clear message
                # rather than deep inside vLLM.
                local = Path(path).expanduser()  # noqa: ASYNC240  once, at start-up
                if not local.is_dir():
                    raise FileNotFoundError(f"decomposer model directory {local} does not exist")
                path = str(local)
            return path, s.decomposer_adapters
        from service.embedded.model_prep import prepare_distilled_model, prepare_embedded_model

        self._state = "loading: preparing the embedded model"
        # Conversion is CPU-bound for about a minute; keep serving /healthz.
        base_dir = await asyncio.to_thread(prepare_embedded_model, s.embedded_model_dir)
        adapters = s.decomposer_adapters
        shipped = adapters.pop(SHIPPED_ADAPTER, None)
        if s.decomposer.base_engine != "off" or adapters:
            self._base_dir = str(base_dir)
        self._user_adapters = adapters
        if shipped is None:
            return str(base_dir), {}
        self._state = "loading: merging the distilled weights"
        # Saved in the dtype the engine will run, so it loads with no cast.
        hw = self._hardware = await asyncio.to_thread(local_hardware, s.decomposer)
        merged = await asyncio.to_thread(
            prepare_distilled_model,
            base_dir,
            Path(shipped),
            dtype=hw.dtype,
            vocabulary=s.decomposer.vocabulary,
        )
        self.distilled = SHIPPED_ADAPTER
        return str(merged), {}

    async def _base_engine(self) -> EmbeddedEngine:
        """The base checkpoint's engine, started once, on first use."""
        if self._base is not None and self._base.ready:
            return self._base
        if self._base_dir is None or self._settings.decomposer.base_engine == "off":
            raise InvalidRequest(
                "the base model is not served here (DIVCONQ_DECOMPOSER__BASE_ENGINE=off); "
                f"use the distilled decomposer {self.distilled!r}"
            )
        async with self._base_lock:
            if self._base is None or not self._base.ready:
                log.info("starting the base model's engine (first request that needs it)")
                engine = EmbeddedEngine(
                    self._settings.decomposer,
                    self._base_dir,
                    f"{self.model_name}-base",
                    adapters=self._user_adapters,
                    hardware=self._hardware,
                )
                self._base = engine
                await engine.start()
        return self._base

    async def _route(self, adapter: str | None) -> tuple[EmbeddedEngine, str | None]:
        """The engine that serves ``adapter`` (None = the base model), and its LoRA."""
        engine = self.engine
        if engine is None or not engine.ready:
            raise NotReady(f"decomposer not ready ({self.state})", headers={"Retry-After": "10"})
        if self.distilled is None:
            return engine, adapter
        if adapter == self.distilled:
            return engine, None
        return await self._base_engine(), adapter

    async def complete(self, call: PromptCall) -> Completion:
        engine, lora = await self._route(call.adapter)
        # An input the engine refuses is an InvalidRequest already (engine.py).
        return await engine.generate(
            Generation(
                call.prompt,
                request_id=call.request_id,
                max_tokens=call.max_tokens,
                temperature=self._settings.decomposer.temperature,
                stop=call.stop,
                adapter=lora,
            )
        )

    async def aclose(self) -> None:
        engines = [self.engine, self._base]
        self.engine = self._base = None
        for engine in engines:
            if engine is not None:
                await engine.shutdown()
