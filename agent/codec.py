"""The wire codec: records to positional JSON and back, validating every field.

Every reply is an envelope ``{"v": PROTOCOL_VERSION, "ok": bool, ...}`` serialised as
JSON and zlib-compressed when large. Decoders are compiled once per record type from its
type hints (a straight-line decoder per record, and a bulk one for long lists of flat
records such as 100k task rows). The records themselves live in agent.schema.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import types
import typing
import zlib
from collections.abc import Callable
from dataclasses import field
from itertools import starmap
from typing import Any, TypeVar, Union

from agent.record import record
from agent.version import PROTOCOL_VERSION

T = TypeVar("T")

MAX_PAYLOAD = 64 * 1024 * 1024  # uncompressed reply cap; larger replies are truncated
COMPRESS_ABOVE = 64 * 1024


class RawJSON:
    """Text that is already JSON (e.g. task rows encoded in slices); emitted verbatim.

    Not a str: json.dumps hands it to its ``default`` hook, which is how one C-speed pass
    finds out whether a reply holds any (see _encode)."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


class WireError(ValueError):
    """A payload that does not decode into the expected record."""


_FIELD_NAMES: dict[type, tuple[str, ...]] = {}
_PLAIN = frozenset({str, int, float, bool, type(None)})


def to_wire(value: Any) -> Any:
    """Turn a record (or tuple of records) into JSON-able positional lists.

    Plain values come back first, before any record lookup: a snapshot's are mostly
    such, and asking dataclasses.is_dataclass of each was ~5% of a worker's CPU per tree
    refresh."""
    kind = type(value)
    if kind in _PLAIN:
        return value
    names = _FIELD_NAMES.get(kind)
    if names is None:
        if kind is Spliced:  # wire form already (agent.core's listings)
            return value
        if isinstance(value, (tuple, list)):
            return [to_wire(v) for v in value]
        if isinstance(value, dict):
            return {str(k): to_wire(v) for k, v in value.items()}
        if isinstance(value, str) or not dataclasses.is_dataclass(value):
            return value
        if isinstance(value, type):  # a record class, not a record
            return value
        names = _FIELD_NAMES[kind] = tuple(f.name for f in dataclasses.fields(value))
    return [to_wire(getattr(value, n)) for n in names]


Decoder = Callable[[Any], Any]
_DECODERS: dict[Any, Decoder] = {}


def from_wire(tp: Any, data: Any) -> Any:
    """Rebuild a value of type ``tp`` from its wire form, validating every field."""
    return _decoder(tp)(data)


def _decoder(tp: Any) -> Decoder:
    """A validating decoder for ``tp``, compiled once per type (100k rows decode fast)."""
    cached = _DECODERS.get(tp)
    if cached is None:
        cached = _DECODERS[tp] = _build_decoder(tp)
    return cached


def _primitive(kind: type) -> Decoder:
    def decode(data: Any) -> Any:
        if type(data) is kind:
            return data
        raise WireError(f"expected {kind.__name__}, got {type(data).__name__}")

    return decode


def _float(data: Any) -> float:
    if type(data) is float or type(data) is int:
        return float(data)
    raise WireError(f"expected float, got {type(data).__name__}")


def _fail(cls: type, index: int, value: Any) -> None:
    field_name = dataclasses.fields(cls)[index].name
    raise WireError(f"bad {cls.__name__}.{field_name}: {type(value).__name__} {value!r:.40}")


TIER_UP = 50  # records of a type checked by a loop before its decoder is compiled
_HINTS: dict[tuple[str, str], Any] = {}  # (module, annotation text) -> its value


def _hints(cls: type) -> dict[str, Any]:
    """``typing.get_type_hints(cls)`` for a record (its fields' annotations, written as
    text, evaluated in their class's module), each distinct text evaluated once a
    process: get_type_hints compiles every annotation anew, ~1-2 ms of the decoders a
    CLI call builds. tests/test_record.py holds it to get_type_hints."""
    import inspect  # dataclasses imported it already

    hints: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        if klass is object:
            continue
        for name, text in inspect.get_annotations(klass).items():
            if type(text) is not str:
                hints[name] = typing.get_type_hints(klass)[name]  # not text: as typing does
                continue
            key = (klass.__module__, text)
            value = _HINTS.get(key, _HINTS)
            if value is _HINTS:  # the module's names (a record's never shadow them)
                value = _HINTS[key] = eval(text, vars(sys.modules[klass.__module__]))
            hints[name] = type(None) if value is None else value
    return hints


