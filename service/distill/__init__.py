"""Distilling the decomposer: teacher data, LoRA fine-tuning (Divide-or-Conquer).

``data`` builds a chat-format dataset (gold GSM8K Socratic decompositions, or
a teacher LLM's, kept all (SD-T) or only where the teacher's answer is right
(SD-R)); ``train`` fine-tunes a LoRA adapter of the decomposer on it.
"""
