"""agent.record's ``@record`` makes what ``@dataclass(frozen=True)`` makes: every wire
record, built from the same values both ways, agrees on construction, defaults, repr,
equality, hashing, frozenness, replace/asdict/fields and match arguments."""

from __future__ import annotations

import dataclasses
import inspect
import pickle
import typing

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent import codec, schema
from agent.record import record

st.register_type_strategy(float, st.floats(allow_nan=False, allow_infinity=False))
RECORDS = (*schema.RECORDS, codec.Envelope)


def by_dataclass(cls: type) -> type:
    """The same class as @dataclass(frozen=True) makes it from the same fields."""
    spec = []
    for f in dataclasses.fields(cls):
        kwargs = {"compare": f.compare, "repr": f.repr, "hash": f.hash}
        if f.default is not dataclasses.MISSING:
            kwargs["default"] = f.default
        if f.default_factory is not dataclasses.MISSING:
            kwargs["default_factory"] = f.default_factory
        spec.append((f.name, f.type, dataclasses.field(**kwargs)))
    return dataclasses.make_dataclass(cls.__name__, spec, frozen=True)


def test_records_are_frozen_dataclasses():
    for cls in RECORDS:
        assert dataclasses.is_dataclass(cls)
        assert cls.__dataclass_params__.frozen and cls.__dataclass_params__.eq
        ref = by_dataclass(cls)
        assert str(inspect.signature(cls)) == str(inspect.signature(ref))
        assert cls.__match_args__ == ref.__match_args__


@pytest.mark.parametrize("cls", RECORDS, ids=lambda r: r.__name__)
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_a_record_behaves_as_the_dataclass(cls, data):
    ref = by_dataclass(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    drawn = data.draw(st.from_type(cls)) if cls is not codec.Envelope else None
    values = [getattr(drawn, n) for n in names] if drawn else [1, True, None, "e", "m", 3]
    ours, theirs = cls(*values), ref(*values)
    assert repr(ours) == repr(theirs)
    assert list(vars(ours).items()) == list(vars(theirs).items())
    assert hash(ours) == hash(theirs)
    same = cls(**dict(zip(names, values, strict=True)))
    assert ours == same and (ours != same) is False and ours.__eq__(theirs) is NotImplemented
    assert dataclasses.asdict(ours) == dataclasses.asdict(theirs)
    assert dataclasses.replace(ours) == ours and pickle.loads(pickle.dumps(ours)) == ours
    for name in names:
        with pytest.raises(
            dataclasses.FrozenInstanceError, match=f"cannot assign to field '{name}'"
        ):
            setattr(ours, name, 0)
        with pytest.raises(dataclasses.FrozenInstanceError, match=f"cannot delete field '{name}'"):
            delattr(ours, name)
    changed = dataclasses.replace(ours, **{names[0]: object()})
    assert changed != ours and (changed == ours) == (
        dataclasses.replace(theirs, **{names[0]: changed.__dict__[names[0]]}) == theirs
    )


def test_defaults_and_fields_left_out_of_comparison():
    a, b = codec.Envelope(1, True), codec.Envelope(1, True, size=5)
    assert a == b and hash(a) == hash(b) and a.data is None and a.error == ""
    assert "size=5" in repr(b)
    with pytest.raises(TypeError):
        codec.Envelope(1)  # ok has no default

    @record
    class WithFactory:
        """A record whose field has a default factory."""

        items: list = dataclasses.field(default_factory=list)

    one, two = WithFactory(), WithFactory()
    assert one.items == [] and one.items is not two.items and one == two


def test_what_a_record_does_not_support_is_refused():
    with pytest.raises(TypeError, match="init=False"):

        @record
        class Hidden:
            """A field left out of __init__."""

            x: int = dataclasses.field(init=False, default=0)

    with pytest.raises(TypeError, match="defines __repr__ itself"):

        @record
        class Shown:
            """A record with its own repr."""

            x: int

            def __repr__(self) -> str:
                return "x"


def test_init_is_compiled_when_first_looked_up_and_is_then_the_real_function():
    """@record leaves __init__ to be compiled on first use (most records are never made
    in a CLI call): before that, the class already shows the dataclass's signature;
    after, __init__ is a plain function on the class, and subclasses get it too."""

    @record
    class Point:
        """A record no one has made yet."""

        x: int
        y: int = 2

    assert type(Point.__dict__["__init__"]).__name__ == "_LazyInit"
    assert str(inspect.signature(Point)) == "(x: 'int', y: 'int' = 2) -> None"
    assert inspect.isfunction(Point.__dict__["__init__"])  # looked up: compiled, in place
    assert Point.__init__.__qualname__ == f"{Point.__qualname__}.__init__"

    @record
    class Fresh:
        """Made first, then introspected."""

        a: str

    class Sub(Fresh):
        pass

    assert Sub("s").a == "s" and "__init__" not in Sub.__dict__  # the base's, compiled
    assert inspect.isfunction(Fresh.__dict__["__init__"]) and Fresh("t") == Fresh("t")
    with pytest.raises(TypeError):
        Fresh()  # type: ignore[call-arg]


def test_the_codec_reads_each_records_hints_as_typing_does():
    """agent.codec evaluates each distinct annotation text once (typing.get_type_hints
    compiles every one anew); what it gets for every record is what typing gets."""
    for cls in RECORDS:
        assert codec._hints(cls) == typing.get_type_hints(cls), cls.__name__
