"""pp.roles: declared roles and axes for layer types the adapters do not know (NumPy backend)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

import polyparam as pp
from polyparam.numpy import Block, Dense, Param


class Scaled(Block):
    """A layer whose ``gain`` (a scale) and ``proj`` (a weight stored (in, out)) polyparam cannot guess."""

    def __init__(self) -> None:
        super().__init__()
        self.params["gain"] = Param("gain", (4,), role="other")
        self.params["proj"] = Param("proj", (3, 4))   # (in, out)

    def forward(self, x: np.ndarray, tape: list) -> np.ndarray:
        return (x @ self.params["proj"].ready()) * self.params["gain"].ready()


class Subclass(Scaled):
    pass


@pytest.fixture
def declared() -> Iterator[None]:
    pp.roles.register(Scaled, {"gain": "scale"}, axes={"proj": ("in", "out")})
    try:
        yield
    finally:
        pp.roles.unregister(Scaled)


def test_without_a_declaration_the_block_decides() -> None:
    tree = pp.tree(Scaled())
    assert tree["gain"].role == "other"
    assert tree["proj"].axes == ("out", "in")


def test_a_declaration_sets_role_and_axes(declared: None) -> None:
    tree = pp.tree(Scaled())
    assert tree["gain"].role == "scale"
    assert tree["proj"].axes == ("in", "out")


def test_fans_follow_declared_axes(declared: None) -> None:
    tree = pp.tree(Scaled())
    tree.initialize(pp.init.Xavier(), seed=0, force_reinit=True)
    assert np.all(tree["gain"].numpy() == 1)   # a scale gets ones
    big = Scaled()
    big.params["proj"] = Param("proj", (400, 100))
    t = pp.tree(big)
    t["proj"].initialize(pp.init.Kaiming(mode="fan_in", distribution="normal"), seed=0)
    assert t["proj"].numpy().std() == pytest.approx(np.sqrt(2 / 400), rel=0.05)   # fan_in = 400, the first axis


def test_subclasses_inherit_and_the_most_specific_wins(declared: None) -> None:
    assert pp.tree(Subclass())["gain"].role == "scale"
    pp.roles.register(Subclass, {"gain": "other"})
    try:
        assert pp.tree(Subclass())["gain"].role == "other"
        assert pp.tree(Subclass())["proj"].axes == ("in", "out")   # from the base's declaration
        assert pp.tree(Scaled())["gain"].role == "scale"
    finally:
        pp.roles.unregister(Subclass)


def test_a_qualified_name_needs_no_import(declared: None) -> None:
    pp.roles.unregister(Scaled)
    pp.roles.register(f"{Scaled.__module__}.{Scaled.__qualname__}", {"gain": "scale"})
    assert pp.tree(Scaled())["gain"].role == "scale"
    assert f"{Scaled.__module__}.Scaled" in pp.roles.declared()


def test_unregister_says_whether_there_was_one() -> None:
    assert pp.roles.unregister(Scaled) is False
    pp.roles.register(Scaled, {"gain": "scale"})
    assert pp.roles.unregister(Scaled) is True
    assert pp.tree(Scaled())["gain"].role == "other"


@pytest.mark.parametrize(("args", "kwargs", "words"), [
    ((Scaled, {"gain": "gamma"}), {}, "'gamma'"),
    ((Scaled,), {"axes": {"proj": ("in", "outt")}}, "'outt'"),
    ((Scaled,), {"axes": {"proj": "in,out"}}, "one word per axis"),
    (("Scaled",), {}, "qualified name"),
    ((Scaled(),), {}, "not an instance"),
])
def test_bad_declarations_are_refused(args: tuple, kwargs: dict, words: str) -> None:
    before = pp.roles.declared()
    with pytest.raises(pp.errors.InvalidArgumentError, match=words):
        pp.roles.register(*args, **kwargs)
    assert pp.roles.declared() == before


def test_axes_of_the_wrong_length_name_the_layer_and_attribute() -> None:
    pp.roles.register(Scaled, axes={"proj": ("in", "out", "space")})
    try:
        with pytest.raises(pp.errors.InvalidArgumentError, match=r"Scaled\.proj.*expected 2 axis roles"):
            pp.tree(Scaled())["proj"]
    finally:
        pp.roles.unregister(Scaled)


def test_other_layers_are_untouched(declared: None) -> None:
    d = pp.tree(Dense(3, in_units=4))
    assert (d["weight"].role, d["weight"].axes) == ("weight", ("out", "in"))


def test_lookups_are_remembered_until_the_registry_changes(declared: None) -> None:
    from polyparam import roles

    layer = Subclass()
    assert roles.lookup(layer, "gain") == ("scale", None)
    assert roles.lookup(layer, "gain") == ("scale", None)            # remembered
    pp.roles.register(Subclass, {"gain": "other"}, axes={"gain": ("out",)})
    try:
        assert roles.lookup(layer, "gain", ndim=1) == ("other", ("out",))
        with pytest.raises(pp.errors.InvalidArgumentError, match="expected 2 axis roles"):
            roles.lookup(layer, "gain", ndim=2)                      # the length is checked on every lookup
    finally:
        pp.roles.unregister(Subclass)
    assert roles.lookup(layer, "gain") == ("scale", None)
    kinds = [type(f"Made{i}", (Scaled,), {}) for i in range(roles._FOUND_MAX + 10)]   # many layer types: bounded
    assert all(roles.lookup(kind(), "gain") == ("scale", None) for kind in kinds)
    assert len(roles._found) <= roles._FOUND_MAX


class _EqualByName(type):
    """A metaclass that compares (and hashes) its classes by ``__name__``, as some registries' do."""

    def __eq__(cls, other: object) -> bool:
        return isinstance(other, _EqualByName) and cls.__name__ == other.__name__

    def __hash__(cls) -> int:
        return hash(cls.__name__)


class _Unhashable(type):
    def __eq__(cls, other: object) -> bool:   # no __hash__: its classes cannot be dict keys
        return cls is other


def test_the_memo_never_asks_a_metaclass_and_follows_renames() -> None:
    """Layer types are remembered by identity, with their name: a metaclass's __eq__ and __hash__ are not
    called (an unhashable class is looked up; two classes equal by name keep their own declarations), and
    a class renamed after a lookup is looked up again."""
    from polyparam import roles

    one = _EqualByName("Tok", (), {"__module__": "libone"})
    two = _EqualByName("Tok", (), {"__module__": "libtwo"})
    odd = _Unhashable("Odd", (), {"__module__": "libodd"})
    late = type("Late", (), {"__module__": "scratch"})
    pp.roles.register("libone.Tok", {"w": "bias"})
    pp.roles.register("real.layers.Late", {"w": "scale"})
    try:
        assert roles.lookup(one(), "w") == ("bias", None)
        assert roles.lookup(two(), "w") == (None, None)
        assert roles.lookup(odd(), "w") == (None, None)
        assert roles.lookup(late(), "w") == (None, None)
        late.__module__ = "real.layers"   # a class factory naming its class after building it
        assert roles.lookup(late(), "w") == ("scale", None)
    finally:
        pp.roles.unregister("libone.Tok")
        pp.roles.unregister("real.layers.Late")


def test_the_memo_does_not_keep_layer_types_alive(declared: None) -> None:
    import gc
    import weakref

    from polyparam import roles

    kind = type("Gone", (Scaled,), {})
    assert roles.lookup(kind(), "gain") == ("scale", None)
    ref = weakref.ref(kind)
    del kind
    gc.collect()
    assert ref() is None
