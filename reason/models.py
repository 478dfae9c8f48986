"""Resolving ``--model`` names: ``arith`` is the bundled model; anything else is a local path or a
hub id handed to the backend."""

from __future__ import annotations

from pathlib import Path

from reason.errors import ReasonError

BUNDLED = {"arith": ("tasks.arith", "model")}


def resolve_model(name: str) -> str:
    """The path or hub id to load for ``name``."""
    if not name:
        raise ReasonError("model", "is empty", "give 'arith', a checkpoint directory or a hub id")
    if name in BUNDLED:
        package, sub = BUNDLED[name]
        try:
            from importlib.resources import files

            path = Path(str(files(package).joinpath(sub)))
        except ModuleNotFoundError:
            path = None
        if path is None or not (path / "config.json").exists():
            raise ReasonError(
                "model",
                f"the bundled {name!r} model is not in this install",
                "pass --model with a checkpoint directory or hub id (e.g. one made by `reason tiny-model DIR`)",
            )
        return str(path)
    return name
