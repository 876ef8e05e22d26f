"""Data the package ships: GSM8K rows (MIT, see gsm8k/LICENSE) for few-shot
examples, held-out evaluation and distillation, found beside this module so
that an installed package (not only a checkout) has them."""

from __future__ import annotations

from pathlib import Path

GSM8K = Path(__file__).resolve().parent / "gsm8k"
# 1,000 problems with gold Socratic decompositions (subquestion ** step lines).
GSM8K_SOCRATIC = GSM8K / "socratic_1000.jsonl"
# GSM8K's training split: 7,473 problems with worked solutions.
GSM8K_TRAIN = GSM8K / "train.jsonl"
