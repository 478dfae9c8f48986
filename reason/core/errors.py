"""One error type for bad input: a single line that names the field and the fix."""

from __future__ import annotations

from pydantic import ValidationError


class ReasonError(ValueError):
    """Bad input or an unusable setting.

    The message is one line, ``"<field>: <what is wrong>; <how to fix it>"``, so the CLI can print it
    as is and exit non-zero.
    """

    def __init__(self, field: str, problem: str, fix: str | None = None) -> None:
        self.field = field
        self.problem = problem
        self.fix = fix
        message = f"{field}: {problem}" + (f"; {fix}" if fix else "")
        super().__init__(message.replace("\n", "\\n"))


def from_validation_error(exc: ValidationError, prefix: str = "") -> ReasonError:
    """Turn pydantic's multi-line report into a one-line :class:`ReasonError` about its first error."""
    err = exc.errors()[0]
    loc = ".".join(str(part) for part in err.get("loc", ()))
    field = f"{prefix}.{loc}" if prefix and loc else (prefix or loc or "input")
    if err.get("type") == "extra_forbidden":
        return ReasonError(field, "unknown field", "remove it or check the spelling")
    msg = err.get("msg", "invalid value")
    return ReasonError(field, f"{msg} (got {err.get('input')!r})")
