"""Trim the embedded model's vocabulary to the tokens its task uses.

Why: the embedded model ties its output layer to a 262,144 x 640 embedding.
Decoding one token multiplies the hidden state by all of it: 0.67 GB of
float32 read per step, 71 ms of the 125 ms a step takes on a 2-core AVX2-only
CPU (docs/benchmarks.md, section 3). The distilled pair writes grade-school
arithmetic in English; the tokens that the GSM8K training set and the
service's prompts tokenize into are about a tenth of the vocabulary.

How, so that nothing else changes:

- The kept tokens are every token of the tokenized texts, closed under the
  tokenizer's merges (both halves of every merge that makes a kept token),
  plus the reserved low ids (control tokens, ``<start_of_turn>``,
  ``<end_of_turn>``, the 256 byte-fallback tokens) and every named special
  token. The merges kept are those between kept tokens. For any text in
  the source, byte-pair encoding then picks the same merges in the same
  order, so the tokenization is the same token for token. Other text still
  encodes, through shorter pieces and, at worst, the byte fallback.
- Tokens keep their order, so the low ids (``<bos>``, ``<eos>``, the turn
  markers) keep their values; the model keeps the embedding rows of the
  kept tokens.
- Greedy decoding picks the same token whenever the full model's choice is
  a kept token: the kept tokens' logits are unchanged.

The kept ids ship in ``service/embedded/vocabularies/gsm8k.json`` (the Docker image has no
``data/``); ``python -m service.embedded.vocab`` rebuilds that file, and a test checks
it matches its sources.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

KEEP_FILE = Path(__file__).parent / "vocabularies" / "gsm8k.json"
REPO_ROOT = Path(__file__).resolve().parents[2]
PROMPT_SOURCES = (
    "service/pipeline/prompts.py",
    "service/distill/socratic.py",
    "service/embedded/templates/chat_template.jinja",
)
# Every id below this one is reserved or structural in Gemma 3's tokenizer:
# control tokens, <unused0-98>, the turn markers, markup tokens, and the
# byte-fallback tokens <0x00>..<0xFF> (ids 238-493).
RESERVED_IDS = 494
_BYTE_TOKEN = re.compile(r"<0x[0-9A-F]{2}>")


def source_texts(repo: Path = REPO_ROOT) -> list[str]:
    """What the kept tokens come from: GSM8K's training set and the prompts' sources.

    The training problems and worked solutions (not the evaluation set), and
    the modules whose strings hold every prompt, few-shot example, training
    row format and chat template the model is given (``PROMPT_SOURCES``).
    """
    texts: list[str] = []
    train = repo / "service" / "data" / "gsm8k" / "train.jsonl"
    for line in train.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        texts += [row["question"], row["answer"]]
    texts += [(repo / name).read_text(encoding="utf-8") for name in PROMPT_SOURCES]
    return texts


def kept_ids(
    tokenizer: dict[str, Any], texts: Iterable[str], *, reserved: int = RESERVED_IDS
) -> list[int]:
    """The ids to keep, ascending: the tokens of ``texts``, closed under the merges.

    Also every id below ``reserved``, the byte-fallback tokens and the named
    special tokens (not Gemma's ``<unusedN>`` placeholders).
    """
    from tokenizers import Tokenizer

    vocab: dict[str, int] = tokenizer["model"]["vocab"]
    by_id = {i: token for token, i in vocab.items()}
    encoder = Tokenizer.from_str(json.dumps(tokenizer))
    keep = {by_id[i] for enc in encoder.encode_batch(list(texts)) for i in enc.ids if i in by_id}
    keep |= {token for token, i in vocab.items() if i < reserved or _BYTE_TOKEN.fullmatch(token)}
    # Both halves of every merge that makes a kept token, until nothing is added.
    makers: dict[str, list[tuple[str, str]]] = {}
    for left, right in _merges(tokenizer):
        makers.setdefault(left + right, []).append((left, right))
    todo = list(keep)
    while todo:
        for pair in makers.get(todo.pop(), ()):
            for half in pair:
                if half not in keep and half in vocab:
                    keep.add(half)
                    todo.append(half)
    ids = {vocab[token] for token in keep}
    ids |= {
        t["id"]
        for t in tokenizer["added_tokens"]
        if t["special"] and not t["content"].startswith("<unused")
    }
    return sorted(ids)


def _merges(tokenizer: dict[str, Any]) -> list[tuple[str, str]]:
    merges = tokenizer["model"]["merges"]
    return [tuple(m) if isinstance(m, list) else tuple(m.split(" ", 1)) for m in merges]


def trimmed_tokenizer(tokenizer: dict[str, Any], keep: Sequence[int]) -> dict[str, Any]:
    """``tokenizer`` with only the ``keep`` ids, renumbered in order, and their merges."""
    new_id = {old: new for new, old in enumerate(keep)}
    vocab: dict[str, int] = tokenizer["model"]["vocab"]
    new_vocab = {token: new_id[i] for token, i in vocab.items() if i in new_id}
    merges = [
        [left, right]
        for left, right in _merges(tokenizer)
        if left in new_vocab and right in new_vocab and left + right in new_vocab
    ]
    added = [{**t, "id": new_id[t["id"]]} for t in tokenizer["added_tokens"] if t["id"] in new_id]
    model = {**tokenizer["model"], "vocab": new_vocab, "merges": merges}
    return {**tokenizer, "model": model, "added_tokens": added}


def load_keep_file(path: Path = KEEP_FILE) -> list[int]:
    return [int(i) for i in json.loads(path.read_text())["ids"]]


def trim_checkpoint(model_dir: Path, keep: Sequence[int], weights: dict[str, Any]) -> None:
    """Trim ``model_dir``'s tokenizer and config, and ``weights``' embedding, in place."""
    import torch

    tok_path = model_dir / "tokenizer.json"
    tokenizer = json.loads(tok_path.read_text(encoding="utf-8"))
    trimmed = json.dumps(trimmed_tokenizer(tokenizer, keep), ensure_ascii=False)
    tok_path.write_text(trimmed, encoding="utf-8")  # not the locale's: it is not ASCII
    cfg_path = model_dir / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["vocab_size"] = len(keep)
    cfg_path.write_text(json.dumps(cfg, indent=2) + "\n")
    key = "model.embed_tokens.weight"
    weights[key] = weights[key].index_select(0, torch.tensor(list(keep))).contiguous()


def main(argv: Sequence[str] | None = None) -> int:
    """Rebuild ``service/embedded/vocabularies/gsm8k.json`` from its sources."""
    import argparse

    from service.core.settings import Settings

    parser = argparse.ArgumentParser(
        prog="python -m service.embedded.vocab", description=main.__doc__
    )
    parser.add_argument("--out", type=Path, default=KEEP_FILE)
    args = parser.parse_args(argv)
    tokenizer_path = Settings().embedded_model_dir / "tokenizer.json"
    if not tokenizer_path.is_file():
        raise SystemExit(f"{tokenizer_path} is missing: run `python -m service prepare-model`")
    tokenizer = json.loads(tokenizer_path.read_text(encoding="utf-8"))
    ids = kept_ids(tokenizer, source_texts())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "about": "Token ids of the embedded model kept in its distilled checkpoint "
                "(service/embedded/vocab.py); rebuilt by `python -m service.embedded.vocab`.",
                "vocab_size": len(tokenizer["model"]["vocab"]),
                "ids": ids,
            }
        )
        + "\n"
    )
    print(f"{args.out}: {len(ids)} of {len(tokenizer['model']['vocab'])} tokens kept")
    return 0


if __name__ == "__main__":
    sys.exit(main())
