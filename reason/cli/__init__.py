"""The ``reason`` command line, one module per command; :data:`main` is the console script. Every
command takes ``--json`` for machine-readable output where it prints results; bad input prints one
line naming the field and exits with status 2."""

# Each command module registers its command on ``main``.
from reason.cli import eval, generate, grade, plot, score, serve, solve, tiny_model, train, view  # noqa: E402,F401
from reason.cli.app import main

__all__ = ["main"]
