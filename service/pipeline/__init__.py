"""The decompose-then-solve pipeline: request plans, prompts, parsing, the modes."""
