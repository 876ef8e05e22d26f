"""LoRA fine-tuning of the decomposer on a distillation dataset (peft + torch).

The loss covers the target tokens only (the numbered subquestions and the end
of sequence); prompt tokens are masked. Works on CPU or GPU. Checkpoints
(adapter, optimizer, step) go to ``<out>/checkpoints/step-N`` every
``save_every`` steps and a run resumes from the newest one; held-out loss is
logged every ``eval_every`` steps; the final adapter is saved to ``<out>``
(optionally merged into a full checkpoint in ``<out>/merged``). A run may start
from an existing adapter (``init_adapter``) to go on training it on new data.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from service.distill.data import read_dataset

log = logging.getLogger(__name__)

TARGET_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass
class TrainConfig:
    base_model: str
    data_dir: str
    out_dir: str
    epochs: float = 2.0
    max_steps: int | None = None
    batch_size: int = 8
    lr: float = 3e-4
    rank: int = 16
    alpha: int = 32
    dropout: float = 0.05
    max_len: int = 384
    save_every: int = 50
    eval_every: int = 50
    held_out_eval: int = 64
    seed: int = 0
    threads: int | None = None
    merge: bool = False
    init_adapter: str | None = None


def _encode(tokenizer: Any, row: dict[str, Any], max_len: int) -> tuple[list[int], list[int]]:
    user, assistant = row["messages"][0]["content"], row["messages"][1]["content"]
    prompt_ids = tokenizer(user, add_special_tokens=True)["input_ids"]
    target_ids = tokenizer(assistant, add_special_tokens=False)["input_ids"]
    target_ids = [*target_ids, tokenizer.eos_token_id]
    ids = (prompt_ids + target_ids)[:max_len]
    labels = ([-100] * len(prompt_ids) + target_ids)[:max_len]
    return ids, labels


def _autocast() -> Any:
    """bfloat16 compute where the hardware has it (AVX512-BF16 CPUs, GPUs)."""
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.autocast(device, dtype=torch.bfloat16)


def _batches(
    encoded: Sequence[tuple[list[int], list[int]]], batch_size: int, rng: random.Random
) -> Iterator[list[tuple[list[int], list[int]]]]:
    order = list(range(len(encoded)))
    while True:
        rng.shuffle(order)
        for i in range(0, len(order) - batch_size + 1, batch_size):
            yield [encoded[j] for j in order[i : i + batch_size]]


def _collate(batch: Sequence[tuple[list[int], list[int]]], pad_id: int) -> dict[str, Any]:
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


def _target_loss(model: Any, batch: dict[str, Any]) -> Any:
    """Cross-entropy on the target tokens only, computing logits only there.

    Gemma's vocabulary has 262k entries: full logits for a batch are ~1 GB of
    float32 and dominate CPU time, while the loss needs the few dozen target
    positions per example.
    """
    import torch

    inner = model.get_base_model()
    hidden = inner.model(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
    ).last_hidden_state
    labels = batch["labels"][:, 1:]
    keep = labels != -100
    logits = inner.lm_head(hidden[:, :-1][keep])
    softcap = getattr(inner.config, "final_logit_softcapping", None)
    if softcap:
        logits = torch.tanh(logits / softcap) * softcap
    return torch.nn.functional.cross_entropy(logits.float(), labels[keep])


def _latest_checkpoint(out: Path) -> Path | None:
    ckpts = sorted((out / "checkpoints").glob("step-*"), key=lambda p: int(p.name.split("-")[1]))
    return ckpts[-1] if ckpts else None


def train(cfg: TrainConfig) -> Path:
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model
    from tqdm import tqdm
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(cfg.base_model)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    train_rows = read_dataset(Path(cfg.data_dir) / "train.jsonl")
    held_path = Path(cfg.data_dir) / "held_out.jsonl"
    held_rows = read_dataset(held_path)[: cfg.held_out_eval] if held_path.exists() else []
    encoded = [_encode(tokenizer, r, cfg.max_len) for r in train_rows]
    held = [_encode(tokenizer, r, cfg.max_len) for r in held_rows]
    steps_per_epoch = max(1, len(encoded) // cfg.batch_size)
    total = cfg.max_steps or math.ceil(cfg.epochs * steps_per_epoch)

    base = AutoModelForCausalLM.from_pretrained(cfg.base_model, dtype=torch.float32)
    resume = _latest_checkpoint(out)
    if resume is not None:
        model = PeftModel.from_pretrained(base, resume / "adapter", is_trainable=True)
        state = torch.load(resume / "trainer.pt", weights_only=False)
        start_step = int(state["step"])
        log.info(f"resuming from {resume} at step {start_step}")
    elif cfg.init_adapter is not None:
        # Warm start: the adapter's own rank and targets, new optimizer state.
        model = PeftModel.from_pretrained(base, cfg.init_adapter, is_trainable=True)
        state, start_step = None, 0
        log.info(f"starting from adapter {cfg.init_adapter}")
    else:
        lora = LoraConfig(
            r=cfg.rank,
            lora_alpha=cfg.alpha,
            lora_dropout=cfg.dropout,
            target_modules=TARGET_MODULES,
            task_type="CAUSAL_LM",
        )
        model = get_peft_model(base, lora)
        state, start_step = None, 0
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    # Linear warm-up over 5% of steps, then cosine decay to 10%.
    warmup = max(1, total // 20)

    def lr_at(step: int) -> float:
        if step < warmup:
            return cfg.lr * (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))

    rng = random.Random(cfg.seed)
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        rng.setstate(state["rng"])
    batches = _batches(encoded, cfg.batch_size, rng)
    # Skip what a resumed run already saw, so the data order matches.
    for _ in range(start_step):
        next(batches)

    def held_out_loss() -> float | None:
        if not held:
            return None
        model.eval()
        losses = []
        with torch.no_grad():
            for i in range(0, len(held), cfg.batch_size):
                batch = _collate(held[i : i + cfg.batch_size], pad_id)
                with _autocast():
                    losses.append(float(_target_loss(model, batch)))
        model.train()
        return sum(losses) / len(losses)

    def save_checkpoint(step: int) -> None:
        ckpt = out / "checkpoints" / f"step-{step}"
        model.save_pretrained(str(ckpt / "adapter"))
        torch.save(
            {"step": step, "optimizer": optimizer.state_dict(), "rng": rng.getstate()},
            ckpt / "trainer.pt",
        )
        for old in sorted((out / "checkpoints").glob("step-*"))[:-2]:
            if old != ckpt:
                import shutil

                shutil.rmtree(old)

    model.train()
    history: list[dict[str, float]] = []
    started = time.monotonic()
    bar = tqdm(total=total, initial=start_step, desc="lora", unit="step")
    for step in range(start_step, total):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step)
        with _autocast():
            loss = _target_loss(model, _collate(next(batches), pad_id))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        bar.update(1)
        loss_value = float(loss.detach())
        bar.set_postfix(loss=f"{loss_value:.3f}")
        record = {"step": step + 1, "loss": loss_value}
        if (step + 1) % cfg.eval_every == 0 or step + 1 == total:
            held_loss = held_out_loss()
            if held_loss is not None:
                record["held_out_loss"] = held_loss
                log.info(f"step {step + 1}/{total} held-out loss {held_loss:.4f}")
        history.append(record)
        # The last step too: a later run with more steps continues from here.
        if (step + 1) % cfg.save_every == 0 or step + 1 == total:
            save_checkpoint(step + 1)
    bar.close()
    elapsed = time.monotonic() - started

    model.save_pretrained(str(out))
    tokenizer.save_pretrained(out)
    with (out / "training.jsonl").open("a") as fh:
        for record in history:
            fh.write(json.dumps(record) + "\n")
    summary = {
        **asdict(cfg),
        "steps": total,
        "train_examples": len(encoded),
        "seconds": round(elapsed, 1),
        "final_held_out_loss": next(
            (r["held_out_loss"] for r in reversed(history) if "held_out_loss" in r), None
        ),
    }
    (out / "train_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    if cfg.merge:
        _save_merged(model, tokenizer, out / "merged")
    log.info(f"adapter saved to {out} after {elapsed:.0f}s")
    return out


def _save_merged(model: Any, tokenizer: Any, out: Path) -> None:
    merged = model.merge_and_unload()
    merged.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


def merge_adapter(base_model: str, adapter_dir: str, out_dir: str) -> Path:
    """Fold an adapter into a full checkpoint: what vLLM serves fastest, and a local teacher."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = AutoModelForCausalLM.from_pretrained(base_model, dtype=torch.float32)
    model = PeftModel.from_pretrained(base, adapter_dir)
    out = Path(out_dir)
    _save_merged(model, AutoTokenizer.from_pretrained(base_model), out)
    log.info(f"merged {adapter_dir} into {out}")
    return out
