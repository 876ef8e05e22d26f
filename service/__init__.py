"""Decompose-then-solve inference service.

A small decomposer LLM (in-process vLLM) splits a question into subquestions;
a large solver LLM (any OpenAI-compatible HTTP endpoint) answers them. See
README.md for the modes and the HTTP contract.
"""

__version__ = "0.1.0"
