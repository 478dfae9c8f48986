"""Scorers: process reward models, outcome verifiers and value models, registered by name."""

from reason.core.registry import Registry

prms: Registry = Registry("prm")
verifiers: Registry = Registry("verifier")
value_models: Registry = Registry("value")

__all__ = ["prms", "value_models", "verifiers"]

# Registrations (after the registries exist): verifiers, then the named PRMs / value models.
from rewards import catalog as _catalog  # noqa: F401
from rewards import graders as _graders  # noqa: F401
