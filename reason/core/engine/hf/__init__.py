"""The in-process transformers backend (``--engine hf``)."""

from reason.core.engine.hf.engine import HFEngine

__all__ = ["HFEngine"]
