"""Training rows to token ids, labels and batches, for ``service.distill.train``.

Labels are -100 outside the targets, so the loss covers the target tokens
only. Batches hold rows of similar length, in an order that depends only on
(seed, epoch): a resumed run sees what an unbroken one would.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from typing import Any


def encode(tokenizer: Any, row: dict[str, Any], max_len: int) -> tuple[list[int], list[int]]:
    """Token ids and labels (-100 = no loss) of one training row.

    Two row formats: chat-format decomposition rows (``messages``: the prompt,
    then the target, then end of sequence) and text rows with target spans
    (``text``, ``targets`` as character ranges, ``eos``), which the Socratic
    data writes (service/distill/socratic.py). The text is tokenized whole, as
    the engine tokenizes a prompt, so training sees the service's tokens.
    """
    if "text" in row:
        return _encode_spans(tokenizer, row, max_len)
    user, assistant = row["messages"][0]["content"], row["messages"][1]["content"]
    prompt_ids = tokenizer(user, add_special_tokens=True)["input_ids"]
    target_ids = tokenizer(assistant, add_special_tokens=False)["input_ids"]
    target_ids = [*target_ids, tokenizer.eos_token_id]
    ids = (prompt_ids + target_ids)[:max_len]
    labels = ([-100] * len(prompt_ids) + target_ids)[:max_len]
    return ids, labels


def _encode_spans(tokenizer: Any, row: dict[str, Any], max_len: int) -> tuple[list[int], list[int]]:
    enc = tokenizer(row["text"], add_special_tokens=True, return_offsets_mapping=True)
    spans = [(int(a), int(b)) for a, b in row["targets"]]
    ids = list(enc["input_ids"])
    labels = []
    for tok, (start, end) in zip(ids, enc["offset_mapping"], strict=True):
        inside = end > start and any(a <= start < b for a, b in spans)
        labels.append(tok if inside else -100)
    if row.get("eos"):
        ids.append(tokenizer.eos_token_id)
        labels.append(tokenizer.eos_token_id)
    return ids[:max_len], labels[:max_len]


def _epoch_batches(
    n_rows: int, lengths: Sequence[int], batch_size: int, seed: int, epoch: int
) -> list[list[int]]:
    """One epoch's batches of row indices, of similar length, in a seeded order.

    Rows are shuffled, cut into pools of 32 batches, sorted by length inside a
    pool and batched, and the batches shuffled: far less padding than random
    batches when short (static) and long (socratic) rows mix. The order
    depends only on (seed, epoch), so a resumed run sees what an unbroken one would.
    """
    rng = random.Random(seed * 100_003 + epoch)
    order = list(range(n_rows))
    rng.shuffle(order)
    pool = batch_size * 32
    batches = []
    for p in range(0, n_rows, pool):
        chunk = sorted(order[p : p + pool], key=lambda j: lengths[j])
        batches += [
            chunk[i : i + batch_size] for i in range(0, len(chunk) - batch_size + 1, batch_size)
        ]
    rng.shuffle(batches)
    return batches


def batches(
    encoded: Sequence[tuple[list[int], list[int]]], batch_size: int, seed: int, start_step: int
) -> Iterator[list[tuple[list[int], list[int]]]]:
    """Endless batches from step ``start_step`` on."""
    lengths = [len(ids) for ids, _ in encoded]
    step, epoch = 0, 0
    while True:
        for batch in _epoch_batches(len(encoded), lengths, batch_size, seed, epoch):
            if step >= start_step:
                yield [encoded[j] for j in batch]
            step += 1
        epoch += 1


def collate(batch: Sequence[tuple[list[int], list[int]]], pad_id: int) -> dict[str, Any]:
    import torch

    width = max(len(ids) for ids, _ in batch)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), -100, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, (ids, labs) in enumerate(batch):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        labels[row, : len(labs)] = torch.tensor(labs)
        mask[row, : len(ids)] = 1
    return {"input_ids": input_ids, "labels": labels, "attention_mask": mask}
