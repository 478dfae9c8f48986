"""Strategy options: each strategy declares its keyword options as a :class:`StrategyOptions` model
(names, types, defaults, ranges) and registers it with the strategy, so the library call, the
command line and the server check options the same way, before any model loads.

A strategy is an async function ``fn(ctx, budget, *, extract, final, **options)`` whose keyword
options are exactly its model's fields, with the same defaults (checked when it is registered).
:func:`search.solve.solve_problems` validates the caller's options into the model and passes the
validated values.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from reason.core.engine.base import check_temperature
from reason.core.errors import ReasonError
from reason.core.registry import Registry

Strategy = Callable[..., Awaitable[Any]]

# Keyword arguments every strategy gets from the search itself, not from the caller's options.
COMMON = ("extract", "final")

MIN_POSITIVE = 1e-5
"""The smallest value of a positive real option (``PositiveFloat``: weight and divergence
temperatures, ``widen_alpha``, ``spend``, ...): several divide by it, and 1/1e-320 is already
infinite. The same floor as a sampling temperature's (``reason.core.engine.base.MIN_TEMPERATURE``)."""

MAX_COUNT = 65_536
"""The largest integer option (``Positive`` / ``NonNegative``: widths, children, steps, token
lengths, redraws, ...): each sizes work or memory, and none needs more than this."""

# Field types the strategies share. Numbers and flags are strict: "2" or true is not an int, 2.5
# is not a count (an int is a float, though); lists still become tuples (JSON has no tuples).
# Reals are finite (StrategyOptions refuses NaN and infinity).
Temperature = Annotated[float, Field(ge=0.0, strict=True), AfterValidator(check_temperature)]  # 0 is greedy
PositiveFloat = Annotated[float, Field(ge=MIN_POSITIVE, strict=True)]
Positive = Annotated[int, Field(ge=1, le=MAX_COUNT, strict=True)]
NonNegative = Annotated[int, Field(ge=0, le=MAX_COUNT, strict=True)]
Flag = Annotated[bool, Field(strict=True)]
Delimiter = Annotated[str, Field(min_length=1)]  # the step delimiter (a stop string)


class StrategyOptions(BaseModel):
    """The options of one strategy: unknown names are rejected, values are type- and range-checked
    (reals finite, counts at most :data:`MAX_COUNT`). A strategy without options uses this class as it is."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True, allow_inf_nan=False)

    @classmethod
    def names(cls) -> list[str]:
        """The option names, sorted."""
        return sorted(cls.model_fields)

    @classmethod
    def make(cls, strategy: str, options: Mapping[str, Any], hints: Mapping[str, Any] | None = None) -> StrategyOptions:
        """Validate ``options`` for ``strategy``; ``hints`` (the domain's step delimiter, segment
        length, ...) fill the fields the strategy has and the caller left out, and are ignored by
        strategies without them. Raises a one-line :class:`ReasonError`: ``option`` for an unknown
        name, the option's own name for a bad value."""
        for key in options:
            if key not in cls.model_fields:
                raise unknown_option(strategy, key, cls.names())
        values = {k: v for k, v in (hints or {}).items() if k in cls.model_fields}
        values.update(options)
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            err = exc.errors()[0]
            field = str(err["loc"][0]) if err.get("loc") else "option"
            msg = err.get("msg", "invalid value")
            raise ReasonError(field, f"{msg} (got {err.get('input')!r})",
                              f"fix option {field} of strategy {strategy!r}") from None

    def values(self) -> dict[str, Any]:
        """The validated values by name, as the strategy takes them (no conversion)."""
        return {name: getattr(self, name) for name in type(self).model_fields}


def unknown_option(strategy: str, key: str, known: Iterable[str]) -> ReasonError:
    """The one-line error for an option ``strategy`` does not take."""
    names = ", ".join(known) or "none"
    return ReasonError("option", f"strategy {strategy!r} has no option {key!r}", f"use one of: {names}")


class StrategyRegistry(Registry[Strategy]):
    """Strategies by name, each with its :class:`StrategyOptions` model."""

    def __init__(self) -> None:
        super().__init__("strategy")
        self._options: dict[str, type[StrategyOptions]] = {}

    def register(self, name: str, options: type[StrategyOptions] = StrategyOptions) -> Callable[[Strategy], Strategy]:
        """Decorator: register the decorated strategy as ``name`` with its options model."""

        def deco(fn: Strategy) -> Strategy:
            _check_signature(name, fn, options)
            self.add(name, fn)
            self._options[name] = options
            return fn

        return deco

    def options(self, name: str) -> type[StrategyOptions]:
        """The options model of strategy ``name`` (a one-line error for an unknown name)."""
        self.get(name)
        return self._options[name]


def _check_signature(name: str, fn: Strategy, options: type[StrategyOptions]) -> None:
    """The strategy's keyword options must be its model's fields with the same defaults (a strategy
    that forwards ``**options`` to another may leave those out); anything else keyword-only is
    internal and needs a default."""
    params = inspect.signature(fn).parameters
    forwards = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    for field, info in options.model_fields.items():
        param = params.get(field)
        if param is None and forwards:
            continue
        if param is None or param.kind is not inspect.Parameter.KEYWORD_ONLY:
            raise TypeError(f"strategy {name!r}: option {field!r} is not a keyword-only parameter")
        if param.default != info.get_default(call_default_factory=True):
            raise TypeError(f"strategy {name!r}: option {field!r} defaults to {param.default!r} in the function "
                            f"but {info.default!r} in {options.__name__}")
    for param in params.values():
        if (param.kind is inspect.Parameter.KEYWORD_ONLY and param.name not in options.model_fields
                and param.name not in COMMON and param.default is inspect.Parameter.empty):
            raise TypeError(f"strategy {name!r}: keyword {param.name!r} is neither an option nor has a default")
