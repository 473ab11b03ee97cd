"""kdbench: a reproducibility benchmark suite for curriculum knowledge distillation of LLMs."""

__version__ = "0.1.0"

# Bumped whenever the layout of a result JSON changes; readers refuse other versions.
RESULT_SCHEMA_VERSION = 1
