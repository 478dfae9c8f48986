"""Scorers: process reward models, outcome verifiers and value models, registered by name."""

from reason.registry import Registry

prms: Registry = Registry("prm")
verifiers: Registry = Registry("verifier")
value_models: Registry = Registry("value")

__all__ = ["prms", "verifiers", "value_models"]
