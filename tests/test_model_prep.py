"""The distilled merge's checkpoint cache: what a merge keeps, and what it removes.

torch is imported where used: at module level every xdist worker would pay its
import (about a second of CPU) while collecting, not only the one that runs these.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from service.embedded import vocab
from service.embedded.model_prep import (
    COMPLETE_MARKER,
    distilled_model_dir,
    is_prepared,
    prepare_distilled_model,
)


def _base(root: Path) -> Path:
    import torch
    from safetensors.torch import save_file

    base = root / "models" / "gemma-3-270m"
    base.mkdir(parents=True)
    save_file({"layer.weight": torch.zeros(4, 3)}, str(base / "model.safetensors"))
    (base / "config.json").write_text(json.dumps({"torch_dtype": "bfloat16"}))
    (base / COMPLETE_MARKER).write_text("source=test\n")
    return base


def _adapter(root: Path, name: str, scale: float) -> Path:
    import torch
    from safetensors.torch import save_file

    adapter = root / name
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"r": 2, "lora_alpha": 4}))
    a = torch.full((2, 3), scale)
    b = torch.ones(4, 2)
    save_file(
        {
            "base_model.model.layer.lora_A.weight": a,
            "base_model.model.layer.lora_B.weight": b,
        },
        str(adapter / "adapter_model.safetensors"),
    )
    return adapter


def _fake_merge(path: Path, marker: str) -> Path:
    path.mkdir()
    (path / COMPLETE_MARKER).write_text(marker)
    return path


def test_a_merge_folds_in_the_adapter_and_removes_only_checkpoints_nothing_can_serve(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch
    from safetensors.torch import load_file

    # Trimming the vocabulary needs the real tokenizer (tests/test_vocab.py covers it).
    monkeypatch.setattr(vocab, "trim_checkpoint", lambda *args: None)
    base = _base(tmp_path)
    old, new = _adapter(tmp_path, "old", 0.5), _adapter(tmp_path, "new", 0.25)
    # What an upgraded install has lying about beside the base checkpoint.
    full = distilled_model_dir(base, new, "float32", "full")
    old_adapter = _fake_merge(distilled_model_dir(base, old), "vocabulary=full\n")
    old_list = _fake_merge(full.with_name(full.name + "-v0badc0de"), "vocabulary=task\n")
    pre_lists = _fake_merge(full, "digest=x\n")
    full_bf16 = _fake_merge(distilled_model_dir(base, new, "bfloat16", "full"), "vocabulary=full\n")
    task_bf16 = _fake_merge(distilled_model_dir(base, new, "bfloat16", "task"), "vocabulary=task\n")

    out = prepare_distilled_model(base, new, dtype="float32", vocabulary="task")

    assert out == distilled_model_dir(base, new, "float32", "task") and is_prepared(out)
    # W + (alpha / r) * B @ A = 0 + 2 * (2 * 0.25) in every entry.
    assert torch.equal(load_file(str(out / "model.safetensors"))["layer.weight"], torch.ones(4, 3))
    assert "vocabulary=task" in (out / COMPLETE_MARKER).read_text()
    # Another adapter's merge, another token list's and a full-vocabulary merge from
    # before token lists (the upgrade case) are gone; what a setting can serve stays.
    assert not old_adapter.exists() and not old_list.exists() and not pre_lists.exists()
    assert full_bf16.exists() and task_bf16.exists()
    assert base.exists()


def test_a_prepared_merge_is_reused_without_touching_the_cache(tmp_path: Path) -> None:
    base = _base(tmp_path)
    adapter = _adapter(tmp_path, "a", 1.0)
    first = prepare_distilled_model(base, adapter, vocabulary="full")
    stamp = (first / "model.safetensors").stat().st_mtime_ns
    other = _fake_merge(
        distilled_model_dir(base, _adapter(tmp_path, "b", 2.0), "float32", "full"), "x\n"
    )
    assert prepare_distilled_model(base, adapter, vocabulary="full") == first
    assert (first / "model.safetensors").stat().st_mtime_ns == stamp
    # Nothing was merged, so nothing was cleaned either.
    assert other.exists()
