"""The marks a backend puts on the copies its reads make (``polyparam.backend.own_copy``)."""

from __future__ import annotations

import numpy as np


def test_own_copy_marks_that_array_alone_and_only_while_it_lives() -> None:
    """``own_copy`` marks the array itself: not a view of it, not an equal array, and not a later array that
    happens to get its ``id`` once it is gone."""
    import gc

    from polyparam._copies import is_own_copy
    from polyparam.backend import own_copy

    array = np.arange(6.0)
    assert own_copy(array) is array and is_own_copy(array)
    assert not is_own_copy(array[:]) and not is_own_copy(array.copy()) and not is_own_copy(np.arange(6.0))
    del array
    gc.collect()
    assert not any(is_own_copy(np.zeros(1)) for _ in range(1000))   # one of them may well get its id
