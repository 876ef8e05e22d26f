"""Token counts for calls whose backend reported none, so usage is never silently 0.

Some OpenAI-compatible servers answer 200 without ``usage``. The pipeline
then counts the call's prompt and answer with a tokenizer: a
``tokenizer.json`` (Hugging Face ``tokenizers``), by default the embedded
model's (``DIVCONQ_USAGE_TOKENIZER``). A hosted solver's own tokenizer is
unknown here, so the figure is an estimate: the stage is marked
``estimated`` and the call counted in ``divconq_usage_estimated_calls_total``.
Without a tokenizer file (or the ``tokenizers`` package) words and
punctuation marks are counted instead.

The tokenizer loads on the first call that needs it (seconds for Gemma's
33 MB file), in a thread, once.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
from collections.abc import Callable, Sequence
from pathlib import Path

from service.core.settings import Settings

log = logging.getLogger(__name__)

# OpenAI's accounting of chat formatting: tokens per message and for the reply's priming.
PER_MESSAGE = 3
PER_REPLY = 3
_WORDS = re.compile(r"\w+|[^\w\s]", re.UNICODE)

Count = Callable[[str], int]


def _crude(text: str) -> int:
    return len(_WORDS.findall(text))


def tokenizer_file(settings: Settings) -> Path | None:
    """The tokenizer.json to count with: the setting, else the embedded model's, if prepared."""
    name = settings.usage_tokenizer
    if name == "none":
        return None
    path = Path(name).expanduser() if name else settings.embedded_model_dir / "tokenizer.json"
    if path.is_dir():
        path = path / "tokenizer.json"
    return path if path.is_file() else None


@functools.lru_cache(maxsize=4)
def _load(path: Path | None) -> Count:
    """A counter for ``path``'s tokenizer, loaded once per process (apps share it:
    Gemma's file takes seconds to load, and tests build many apps)."""
    if path is None:
        return _crude
    try:
        from tokenizers import Tokenizer
    except ImportError:
        log.warning("the 'tokenizers' package is missing; counting words for usage")
        return _crude
    tokenizer = Tokenizer.from_file(str(path))
    log.info("usage estimates count with %s", path)
    return lambda text: len(tokenizer.encode(text, add_special_tokens=False).ids)


class TokenEstimator:
    def __init__(self, path: Path | None) -> None:
        self._path = path
        self._count: Count | None = None
        self._lock: asyncio.Lock | None = None

    def _load(self) -> Count:
        return _load(self._path)

    async def _counter(self) -> Count:
        if self._count is None:
            self._lock = self._lock or asyncio.Lock()
            async with self._lock:
                if self._count is None:
                    self._count = await asyncio.to_thread(self._load)
        return self._count

    async def text(self, text: str) -> int:
        return (await self._counter())(text)

    async def chat(self, messages: Sequence[dict[str, str]]) -> int:
        count = await self._counter()
        return sum(count(m["content"]) + PER_MESSAGE for m in messages) + PER_REPLY
