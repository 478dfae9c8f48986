"""Named scorers for ``--prm NAME[=PATH_OR_ID]`` and ``--value NAME[=PATH_OR_ID]`` (or ``NAME=URL``
of a scoring server).

Each PRM name has the public checkpoint it was written for as its default; ``=PATH_OR_ID`` points
it at another checkpoint of the same format (a local directory works offline).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from reason.core.errors import ReasonError
from rewards import prms, value_models
from rewards.base import ProcessRewardModel, ValueModel
from rewards.prm.pooling import POOLING_FORMATS, load_vllm_prm
from rewards.remote import connect_prm, connect_value, is_url
from rewards.value import LMValueModel, PRMValue

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


@value_models.register("lm")
def _lm_value(path: str | None = None, **options: Any) -> ValueModel:
    """A scalar-head causal LM (token or sequence classification, one label)."""
    return LMValueModel.from_pretrained(_checkpoint("lm", path, "value"), **options)


def load_prm(spec: str, *, backend: str = "hf", **options: Any) -> ProcessRewardModel:
    """The PRM named by ``spec`` (``NAME[=PATH_OR_ID]``; ``NAME=http://HOST:PORT/v1`` scores through
    that server, :mod:`rewards.remote`). With ``backend="vllm"`` a PRM vLLM's pooling runner serves
    (``qwen``) runs on an in-process ``vllm.LLM``."""
    name, path = parse_spec(spec, "prm")
    hf_free = {k: v for k, v in options.items() if k not in ("dtype", "device")}
    if is_url(path):
        return connect_prm(name, str(path), **hf_free)
    if backend == "vllm" and name in POOLING_FORMATS:
        return load_vllm_prm(name, _checkpoint(name, path, "prm"), **hf_free)
    return prms.get(name)(path, **options)


def load_value(spec: str, *, prm: ProcessRewardModel | None = None, **options: Any) -> ValueModel:
    """The value model named by ``spec`` (``NAME[=PATH_OR_ID]``); ``prm`` uses the given PRM's
    aggregated score as the value."""
    name, path = parse_spec(spec, "value")
    if is_url(path):
        return connect_value(name, str(path), **{k: v for k, v in options.items() if k not in ("dtype", "device")})
    if name == "prm":
        if prm is None:
            raise ReasonError("value", "'prm' needs a PRM", "also pass --prm NAME[=PATH]")
        return PRMValue(prm, **options)
    return value_models.get(name)(path, **options)
