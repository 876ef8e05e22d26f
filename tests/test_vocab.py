"""The trimmed vocabulary: same tokens for the task's text, lossless for any other."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from service.embedded import vocab


def _tiny_tokenizer() -> dict[str, Any]:
    """A byte-fallback BPE shaped like Gemma 3's: '▁' for spaces, two control tokens."""
    tokens = ["<pad>", "<eos>", *(f"<0x{b:02X}>" for b in range(256))]
    tokens += ["a", "b", "c", "d", "e", "h", "▁"]
    merges = [["a", "b"], ["ab", "c"], ["h", "e"], ["▁", "abc"], ["d", "e"], ["▁", "he"]]
    tokens += [left + right for left, right in merges]
    tokens += ["<unused0>"]
    special = [(0, "<pad>"), (1, "<eos>"), (len(tokens) - 1, "<unused0>")]
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [
            {
                "id": i,
                "content": content,
                "single_word": False,
                "lstrip": False,
                "rstrip": False,
                "normalized": False,
                "special": True,
            }
            for i, content in special
        ],
        "normalizer": {"type": "Replace", "pattern": {"String": " "}, "content": "▁"},
        "pre_tokenizer": None,
        "post_processor": None,
        "decoder": {
            "type": "Sequence",
            "decoders": [
                {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
                {"type": "ByteFallback"},
                {"type": "Fuse"},
            ],
        },
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": True,
            "byte_fallback": True,
            "ignore_merges": False,
            "vocab": {token: i for i, token in enumerate(tokens)},
            "merges": merges,
        },
    }


def _encoder(tokenizer: dict[str, Any]) -> Any:
    from tokenizers import Tokenizer

    return Tokenizer.from_str(json.dumps(tokenizer))


def test_kept_tokens_are_the_texts_tokens_closed_under_merges() -> None:
    full = _tiny_tokenizer()
    keep = vocab.kept_ids(full, ["abc abc"], reserved=2)
    names = {full["model"]["vocab"][t]: t for t in full["model"]["vocab"]}
    kept = {names[i] for i in keep}
    # The text's tokens, and every piece a merge needs to make them.
    assert {"abc", "▁abc", "ab", "a", "b", "c", "▁"} <= kept
    # Controls and byte fallback always; the unused placeholder and tokens
    # the text never needs, not.
    assert {"<pad>", "<eos>", "<0x00>", "<0xFF>"} <= kept
    assert not {"<unused0>", "he", "▁he", "de", "h", "d"} & kept
    assert keep == sorted(keep)


def test_the_trimmed_tokenizer_encodes_its_source_the_same_and_anything_losslessly() -> None:
    full = _tiny_tokenizer()
    keep = vocab.kept_ids(full, ["abc abc"], reserved=2)
    trimmed = vocab.trimmed_tokenizer(full, keep)
    assert len(trimmed["model"]["vocab"]) == len(keep)
    assert sorted(trimmed["model"]["vocab"].values()) == list(range(len(keep)))
    old, new = _encoder(full), _encoder(trimmed)
    # The source text: the same tokens, renumbered (the low ids unchanged).
    for text in ("abc abc", "abcabc"):
        assert [keep[i] for i in new.encode(text).ids] == old.encode(text).ids
    assert new.token_to_id("<eos>") == old.token_to_id("<eos>") == 1
    # Other text: smaller pieces, down to bytes, and the same text back.
    text = "he made abc, héh"
    assert new.decode(new.encode(text).ids) == old.decode(old.encode(text).ids) == text
    assert new.encode("he").tokens == ["<0x68>", "<0x65>"]


def test_trim_checkpoint_keeps_the_embedding_rows_of_the_kept_tokens(tmp_path: Path) -> None:
    import torch

    full = _tiny_tokenizer()
    (tmp_path / "tokenizer.json").write_text(json.dumps(full))
    (tmp_path / "config.json").write_text(json.dumps({"vocab_size": len(full["model"]["vocab"])}))
    embedding = torch.arange(len(full["model"]["vocab"]), dtype=torch.float32)[:, None].repeat(1, 4)
    weights = {"model.embed_tokens.weight": embedding, "model.norm.weight": torch.ones(4)}
    keep = vocab.kept_ids(full, ["abc"], reserved=2)
    vocab.trim_checkpoint(tmp_path, keep, weights)
    assert json.loads((tmp_path / "config.json").read_text())["vocab_size"] == len(keep)
    trimmed = json.loads((tmp_path / "tokenizer.json").read_text())
    assert len(trimmed["model"]["vocab"]) == len(keep)
    rows = weights["model.embed_tokens.weight"]
    assert rows.shape == (len(keep), 4)
    assert rows[:, 0].tolist() == [float(i) for i in keep]  # row i is old token keep[i]
    assert weights["model.norm.weight"].shape == (4,)


def test_the_shipped_token_list_matches_its_sources(model_dir: Path) -> None:
    """`python -m service.embedded.vocab` rebuilds it after prompts or training data change."""
    tokenizer = json.loads((model_dir / "tokenizer.json").read_text(encoding="utf-8"))
    assert vocab.kept_ids(tokenizer, vocab.source_texts()) == vocab.load_keep_file(), (
        "service/embedded/vocabularies/gsm8k.json is stale: run `python -m service.embedded.vocab`"
    )


def test_the_real_tokenizer_trimmed_keeps_the_task_text_and_the_turn_markers(
    model_dir: Path,
) -> None:
    tokenizer = json.loads((model_dir / "tokenizer.json").read_text(encoding="utf-8"))
    keep = vocab.load_keep_file()
    old, new = _encoder(tokenizer), _encoder(vocab.trimmed_tokenizer(tokenizer, keep))
    assert new.get_vocab_size() == len(keep) < tokenizer_size(tokenizer) // 5
    for marker in ("<bos>", "<eos>", "<start_of_turn>", "<end_of_turn>"):
        assert new.token_to_id(marker) == old.token_to_id(marker)
    train = vocab.source_texts()[:400]
    for text in train:
        assert [keep[i] for i in new.encode(text).ids] == old.encode(text).ids
    # Held-out text the list was not built from: the same text back.
    rows = (
        (vocab.REPO_ROOT / "service" / "data" / "gsm8k" / "socratic_1000.jsonl")
        .read_text()
        .splitlines()
    )
    for line in rows[:200]:
        text = json.loads(line)["question"]
        assert new.decode(new.encode(text).ids) == old.decode(old.encode(text).ids)


def tokenizer_size(tokenizer: dict[str, Any]) -> int:
    return len(tokenizer["model"]["vocab"])