def _record_decoder(cls: type) -> Decoder:
    """A decoder for one record type: a loop over its fields' checks for the first
    TIER_UP records, then a straight-line decoder generated for it.

    Primitive and optional-primitive fields are checked inline in the generated code (no
    call per field), which makes decoding 100k task rows several times faster than a
    generic walk; but compiling it costs ~0.3 ms a type, most of a CLI call's decoding
    (a snapshot uses some ten types, a few records each). Both accept the same data, make
    equal records and raise the same WireError.
    """
    plan = _plan(cls)
    loop = _loop_decoder(cls, plan)
    compiled: list[Decoder] = []
    uses = [0]

    def decode(data: Any) -> Any:
        if compiled:
            return compiled[0](data)
        uses[0] += 1
        if uses[0] <= TIER_UP:
            return loop(data)
        compiled.append(_compiled_decoder(cls, plan))
        return compiled[0](data)

    return decode


Plan = list[tuple[int, "type | None", bool, "Decoder | None"]]


def _plan(cls: type) -> Plan:
    """(index, primitive type or None, optional, decoder of a non-primitive or None) of
    each field of a record: what its decoders check."""
    hints = _hints(cls)
    plan: Plan = []
    for i, f in enumerate(dataclasses.fields(cls)):
        hint = hints[f.name]
        args = typing.get_args(hint)
        optional = typing.get_origin(hint) in (Union, types.UnionType) and type(None) in args
        inner = [a for a in args if a is not type(None)] if optional else [hint]
        base = inner[0] if len(inner) == 1 else None
        if base in (str, int, bool, float):
            plan.append((i, base, optional, None))
        else:
            plan.append((i, None, False, _decoder(hint)))
    return plan


def _loop_decoder(cls: type, plan: Plan) -> Decoder:
    """A record's decoder as a loop over its fields' checks (nothing compiled)."""
    count = len(plan)

    def loop(data: Any) -> Any:
        if type(data) is not list or len(data) < count:
            raise WireError(f"expected {count} fields for {cls.__name__}")
        values = data[:count]
        for i, kind, optional, inner in plan:
            v = values[i]
            if inner is not None:
                values[i] = inner(v)
            elif type(v) is not kind and not (optional and v is None):
                if kind is float and type(v) is int:
                    values[i] = float(v)
                else:
                    _fail(cls, i, v)
        return cls(*values)

    return loop


def _compiled_decoder(
    cls: type, plan: list[tuple[int, type | None, bool, Decoder | None]]
) -> Decoder:
    """The straight-line decoder of a record (see _record_decoder for its ``plan``)."""
    count = len(plan)
    env: dict[str, Any] = {"cls": cls, "WireError": WireError, "_fail": _fail}
    lines = [
        "def decode(data):",
        f"    if type(data) is not list or len(data) < {count}:",
        f"        raise WireError('expected {count} fields for {cls.__name__}')",
    ]
    for i, base, optional, inner in plan:
        v = f"v{i}"
        lines.append(f"    {v} = data[{i}]")
        guard = f"{v} is not None and " if optional else ""
        if base in (str, int, bool):
            lines.append(f"    if {guard}type({v}) is not {base.__name__}: _fail(cls, {i}, {v})")
        elif base is float:
            lines.append(f"    if {guard}type({v}) is not float:")
            lines.append(f"        if type({v}) is int: {v} = float({v})")
            lines.append(f"        else: _fail(cls, {i}, {v})")
        else:
            env[f"d{i}"] = inner
            lines.append(f"    {v} = d{i}({v})")
    lines.append(f"    return cls({', '.join(f'v{i}' for i in range(count))})")
    exec("\n".join(lines), env)  # generated from our own type hints only
    return env["decode"]


# ------------------------------------------------ bulk rows (tuple[FlatRecord, ...])

BULK_ROWS = 32  # shorter lists decode row by row: compiling a bulk decoder costs more
_NONE = type(None)


def _bulk_or_generic(cls: type, generic: Decoder) -> Decoder:
    """``generic`` for short lists; for long ones :func:`_rows_decoder`, built when first
    needed (a CLI call that lists a few tasks compiles nothing it does not use)."""
    built: list[Decoder | None] = []

    def decode(data: Any) -> tuple[Any, ...]:
        if type(data) is not list or len(data) < BULK_ROWS:
            return generic(data)
        if not built:
            built.append(_rows_decoder(cls, generic))
        bulk = built[0]
        return generic(data) if bulk is None else bulk(data)

    return decode


class _Reject(Exception):
    """A row the fast path cannot vouch for: the generic decoder says what is wrong."""


def _flat_field(hint: Any) -> tuple[type, bool, bool] | None:
    """(primitive type, optional, is a tuple of it) of a flat field, or None when the field
    is not flat: a record, a union of several types, a tuple of records, an optional tuple."""
    args = typing.get_args(hint)
    optional = typing.get_origin(hint) in (Union, types.UnionType) and _NONE in args
    inner = [a for a in args if a is not _NONE] if optional else [hint]
    if len(inner) != 1:
        return None
    base = inner[0]
    if base in (str, int, bool, float):
        return base, optional, False
    if typing.get_origin(base) is tuple and not optional:
        items = typing.get_args(base)
        if len(items) == 2 and items[1] is Ellipsis and items[0] in (str, int, bool):
            return items[0], False, True
    return None


