"""The in-process transformers backend (``--engine hf``)."""

from reason.engine.hf.engine import HFEngine

__all__ = ["HFEngine"]
