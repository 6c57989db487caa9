"""What the framework translators share."""

from __future__ import annotations

from polyparam import errors

__all__ = ["refuse"]


def refuse(what: str, why: str, instead: str) -> errors.InitializerError:
    msg = (f"Invalid value for argument `init`: expected an initializer polyparam can draw, got {what}: {why}. "
           f"Use {instead}.")
    return errors.InitializerError(msg, expected="a known framework initializer", got=what)
