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
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from service.distill.batches import batches, collate, encode
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
    # LoRA dropout is a fifth of a CPU training step (mask sampling): off by default.
    dropout: float = 0.0
    max_len: int = 384
    save_every: int = 50
    eval_every: int = 50
    held_out_eval: int = 64
    seed: int = 0
    threads: int | None = None
    merge: bool = False
    init_adapter: str | None = None


def _bf16() -> bool:
    """Whether bfloat16 compute is native here (AVX512-BF16/AMX CPUs, GPUs).

    Where it is emulated (AVX2-only CPUs) float32 is faster, so training runs
    in float32 there.
    """
    import torch

    from service.embedded.hardware import native_bf16, read_cpu_flags

    return bool(torch.cuda.is_available()) or native_bf16(read_cpu_flags())


def _autocast() -> Any:
    """bfloat16 compute where the hardware has it; a no-op elsewhere."""
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.autocast(device, dtype=torch.bfloat16, enabled=_bf16())


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


@dataclass
class _Data:
    tokenizer: Any
    pad_id: int
    encoded: list[tuple[list[int], list[int]]]
    held: list[tuple[list[int], list[int]]]


def _load_data(cfg: TrainConfig) -> _Data:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(cfg.base_model)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    train_rows = read_dataset(Path(cfg.data_dir) / "train.jsonl")
    held_path = Path(cfg.data_dir) / "held_out.jsonl"
    held_rows = read_dataset(held_path)[: cfg.held_out_eval] if held_path.exists() else []
    return _Data(
        tokenizer,
        pad_id,
        [encode(tokenizer, r, cfg.max_len) for r in train_rows],
        [encode(tokenizer, r, cfg.max_len) for r in held_rows],
    )


def _load_model(cfg: TrainConfig, out: Path) -> tuple[Any, dict[str, Any] | None, int]:
    """The trainable model, the trainer state to resume (or None) and the first step."""
    import torch
    from peft import LoraConfig, PeftConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM

    # The frozen base in bf16 where that is native: no per-step weight casts.
    dtype = torch.bfloat16 if _bf16() else torch.float32
    base = AutoModelForCausalLM.from_pretrained(cfg.base_model, dtype=dtype)
    resume = _latest_checkpoint(out)
    state: dict[str, Any] | None = None
    if resume is not None:
        source = str(resume / "adapter")
        state = torch.load(resume / "trainer.pt", weights_only=False)
        log.info(f"resuming from {resume} at step {state['step']}")
    elif cfg.init_adapter is not None:
        # Warm start: the adapter's own rank and targets, new optimizer state.
        source = cfg.init_adapter
        log.info(f"starting from adapter {cfg.init_adapter}")
    else:
        lora = LoraConfig(
            r=cfg.rank,
            lora_alpha=cfg.alpha,
            lora_dropout=cfg.dropout,
            target_modules=TARGET_MODULES,
            task_type="CAUSAL_LM",
        )
        return _trainable_in_fp32(get_peft_model(base, lora)), None, 0
    config = PeftConfig.from_pretrained(source)
    config.lora_dropout = cfg.dropout
    model = PeftModel.from_pretrained(base, source, is_trainable=True, config=config)
    return _trainable_in_fp32(model), state, int(state["step"]) if state else 0


def _trainable_in_fp32(model: Any) -> Any:
    """LoRA weights and their optimizer state stay float32 whatever the base dtype."""
    for param in model.parameters():
        if param.requires_grad:
            param.data = param.data.float()
    return model


def _schedule(cfg: TrainConfig, total: int) -> Callable[[int], float]:
    """Linear warm-up over 5% of steps, then cosine decay to 10% of ``lr``."""
    warmup = max(1, total // 20)

    def lr_at(step: int) -> float:
        if step < warmup:
            return cfg.lr * (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))

    return lr_at


def _held_out_loss(model: Any, data: _Data, batch_size: int) -> float | None:
    import torch

    if not data.held:
        return None
    model.eval()
    losses = []
    with torch.no_grad():
        for i in range(0, len(data.held), batch_size):
            batch = collate(data.held[i : i + batch_size], data.pad_id)
            with _autocast():
                losses.append(float(_target_loss(model, batch)))
    model.train()
    return sum(losses) / len(losses)


def _save_checkpoint(model: Any, optimizer: Any, out: Path, step: int) -> None:
    """Adapter and optimizer state; keeps the two newest."""
    import shutil

    import torch

    ckpt = out / "checkpoints" / f"step-{step}"
    model.save_pretrained(str(ckpt / "adapter"))
    torch.save(
        {"step": step, "optimizer": optimizer.state_dict()},
        ckpt / "trainer.pt",
    )
    ckpts = sorted((out / "checkpoints").glob("step-*"), key=lambda c: int(c.name.split("-")[1]))
    for old in ckpts[:-2]:
        shutil.rmtree(old)


def _write_summary(
    cfg: TrainConfig,
    out: Path,
    history: list[dict[str, float]],
    total: int,
    examples: int,
    secs: float,
) -> None:
    with (out / "training.jsonl").open("a") as fh:
        for record in history:
            fh.write(json.dumps(record) + "\n")
    summary = {
        **asdict(cfg),
        "steps": total,
        "train_examples": examples,
        "seconds": round(secs, 1),
        "final_held_out_loss": next(
            (r["held_out_loss"] for r in reversed(history) if "held_out_loss" in r), None
        ),
    }
    (out / "train_summary.json").write_text(json.dumps(summary, indent=2) + "\n")


def train(cfg: TrainConfig) -> Path:
    """Train (or resume) a LoRA adapter; returns its directory."""
    import torch
    from tqdm import tqdm

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = _load_data(cfg)
    total = cfg.max_steps or math.ceil(cfg.epochs * max(1, len(data.encoded) // cfg.batch_size))
    model, state, start_step = _load_model(cfg, out)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    lr_at = _schedule(cfg, total)
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
    stream = batches(data.encoded, cfg.batch_size, cfg.seed, start_step)

    model.train()
    history: list[dict[str, float]] = []
    if start_step == 0 and cfg.init_adapter is not None:
        # The warm start's own held-out loss, on this machine and data: what
        # the run's later figures are compared with, side by side.
        held_loss = _held_out_loss(model, data, cfg.batch_size)
        if held_loss is not None:
            history.append({"step": 0, "held_out_loss": held_loss})
            log.info(f"step 0/{total} (warm start) held-out loss {held_loss:.4f}")
    started = time.monotonic()
    bar = tqdm(total=total, initial=start_step, desc="lora", unit="step")
    for step in range(start_step, total):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step)
        with _autocast():
            loss = _target_loss(model, collate(next(stream), data.pad_id))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        bar.update(1)
        record = {"step": step + 1, "loss": float(loss.detach())}
        bar.set_postfix(loss=f"{record['loss']:.3f}")
        if (step + 1) % cfg.eval_every == 0 or step + 1 == total:
            held_loss = _held_out_loss(model, data, cfg.batch_size)
            if held_loss is not None:
                record["held_out_loss"] = held_loss
                log.info(f"step {step + 1}/{total} held-out loss {held_loss:.4f}")
        history.append(record)
        # The last step too: a later run with more steps continues from here.
        if (step + 1) % cfg.save_every == 0 or step + 1 == total:
            _save_checkpoint(model, optimizer, out, step + 1)
    bar.close()
    elapsed = time.monotonic() - started

    model.save_pretrained(str(out))
    data.tokenizer.save_pretrained(out)
    _write_summary(cfg, out, history, total, len(data.encoded), elapsed)
    if cfg.merge:
        _save_merged(model, data.tokenizer, out / "merged")
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
