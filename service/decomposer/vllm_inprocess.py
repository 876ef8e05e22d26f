"""``vllm`` decomposer: the model runs inside this process on vLLM's AsyncLLM."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from pathlib import Path

import httpx2

from service.completion import Completion
from service.decomposer.base import register
from service.engine import EmbeddedEngine
from service.errors import NotReady
from service.settings import Settings

log = logging.getLogger(__name__)


@register("vllm")
class VllmDecomposer:
    def __init__(self, settings: Settings, http: httpx2.AsyncClient) -> None:
        self._settings = settings
        self.model_name = settings.decomposer_model_name
        self.engine: EmbeddedEngine | None = None
        self._state = "loading"

    @property
    def ready(self) -> bool:
        return self.engine is not None and self.engine.ready

    @property
    def state(self) -> str:
        return self._state

    async def start(self) -> None:
        try:
            path = self._settings.decomposer.model
            if path is not None and path.startswith((".", "/", "~")):
                # A local path, not a hub id: fail now with a clear message
                # rather than deep inside vLLM.
                local = Path(path).expanduser()  # noqa: ASYNC240  once, at start-up
                if not local.is_dir():
                    raise FileNotFoundError(f"decomposer model directory {local} does not exist")
                path = str(local)
            if path is None:
                from service.model_prep import prepare_embedded_model

                self._state = "loading: preparing the embedded model"
                # Conversion is CPU-bound for about a minute; keep serving /healthz.
                model_dir = await asyncio.to_thread(
                    prepare_embedded_model, self._settings.embedded_model_dir
                )
                path = str(model_dir)
            self._state = "loading: starting the vLLM engine"
            engine = EmbeddedEngine(
                self._settings.decomposer,
                path,
                self.model_name,
                adapters=self._settings.decomposer_adapters,
            )
            await engine.start()
            self.engine = engine
            self._state = "ready"
        except asyncio.CancelledError:
            self._state = "stopped"
            raise
        except Exception as exc:
            self._state = f"failed: {type(exc).__name__}: {exc}"
            log.exception("decomposer failed to start")
            raise

    async def complete(
        self,
        prompt: str,
        *,
        max_tokens: int,
        stop: Sequence[str],
        request_id: str,
        adapter: str | None = None,
    ) -> Completion:
        engine = self.engine
        if engine is None or not engine.ready:
            raise NotReady(f"decomposer not ready ({self._state})", headers={"Retry-After": "10"})
        gen = await engine.generate(
            prompt,
            request_id=request_id,
            max_tokens=max_tokens,
            temperature=self._settings.decomposer.temperature,
            stop=stop,
            adapter=adapter,
        )
        return Completion(gen.text, gen.prompt_tokens, gen.completion_tokens, gen.finish_reason)

    async def aclose(self) -> None:
        engine, self.engine = self.engine, None
        if engine is not None:
            await engine.shutdown()
