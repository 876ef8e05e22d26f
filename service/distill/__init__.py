"""Distilling the decomposer (Divide-or-Conquer: distil the decomposer, keep the solver).

- ``data``: chat-format decomposition datasets: gold GSM8K Socratic
  decompositions, or a teacher's (a solver profile, or a local checkpoint
  sampled offline by ``local_teacher``), kept all (SD-T), only where the
  teacher's answer is right (SD-R), or only with the gold step count (SD-C);
- ``train``: LoRA fine-tuning of the decomposer on such a dataset (resume,
  held-out loss, warm start, an optional merged checkpoint);
- ``evaluate``: adapters' decomposition quality through ``POST /decompose``;
- ``cli``: ``python -m service distill data|train|merge|evaluate``.
"""
