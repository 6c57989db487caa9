"""The :class:`Backend` protocol: what a backend module provides."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from polyparam._models import ModelFactory
    from polyparam._tree import ParameterTree

__all__ = ["BACKEND_NAMES", "Backend"]


@runtime_checkable
class Backend(Protocol):
    """A backend module (or object). Every built-in backend defines exactly these names.

    Attributes:
        NAME: The backend name, e.g. ``"torch"``.
        CAPABILITIES: Lowercase capability words, e.g. ``{"tying", "deferred", "devices"}``;
            the conformance kit skips what a backend does not declare.
    """

    NAME: str
    CAPABILITIES: frozenset[str]

    def framework_version(self) -> str:
        """The version of the framework this backend drives."""

    def is_native(self, obj: object, /) -> bool:
        """Whether ``obj`` is a model, layer or block this backend can wrap."""

    def tree(self, obj: object, /) -> ParameterTree:
        """Wrap ``obj`` as a :class:`~polyparam.ParameterTree`."""

    def models(self) -> ModelFactory:
        """Builders of the standard architectures (the seed's models) in this framework."""


#: The names every backend module must define (checked when a plugin returns one).
BACKEND_NAMES = ("CAPABILITIES", "NAME", "framework_version", "is_native", "models", "tree")
