"""Arrays a backend marks as its own copies: a save writes them as they are (see :func:`own_copy`)."""

from __future__ import annotations

import weakref

import numpy as np

__all__ = ["is_own_copy", "own_copy", "written_as_is"]

#: The arrays marked by :func:`own_copy`, by ``id`` (an entry goes with its array).
_OWN_COPIES: weakref.WeakValueDictionary[int, np.ndarray] = weakref.WeakValueDictionary()


def own_copy(array: np.ndarray, /) -> np.ndarray:
    """Mark ``array`` as a copy no one else holds or writes (what a framework's read copied out); return it.

    For ``Parameter._read_view`` where the read copies (Gluon's ``asnumpy``): a save
    then writes the array's bytes as they are, without the copy it makes of memory a
    training step may be writing meanwhile. Mark only an array made for this read: a
    marked view of live storage written during a save gives a file whose checksums
    disagree with its bytes. Anything NumPy can refer to weakly may be marked; nothing
    checks that it is a copy.
    """
    _OWN_COPIES[id(array)] = array
    return array


def is_own_copy(array: np.ndarray, /) -> bool:
    """Whether ``array`` itself (not a view of it) was marked by :func:`own_copy`."""
    return _OWN_COPIES.get(id(array)) is array


def written_as_is(array: np.ndarray, /) -> bool:
    """Whether a save writes ``array``'s bytes, and a background save stages it, as it is: a marked copy in C order."""
    return is_own_copy(array) and array.flags.c_contiguous
