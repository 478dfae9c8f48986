"""Named scorers for ``--prm NAME[=PATH_OR_ID]`` and ``--value NAME[=PATH_OR_ID]``.

Each PRM name has the public checkpoint it was written for as its default; ``=PATH_OR_ID`` points
it at another checkpoint of the same format (a local directory works offline).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from reason.errors import ReasonError
from rewards import prms, value_models, verifiers
from rewards.base import ProcessRewardModel, ValueModel

DEFAULT_CHECKPOINTS = {
    "qwen": "Qwen/Qwen2.5-Math-PRM-7B",
    "math-shepherd": "peiyi9979/math-shepherd-mistral-7b-prm",
    "rlhflow": "RLHFlow/Llama3.1-8B-PRM-Deepseek-Data",
    "skywork": "Skywork/Skywork-o1-Open-PRM-Qwen-2.5-1.5B",
}


def parse_spec(spec: str, field: str) -> tuple[str, str | None]:
    """``"name=path"`` -> ``("name", "path")``; ``"name"`` -> ``("name", None)``."""
    if not spec or not spec.strip():
        raise ReasonError(field, "is empty", f"give a name, e.g. --{field} qwen or --{field} qwen=PATH")
    name, _, path = spec.partition("=")
    return name.strip(), (path.strip() or None)


def _checkpoint(name: str, path: str | None, field: str) -> str:
    if path:
        return path
    if name in DEFAULT_CHECKPOINTS:
        return DEFAULT_CHECKPOINTS[name]
    raise ReasonError(field, f"{name!r} has no default checkpoint", f"use --{field} {name}=PATH_OR_ID")


def _adapter(name: str, import_path: str) -> Callable[..., ProcessRewardModel]:
    module, _, cls = import_path.rpartition(".")

    def factory(path: str | None = None, **options: Any) -> ProcessRewardModel:
        import importlib

        klass = getattr(importlib.import_module(module), cls)
        return klass.from_pretrained(_checkpoint(name, path, "prm"), **options)

    factory.__doc__ = f"Load the {name!r} PRM adapter ({import_path})."
    return factory


for _name, _path in {
    "qwen": "rewards.prm.qwen.QwenMathPRM",
    "math-shepherd": "rewards.prm.math_shepherd.MathShepherdPRM",
    "rlhflow": "rewards.prm.rlhflow.RLHFlowPRM",
    "skywork": "rewards.prm.skywork.SkyworkPRM",
    "token-classification": "rewards.prm.token_classification.TokenClassificationPRM",
}.items():
    prms.add(_name, _adapter(_name, _path))


@prms.register("arith")
def _arith_prm(path: str | None = None, **options: Any) -> ProcessRewardModel:
    """The exact arith step checker (no checkpoint)."""
    if path:
        raise ReasonError("prm", "'arith' takes no checkpoint", "use --prm arith")
    from tasks.arith.scorers import ArithPRM

    return ArithPRM(**options)


def _arith_verifier(**options: Any):
    """The exact arith answer checker."""
    from tasks.arith.scorers import ArithVerifier

    return ArithVerifier(**options)


verifiers.add("arith", _arith_verifier)


@value_models.register("arith")
def _arith_value(path: str | None = None, **options: Any) -> ValueModel:
    """The bundled arith value model (learned from the bundled policy's rollouts)."""
    from rewards.value import LMValueModel
    from tasks.arith.train_value import PROMPT_FORMAT

    options.setdefault("prompt_format", PROMPT_FORMAT)
    options.setdefault("dtype", "float32")
    return LMValueModel.from_pretrained(path or _bundled("value"), **options)


def _bundled(sub: str) -> str:
    from importlib.resources import files

    from reason.models import resolve_model

    return resolve_model("arith") if sub == "model" else str(files("tasks.arith").joinpath(sub))


@value_models.register("lm")
def _lm_value(path: str | None = None, **options: Any) -> ValueModel:
    """A scalar-head causal LM (token or sequence classification, one label)."""
    from rewards.value import LMValueModel

    return LMValueModel.from_pretrained(_checkpoint("lm", path, "value"), **options)


def load_prm(spec: str, **options: Any) -> ProcessRewardModel:
    """The PRM named by ``spec`` (``NAME[=PATH_OR_ID]``)."""
    name, path = parse_spec(spec, "prm")
    return prms.get(name)(path, **options)


def load_value(spec: str, *, prm: ProcessRewardModel | None = None, **options: Any) -> ValueModel:
    """The value model named by ``spec`` (``NAME[=PATH_OR_ID]``); ``prm`` uses the given PRM's
    aggregated score as the value."""
    name, path = parse_spec(spec, "value")
    if name == "prm":
        if prm is None:
            raise ReasonError("value", "'prm' needs a PRM", "also pass --prm NAME[=PATH]")
        from rewards.value import PRMValue

        return PRMValue(prm, **options)
    return value_models.get(name)(path, **options)
