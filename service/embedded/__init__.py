"""The embedded model and its in-process engine.

The vLLM engine, the model's preparation (GGUF to safetensors, the distilled merge),
the trimmed vocabulary, the CPU rules the engine is configured by, and the
calculator that runs inside generation.
"""
