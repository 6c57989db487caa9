"""Progress bars for long operations over many parameters.

A bar shows on standard error when it is a terminal and the work is big enough to be
worth watching; it is quiet in pipes, CI logs and notebooks. ``progress=True`` or
``POLYPARAM_PROGRESS=1`` forces it on (any size, any stream), ``progress=False`` or
``POLYPARAM_PROGRESS=0`` off; the argument wins over the variable.
"""

from __future__ import annotations

import os
import sys
from typing import Callable, Iterable, Iterator, Sequence, TypeVar

from polyparam import errors

__all__ = ["ENV_VAR", "MIN_BYTES", "enabled", "track"]

T = TypeVar("T")

ENV_VAR = "POLYPARAM_PROGRESS"
"""The environment variable that switches bars on (``1``) or off (``0``)."""

MIN_BYTES = 16 * 2**20
"""Below this much work (in bytes) an automatic bar is not worth the flicker."""

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off", "")


def _from_env() -> bool | None:
    value = os.environ.get(ENV_VAR)
    if value is None:
        return None
    value = value.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    msg = (f"Invalid value for environment variable `{ENV_VAR}`: expected one of 0 or 1. Received: {value!r}. "
           "Set it to 1 (bars on) or 0 (bars off), or unset it.")
    raise errors.InvalidArgumentError(msg, argument=ENV_VAR, expected=_TRUE + _FALSE, got=value)


def enabled(progress: bool | None = None, /, *, work: int | None = None) -> bool:
    """Whether to show a bar.

    Args:
        progress: The caller's ``progress=`` argument; ``None`` decides automatically.
        work: The size of the job in bytes; an automatic bar needs at least `MIN_BYTES`.

    Raises:
        InvalidArgumentError: ``POLYPARAM_PROGRESS`` is set to something other than 0 or 1 (also a ``ValueError``).
    """
    if progress is not None:
        return bool(progress)
    forced = _from_env()
    if forced is not None:
        return forced
    if work is not None and work < MIN_BYTES:
        return False
    return _terminal()


def _terminal() -> bool:
    stream = sys.stderr
    return stream is not None and hasattr(stream, "isatty") and bool(stream.isatty())


def track(items: Sequence[T] | Iterable[T], /, *, description: str, progress: bool | None = None,
          weight: Callable[[T], int | None] | None = None, total: int | None = None) -> Iterator[T]:
    """Yield ``items``, advancing a bar on standard error when `enabled` says so.

    Args:
        items: What to iterate over.
        description: The bar's label (``"initialize"``, ``"save mlp.safetensors"``).
        progress: ``True``/``False`` to force, ``None`` for automatic.
        weight: Bytes of work per item (the bar advances by it); 1 per item when ``None``.
        total: The total work, when ``items`` has no length or ``weight`` is not given.

    Raises:
        InvalidArgumentError: As `enabled`.
    """
    items = list(items)
    chosen = progress if progress is not None else _from_env()   # the argument wins over the variable
    if chosen is False or (chosen is None and not _terminal()):
        yield from items    # no bar whatever the work: nothing to weigh
        return
    weigh = (lambda item: 1) if weight is None else (lambda item: int(weight(item) or 0))
    if total is None:
        total = sum(weigh(item) for item in items)
    if not enabled(progress, work=total if weight is not None else None):
        yield from items
        return
    forced = progress is True or (progress is None and _from_env() is True)
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    amount = DownloadColumn() if weight is not None else MofNCompleteColumn()
    columns = (TextColumn("{task.description}"), BarColumn(), amount, TimeRemainingColumn())
    console = Console(file=sys.stderr, force_terminal=True if forced else None)
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task(description, total=total)
        for item in items:
            yield item
            bar.advance(task, weigh(item))
