"""``@record``: ``@dataclass(frozen=True)``, made without compiling five of its methods.

dataclasses compiles six methods for each frozen class; agent.schema's thirty-odd
records then took ~20 ms to import, a sixth of every CLI call's fixed cost and part of
every agent's start. ``record`` lets dataclasses collect the fields (no code generated),
compiles ``__init__`` (its signature and speed matter) when first looked up, ``__eq__``
and ``__hash__`` when first called, and gives ``__repr__``, ``__setattr__`` and
``__delattr__`` as closures. The class is a real frozen dataclass (fields, asdict,
replace, is_dataclass, match) whose methods do what dataclass's own do:
tests/test_record.py holds them side by side.
"""

from __future__ import annotations

import dataclasses
import operator
import reprlib
from typing import Any, TypeVar

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class _Frozen:
    """Made by dataclass itself: its ``__dataclass_params__`` say what a record is."""


_PARAMS = _Frozen.__dataclass_params__  # type: ignore[attr-defined]
_METHODS = ("__init__", "__repr__", "__eq__", "__hash__", "__setattr__", "__delattr__")


def record(cls: type[T]) -> type[T]:
    """``cls`` as ``@dataclass(frozen=True)`` makes it (fields with plain defaults or
    default factories; no InitVar, no init=False or kw_only fields, no __post_init__)."""
    cls = dataclasses.dataclass(cls, init=False, repr=False, eq=False)  # fields only
    fields = dataclasses.fields(cls)
    for f in fields:
        if not f.init or f.kw_only is True:
            raise TypeError(f"record {cls.__name__}.{f.name}: init=False/kw_only unsupported")
    if hasattr(cls, "__post_init__"):
        raise TypeError(f"record {cls.__name__}: __post_init__ unsupported")
    own = set(_METHODS).intersection(cls.__dict__)
    if own:  # dataclass would keep some of them and refuse others: not worth copying
        raise TypeError(f"record {cls.__name__} defines {', '.join(sorted(own))} itself")
    env: dict[str, Any] = {
        "_set": object.__setattr__,
        "_MISSING": dataclasses.MISSING,
    }
    params, body = [], []
    for f in fields:
        if f.default is not dataclasses.MISSING:
            env[f"_default_{f.name}"] = f.default
            params.append(f"{f.name}=_default_{f.name}")
        elif f.default_factory is not dataclasses.MISSING:
            env[f"_factory_{f.name}"] = f.default_factory
            params.append(f"{f.name}=_MISSING")
            body.append(f"    if {f.name} is _MISSING: {f.name} = _factory_{f.name}()")
        else:
            params.append(f.name)
        body.append(f"    _set(self, {f.name!r}, {f.name})")
    source = [
        f"def __init__(self, {', '.join(params)}):" if params else "def __init__(self):",
        *(body or ["    pass"]),
    ]
    for name, method in _methods(cls, fields).items():
        method.__qualname__ = f"{cls.__qualname__}.{name}"
        method.__module__ = cls.__module__
        setattr(cls, name, method)
    annotations = {**{f.name: f.type for f in fields}, "return": None}
    cls.__init__ = _LazyInit(cls, "\n".join(source), env, annotations)  # type: ignore[misc]
    cls.__dataclass_params__ = _PARAMS  # type: ignore[attr-defined]
    return cls


class _LazyInit:
    """A record's ``__init__`` until it is first looked up (an instance made, or the class
    introspected: ``inspect.signature``, ``help``): then compiled, put on the class in
    its place and returned, so everyone sees the real function. Compiling all of
    agent.schema's up front was half of its import (~4 ms of every CLI call), though a
    call makes instances of a few records only (the codec builds rows without them)."""

    __slots__ = ("annotations", "cls", "env", "source")

    def __init__(self, cls: type, source: str, env: dict[str, Any], annotations: Any) -> None:
        self.cls = cls
        self.source = source
        self.env = env
        self.annotations = annotations

    def compile(self) -> Any:
        """The real ``__init__``, compiled now unless another thread already did."""
        init = self.cls.__dict__.get("__init__")
        if init is not self:
            return init
        env = dict(self.env)
        exec(self.source, env)  # generated from the class's own field names only
        init = env["__init__"]
        init.__annotations__ = self.annotations
        init.__qualname__ = f"{self.cls.__qualname__}.__init__"
        init.__module__ = self.cls.__module__
        type.__setattr__(self.cls, "__init__", init)
        return init

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        init = self.compile()
        return init if obj is None else init.__get__(obj, owner)


def _compiled_on_first_use(cls: type, name: str, source: list[str]) -> Any:
    """A method that compiles ``source`` (defining ``name``) on its first call and puts
    the result on ``cls``: what a dataclass compiles up front, paid only by the classes
    whose instances are ever compared or hashed."""

    def first_use(self: Any, *args: Any) -> Any:
        env: dict[str, Any] = {}
        exec("\n".join(source), env)  # generated from the class's own field names only
        method = env[name]
        method.__qualname__ = f"{cls.__qualname__}.{name}"
        method.__module__ = cls.__module__
        setattr(cls, name, method)  # from now on, called directly
        return method(self, *args)

    return first_use


def _methods(cls: type, fields: tuple[dataclasses.Field[Any], ...]) -> dict[str, Any]:
    """Every method but ``__init__``, behaving as those dataclass generates: ``__eq__``
    and ``__hash__`` compiled when first called, the rest plain closures over the field
    names (rarely called; compiling them was most of a class's cost)."""
    names = tuple(f.name for f in fields)
    shown = [(f"{f.name}=", operator.attrgetter(f.name)) for f in fields if f.repr]
    compared = "".join(f"self.{f.name}," for f in fields if f.compare)
    other = "".join(f"other.{f.name}," for f in fields if f.compare)
    hashed = "".join(f"self.{f.name}," for f in fields if (f.compare if f.hash is None else f.hash))
    frozen = dataclasses.FrozenInstanceError

    @reprlib.recursive_repr()
    def __repr__(self: Any) -> str:
        inner = ", ".join([label + repr(get(self)) for label, get in shown])
        return f"{self.__class__.__qualname__}({inner})"

    def __setattr__(self: Any, name: str, value: Any) -> None:
        if type(self) is cls or name in names:
            raise frozen(f"cannot assign to field {name!r}")
        super(cls, self).__setattr__(name, value)

    def __delattr__(self: Any, name: str) -> None:
        if type(self) is cls or name in names:
            raise frozen(f"cannot delete field {name!r}")
        super(cls, self).__delattr__(name)

    eq = [
        "def __eq__(self, other):",
        "    if other.__class__ is self.__class__:",
        f"        return ({compared}) == ({other})",
        "    return NotImplemented",
    ]
    return {
        "__repr__": __repr__,
        "__eq__": _compiled_on_first_use(cls, "__eq__", eq),
        "__hash__": _compiled_on_first_use(
            cls, "__hash__", ["def __hash__(self):", f"    return hash(({hashed}))"]
        ),
        "__setattr__": __setattr__,
        "__delattr__": __delattr__,
    }