def _check_lines(i: int, base: type, optional: bool, many: bool) -> list[str]:
    """Inline checks of parameter ``v{i}``, the same the generic decoder makes."""
    v = f"v{i}"
    if many:  # most such lists are empty: their items cost nothing to check
        return [
            f"    if type({v}) is not list: raise _Reject",
            f"    if {v} and not _items[{i}].issuperset(map(type, {v})): raise _Reject",
            f"    {v} = tuple({v})",
        ]
    guard = f"{v} is not None and " if optional else ""
    if base is float:
        return [
            f"    if {guard}type({v}) is not float:",
            f"        if type({v}) is int: {v} = float({v})",
            "        else: raise _Reject",
        ]
    return [f"    if {guard}type({v}) is not {base.__name__}: raise _Reject"]


def _rows_decoder(cls: type, generic: Decoder, swap: bool = True) -> Decoder | None:
    """A decoder for ``tuple[cls, ...]`` of a flat record: every field a primitive, an
    optional primitive or a tuple of primitives (None for any other record).

    It accepts exactly what ``generic`` accepts and returns equal records, several times
    faster: that every row is a list is checked in bulk, each row's length and fields by
    generated inline code, and the records are built without the frozen ``__init__`` (see
    :func:`_row_factory`). Any row it cannot vouch for hands the whole payload to
    ``generic``, which rejects it with its precise WireError.
    """
    hints = _hints(cls)
    fields = dataclasses.fields(cls)
    plan = [_flat_field(hints[f.name]) for f in fields]
    if not fields or any(p is None for p in plan):
        return None
    make = _row_factory(cls, plan, swap)  # type: ignore[arg-type]

    def decode_rows(data: Any) -> tuple[Any, ...]:
        if type(data) is not list or not data or set(map(type, data)) != {list}:
            return generic(data)
        try:
            return tuple(starmap(make, data))
        except (_Reject, TypeError):  # TypeError: a row too short for the parameters
            return generic(data)

    return decode_rows


def _row_factory(
    cls: type, plan: list[tuple[type, bool, bool]], swap: bool = True
) -> Callable[..., Any]:
    """A callable taking one row's values (trailing extras ignored) that checks them and
    returns the record, or raises _Reject.

    A frozen dataclass's ``__init__`` stores each field through ``object.__setattr__``,
    the slow half of decoding 100k rows. A plain twin class stores them with ordinary
    attribute writes, then its instance becomes a ``cls`` by ``__class__`` assignment (same
    layout, same ``__dict__``), equal to ``cls(*values)``. Probed once here; where the
    swap is refused, would stop the world per row (free-threaded builds) or ``swap`` is
    False, the factory calls ``cls`` instead.
    """
    names = [f.name for f in dataclasses.fields(cls)]
    params = ", ".join(f"v{i}" for i in range(len(names)))
    checks = [line for i, p in enumerate(plan) for line in _check_lines(i, *p)]
    items = {i: frozenset({base}) for i, (base, _, many) in enumerate(plan) if many}
    env: dict[str, Any] = {"cls": cls, "_Reject": _Reject, "_items": items}
    exec(  # generated from our own field names and type hints only
        "\n".join(
            [f"def make({params}, *extra):", *checks, f"    return cls({params})"]
            + [f"def __init__(self, {params}, *extra):", *checks]
            + [f"    self.{name} = v{i}" for i, name in enumerate(names)]
            + ["    self.__class__ = cls"]
        ),
        env,
    )
    import sysconfig  # here: only a long listing needs it (~0.5 ms to import)

    if not swap or sysconfig.get_config_var("Py_GIL_DISABLED"):
        return env["make"]
    twin = type(f"{cls.__name__}Row", (), {"__init__": env["__init__"], "__module__": __name__})
    sample = [[base(1)] if many else base(1) for base, _, many in plan]  # valid values
    try:
        probe, expected = twin(*sample), env["make"](*sample)
        swaps = type(probe) is cls and probe == expected and vars(probe) == vars(expected)
    except (TypeError, _Reject):
        swaps = False
    return twin if swaps else env["make"]


