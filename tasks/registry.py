"""The one registry of tasks: each suite name maps to a :class:`Task` carrying its problem loader,
its :class:`~search.domain.Domain` and the checkpoints it bundles. A task module registers its
scorers (in :mod:`rewards`' registries) next to its task, so one file says everything about it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from difflib import get_close_matches
from dataclasses import dataclass, field
from pathlib import Path

from reason.core.engine.hf.loader import path_exists
from reason.core.errors import ReasonError
from reason.core.registry import Registry
from search.domain import Domain, Problem

SuiteLoader = Callable[..., Sequence[Problem]]


@dataclass(frozen=True)
class Task:
    """A named suite: ``load(arg, **options)`` yields its problems (``arg`` is the part after
    ``name:`` in a suite spec), ``domain`` its conventions, ``bundled`` the checkpoints it ships by
    role (``"policy"``, ``"value"``; absent ones are simply not in this install)."""

    name: str
    domain: Domain
    load: SuiteLoader
    bundled: dict[str, Path] = field(default_factory=dict)


tasks: Registry[Task] = Registry("suite")


def split_spec(spec: str) -> tuple[str, str | None]:
    """``"arith:3"`` -> ``("arith", "3")``; ``"math500"`` -> ``("math500", None)``."""
    name, _, arg = spec.partition(":")
    return name, (arg or None)


def get_task(spec: str) -> Task:
    """The task of suite ``spec`` (``name`` or ``name:argument``); a one-line error when unknown."""
    return tasks.get(split_spec(spec)[0])


def get_domain(spec: str) -> Domain:
    """The domain of suite ``spec``."""
    return get_task(spec).domain


def load_suite(spec: str, **options: object) -> Sequence[Problem]:
    """The problems of suite ``spec`` (``name`` or ``name:argument``, e.g. ``arith:3``)."""
    name, arg = split_spec(spec)
    return tasks.get(name).load(arg, **options)


def resolve_model(name: str, role: str = "policy") -> str:
    """The path or hub id to load for ``--model name``: a suite name whose task bundles a ``role``
    checkpoint gives that checkpoint's directory; anything else is a path or hub id as given."""
    if not name or not name.strip():
        raise ReasonError("model", "is empty", "give 'arith', a checkpoint directory or a hub id")
    if name not in tasks:
        _check_not_a_suite_typo(name)
        return name
    path = tasks.get(name).bundled.get(role)
    if path is None or not (path / "config.json").exists():
        raise ReasonError(
            "model",
            f"the bundled {name!r} {'' if role == 'policy' else role + ' '}model is not in this install",
            "pass --model with a checkpoint directory or hub id (e.g. one made by `reason tiny-model DIR`)",
        )
    return str(path)


def _check_not_a_suite_typo(name: str) -> None:
    """A one-line error for a model name that is no suite's but reads like one (``Arith``,
    ``arith:3``, ``arth``) and is not a local path: it would otherwise go to the hub as an id."""
    if path_exists(name):
        return
    base = split_spec(name)[0]
    if base in tasks:
        raise ReasonError("model", f"{name!r} is a suite spec, not a model name", f"use --model {base}")
    lowered = {n.lower(): n for n in tasks.names()}
    close = lowered.get(name.lower()) or next(iter(get_close_matches(name.lower(), list(lowered), n=1, cutoff=0.8)), None)
    if close is not None:
        suggestion = lowered.get(close, close)
        raise ReasonError("model", f"unknown model {name!r}; did you mean {suggestion!r}?",
                          f"use --model {suggestion}, a checkpoint directory or a hub id (org/name)")
