"""Evaluation harness: run a dataset through ``/solve`` in several modes and score it.

- ``datasets``: loaders for GSM8K, GSM8K Socratic, SVAMP-style and generic
  files, with format auto-detection and the shipped default subset.
- ``scoring``: pure functions: answer matching, decomposition quality,
  percentiles, and the per-mode summary.
- ``runner``: the async runner (bounded concurrency, progress bar, resumable
  JSONL results).
- ``report``: the markdown table, the JSON summary and the accuracy-vs-cost plot.

``python -m service eval`` (service/cli/main.py) ties them together.
"""