def _build_decoder(tp: Any) -> Decoder:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        options = [a for a in typing.get_args(tp) if a is not type(None)]
        optional = len(options) < len(typing.get_args(tp))
        inner = [_decoder(a) for a in options]

        def decode_union(data: Any) -> Any:
            if data is None and optional:
                return None
            errors = []
            for dec in inner:
                try:
                    return dec(data)
                except WireError as exc:
                    errors.append(str(exc))
            raise WireError(f"value matches none of {tp}: {'; '.join(errors)}")

        return decode_union
    if origin is tuple:
        item_type = typing.get_args(tp)[0]
        item = _decoder(item_type)

        def decode_tuple(data: Any) -> tuple[Any, ...]:
            if type(data) is not list:
                raise WireError(f"expected a list for {tp}, got {type(data).__name__}")
            return tuple([item(v) for v in data])

        if isinstance(item_type, type) and dataclasses.is_dataclass(item_type):
            return _bulk_or_generic(item_type, decode_tuple)
        return decode_tuple
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _record_decoder(tp)
    if tp is float:
        return _float
    if tp is Any:
        return lambda data: data
    if tp in (int, str, bool):
        return _primitive(tp)
    raise WireError(f"cannot decode type {tp!r}")


class Spliced(list):
    """A wire list one of whose items is, or holds, a RawJSON (a listing and the reply
    carrying it): encoded item by item, the others each in one json pass."""


class _RawFound(Exception):
    """json.dumps met a RawJSON: the value must be spliced (see _encode)."""


def _not_json(obj: Any) -> Any:
    if type(obj) is RawJSON:
        raise _RawFound
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


_plain_encoder = json.JSONEncoder(separators=(",", ":"), allow_nan=False, default=_not_json)


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), allow_nan=False)


def _encode(obj: Any) -> str:
    """JSON text of ``obj``, splicing RawJSON in verbatim wherever it occurs.

    One C-speed json pass tries it whole; only a part it met a RawJSON in is taken
    apart (a list item by item, a dict value by value), down to the RawJSON. Large row
    lists arrive as RawJSON (encoded in slices by the collector), so the parts encoded
    here are small and no single json.dumps call holds the GIL long.
    """
    kind = type(obj)
    if kind is RawJSON:
        return obj.text
    if kind is Spliced:
        return "[" + ",".join(map(_encode, obj)) + "]"
    try:
        return _plain_encoder.encode(obj)
    except _RawFound:
        pass
    if isinstance(obj, dict):
        return "{" + ",".join(f"{_dumps(str(k))}:{_encode(v)}" for k, v in obj.items()) + "}"
    return "[" + ",".join(map(_encode, obj)) + "]"


def _pack(text: str) -> bytes:
    """A reply's bytes: its JSON text, compressed when large."""
    raw = text.encode()
    if len(raw) > COMPRESS_ABOVE:
        return b"Z" + zlib.compress(raw, 1)
    return b"J" + raw


_OK_HEAD = '{"v":' + str(PROTOCOL_VERSION) + ',"ok":true,"data":'


def encode_ok(value: Any) -> bytes:
    """Encode a successful reply carrying a record, tuple of records or plain data (the
    envelope's JSON is written around the data's, which is encoded once)."""
    return _pack(_OK_HEAD + _encode(to_wire(value)) + "}")


def encode_error(kind: str, message: str) -> bytes:
    """Encode a failure reply: ``kind`` is a stable machine word, ``message`` for humans."""
    return _pack(_dumps({"v": PROTOCOL_VERSION, "ok": False, "error": kind, "message": message}))


@record
class Envelope:
    """A decoded reply."""

    version: int
    ok: bool
    data: Any = None
    error: str = ""
    message: str = ""
    size: int = field(default=0, compare=False)


def decode_envelope(payload: bytes, max_size: int = MAX_PAYLOAD) -> Envelope:
    """Decode a reply, bounding decompressed size and validating its shape."""
    if not isinstance(payload, bytes) or not payload:
        raise WireError("empty or non-bytes payload")
    tag, body = payload[:1], payload[1:]
    if tag == b"Z":
        decomp = zlib.decompressobj()
        try:
            body = decomp.decompress(body, max_size + 1)
        except zlib.error as exc:
            raise WireError(f"corrupt compressed payload: {exc}") from exc
        if len(body) > max_size:
            raise WireError(f"payload larger than {max_size} bytes")
    elif tag != b"J":
        raise WireError(f"unknown payload tag {tag!r}")
    try:
        obj = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise WireError(f"payload is not JSON: {exc}") from exc
    if (
        not isinstance(obj, dict)
        or type(obj.get("v")) is not int
        or type(obj.get("ok")) is not bool
    ):
        raise WireError("payload is not a reply envelope")
    if obj["ok"]:
        return Envelope(obj["v"], True, obj.get("data"), size=len(payload))
    return Envelope(
        obj["v"], False, error=str(obj.get("error", "")), message=str(obj.get("message", ""))
    )


def decode_as(tp: type[T] | Any, envelope: Envelope) -> T:
    """Decode an envelope's data as a record type (or ``tuple[Record, ...]``)."""
    return from_wire(tp, envelope.data)
