"""Bounded, redacted reprs of live objects that never run the host's code (no __repr__ etc.)."""

from __future__ import annotations

import collections
import datetime
import re
import sys
import types
from collections.abc import Callable, Iterable
from itertools import islice
from typing import Any

from agent.redact import (
    REDACTED,
    is_secret_flag,
    is_sensitive,
    looks_like_password,
    redact_text,
)

_TRUNCATED = "…"
_MAX_DEPTH_CAP = 100  # recursion of the renderer stays far below the interpreter's limit
_REDACT_MARGIN = 1024  # text redacted beyond what is shown, so a cut secret is still recognised
_NAME_CAP = 200  # longest class/function/module name shown
_LABEL_LEN = 100  # longest child label (safe_repr of a dict key)

# Descriptors read straight from the builtin types' own dicts: calling their __get__ runs C code
# only, whatever the metaclass, __getattribute__ or __getattr__ of the object looked at.
_type_qualname = type.__dict__["__qualname__"].__get__
_type_name = type.__dict__["__name__"].__get__
_type_module = type.__dict__["__module__"].__get__
_type_mro = type.__dict__["__mro__"].__get__
_type_ns = type.__dict__["__dict__"].__get__
_func_qualname = types.FunctionType.__dict__["__qualname__"].__get__
_builtin_name = types.BuiltinFunctionType.__dict__["__name__"].__get__
_builtin_self = types.BuiltinFunctionType.__dict__["__self__"].__get__
_method_func = types.MethodType.__dict__["__func__"].__get__
_method_self = types.MethodType.__dict__["__self__"].__get__
_module_ns = types.ModuleType.__dict__["__dict__"].__get__
_exc_args = BaseException.__dict__["args"].__get__
_getset_name = types.GetSetDescriptorType.__dict__["__name__"].__get__
_member_name = types.MemberDescriptorType.__dict__["__name__"].__get__
_type_flags = type.__dict__["__flags__"].__get__
_HEAPTYPE = 1 << 9  # Py_TPFLAGS_HEAPTYPE: a class defined in Python (members are its __slots__)
_GEN_QUALNAMES = {
    id(types.CoroutineType): (
        types.CoroutineType,
        "coroutine",
        types.CoroutineType.__dict__["__qualname__"].__get__,
    ),
    id(types.GeneratorType): (
        types.GeneratorType,
        "generator",
        types.GeneratorType.__dict__["__qualname__"].__get__,
    ),
    id(types.AsyncGeneratorType): (
        types.AsyncGeneratorType,
        "async_generator",
        types.AsyncGeneratorType.__dict__["__qualname__"].__get__,
    ),
}
_DICT_LIKE = (dict, collections.OrderedDict, collections.defaultdict, collections.Counter)
# Attributes of an entry object (multidict's _Entry, http.cookies.Morsel, a form field)
# that name it, and those that hold its value.
_NAME_ATTRS = frozenset({"name", "key", "identity", "field", "header", "_name", "_key"})
_VALUE_ATTRS = frozenset({"value", "val", "_value", "coded_value", "_coded_value", "raw"})
_TUPLE_KEY_ITEMS = 8  # items of a tuple dict key looked at for a secret name
_NAME_ONLY_RE = re.compile(r"-{0,2}[A-Za-z0-9_.\-]{1,64}")  # a header or field name
_USER_RE = re.compile(r"[a-z_][a-z0-9._@+\-]{0,63}")  # a user name, as systems spell them


class _Full(BaseException):
    """Stops rendering once the length budget is spent (BaseException: no handler swallows it)."""


def safe_repr(obj: object, *, max_len: int = 240, max_depth: int = 3, max_items: int = 20) -> str:
    """Repr of obj of at most max_len characters, with secrets masked and no host code run."""
    limit = 240
    try:
        limit = max(1, int(max_len))
        renderer = _Renderer(
            limit, min(max(0, int(max_depth)), _MAX_DEPTH_CAP), max(0, int(max_items))
        )
        try:
            renderer.render(obj, 0)
        except _Full:
            return "".join(renderer.parts)[: limit - 1] + _TRUNCATED
        return "".join(renderer.parts)
    except Exception:
        return _clip(f"<unrepresentable {safe_type_name(obj)}>", limit)


def safe_type_name(obj: object) -> str:
    """'module.QualName' of type(obj) ('builtins.' dropped), read without running host code."""
    try:
        return _class_name(type(obj))
    except Exception:
        return "?"


def safe_class_name(cls: type) -> str:
    """'module.QualName' of a class (not an instance), read without running host code."""
    try:
        return _class_name(cls)
    except Exception:
        return "?"


def safe_len(obj: object) -> int | None:
    """Length of builtin containers and stdlib queues; None for anything else (no user __len__)."""
    try:
        tp = type(obj)
        if _is_exact(tp, _SIZED):
            return len(obj)  # type: ignore[arg-type]
        queues = _optional_types()
        if _is_exact(tp, queues["queue"]):
            return _inner_len(obj, "queue")
        if _is_exact(tp, queues["asyncio"]):
            return _inner_len(obj, "_queue")
        if _is_exact(tp, queues["simple"]):
            return obj.qsize()  # type: ignore[attr-defined]  # C method of an exact type
    except Exception:
        pass
    return None


def safe_children(obj: object, *, max_items: int = 200) -> list[tuple[str, object]]:
    """(label, child) pairs an inspector can expand, found without running host code."""
    try:
        return _children(obj, max(0, int(max_items)))
    except Exception:
        return []


# ---------------------------------------------------------------------------- names and types


def _exact_str(value: object) -> str | None:
    """value as an exact str (a str subclass is copied by str.__str__, running none of its code)."""
    if type(value) is str:
        return value
    if issubclass(type(value), str):  # type(...) and issubclass on a plain type: no user code
        return str.__str__(value)  # type: ignore[arg-type]
    return None


def _class_name(cls: type) -> str:
    """'module.QualName' of a class from its C-level slots; 'builtins.' is dropped."""
    try:
        qualname = _exact_str(_type_qualname(cls))
    except Exception:
        qualname = None
    try:
        module = _exact_str(_type_module(cls))
    except Exception:
        module = None
    qualname = "?" if qualname is None else qualname[:_NAME_CAP]
    if module is None or module == "builtins":
        return qualname
    return f"{module[:_NAME_CAP]}.{qualname}"


def _short_class_name(cls: type) -> str:
    """A class's __name__ (as exception reprs show it), read from its C-level slot."""
    try:
        name = _exact_str(_type_name(cls))
    except Exception:
        name = None
    return "?" if name is None else name[:_NAME_CAP]


def _is_exact(tp: type, table: dict[int, type]) -> bool:
    """Whether tp is in an id-keyed table (tp is not hashed: a metaclass may define __hash__)."""
    return table.get(id(tp)) is tp


def _by_id(*classes: type | None) -> dict[int, type]:
    """An id -> type table of the given (present) types."""
    return {id(cls): cls for cls in classes if cls is not None}


_SIZED = _by_id(
    str,
    bytes,
    bytearray,
    list,
    tuple,
    dict,
    set,
    frozenset,
    range,
    collections.deque,
    collections.OrderedDict,
    collections.defaultdict,
    collections.Counter,
)


def _loaded_class(module_name: str, attr: str) -> type | None:
    """A class from a module only if the host already imported it (we import nothing)."""
    module = sys.modules.get(module_name)
    if module is None or not issubclass(type(module), types.ModuleType):
        return None
    namespace = _module_ns(module)  # no module __getattr__ / lazy loading runs
    if type(namespace) is not dict:
        return None
    cls = dict.get(namespace, attr)
    return cls if issubclass(type(cls), type) else None


_optional_cache: tuple[int, dict[str, dict[int, type]]] = (-1, {})


def _optional_types() -> dict[str, dict[int, type]]:
    """Tables of the stdlib types we special-case, from modules the host has loaded."""
    global _optional_cache
    count, tables = _optional_cache
    if count == len(sys.modules):
        return tables
    count = len(sys.modules)

    def load(module_name: str, *names: str) -> dict[int, type]:
        """Table of the named classes of one module, if loaded."""
        return _by_id(*(_loaded_class(module_name, name) for name in names))

    tables = {
        "decimal": load("decimal", "Decimal"),
        "uuid": load("uuid", "UUID"),
        "path": load("pathlib", "PurePosixPath", "PureWindowsPath", "PosixPath", "WindowsPath"),
        "zoneinfo": load("zoneinfo", "ZoneInfo"),
        "queue": load("queue", "Queue", "LifoQueue", "PriorityQueue"),
        "simple": load("queue", "SimpleQueue"),
        "asyncio": load("asyncio.queues", "Queue", "LifoQueue", "PriorityQueue"),
    }
    _optional_cache = (count, tables)
    return tables


def _instance_dict(obj: object) -> dict[Any, Any] | None:
    """obj's instance __dict__, only if the type's __dict__ attribute is the standard C getter."""
    tp = type(obj)
    for klass in _type_mro(tp):
        descriptor = _type_ns(klass).get("__dict__")
        if descriptor is None:
            continue
        if type(descriptor) is types.GetSetDescriptorType and _getset_name(descriptor) == (
            "__dict__"
        ):
            namespace = types.GetSetDescriptorType.__get__(descriptor, obj, tp)
            return namespace if type(namespace) is dict else None
        return None  # a property, or anything else a class put there: it could run code
    return None


def _slot_values(obj: object, seen: set[str], budget: int) -> list[tuple[str, object]]:
    """Values of obj's __slots__, read through member descriptors only."""
    out: list[tuple[str, object]] = []
    tp = type(obj)
    for klass in _type_mro(tp):
        if not _type_flags(klass) & _HEAPTYPE:
            continue
        for descriptor in list(_type_ns(klass).values()):
            if len(out) >= budget:
                return out
            if type(descriptor) is not types.MemberDescriptorType:
                continue
            name = _exact_str(_member_name(descriptor))
            if name is None or name in seen:
                continue
            try:
                value = types.MemberDescriptorType.__get__(descriptor, obj, tp)
            except Exception:  # an unset slot, or a member of another class
                continue
            seen.add(name)
            out.append((name, value))
    return out


def _snapshot(make: Callable[[], Iterable[Any]], count: int) -> list[Any]:
    """Up to count items of an exact builtin container, taken in C (atomic under the GIL)."""
    for _ in range(3):
        try:
            return list(islice(iter(make()), count))
        except RuntimeError:  # changed size during iteration: another thread mutated it
            continue
    return []


def _sensitive_key(key: object) -> bool:
    """Whether a dict key names a secret: a str/bytes name, or a tuple key with one in it
    (``('db', 'password')``)."""
    if type(key) is tuple:
        return any(_sensitive_name(item) for item in key[:_TUPLE_KEY_ITEMS])
    return _sensitive_name(key)


def _sensitive_name(key: object) -> bool:
    """Whether a str or bytes names a secret."""
    tp = type(key)
    if tp is str or tp is bytes or issubclass(tp, str):
        return is_sensitive(key)  # type: ignore[arg-type]
    return False


def _name_text(item: object) -> str | None:
    """A str/bytes item as an exact str (bytes as latin-1), else None."""
    if type(item) is bytes:
        return item.decode("latin-1")
    return _exact_str(item)


def _is_field_name(text: str | None) -> bool:
    """Whether text is a header or field name naming a secret ("X-Auth-Token")."""
    return text is not None and _NAME_ONLY_RE.fullmatch(text) is not None and is_sensitive(text)


def _masked(items: list[Any], count: int) -> set[int]:
    """Indices of a list's or tuple's shown items that hold secrets because of their
    neighbours: the value of a (name, value) pair or (identity, name, value) entry naming a
    secret, the value after a secret flag (``['--password', x]``), a (user, password) pair."""
    masked: set[int] = set()
    if 2 <= count <= 3 and len(items) == count:
        names = [_name_text(item) for item in items]
        first = names[0]
        if first is not None and is_sensitive(first):
            folded = first.casefold()
            masked.update(
                i for i in range(1, count) if names[i] is None or names[i].casefold() != folded
            )
        elif count == 3 and _is_field_name(names[1]):
            masked.add(2)
        if (
            count == 2
            and names[0] is not None
            and names[1] is not None
            and type(items[0]) is type(items[1])
            and _USER_RE.fullmatch(names[0])
            and looks_like_password(names[1])
        ):
            masked.add(1)
    for index in range(len(items) - 1):
        text = _name_text(items[index])
        if text is not None and is_secret_flag(text):
            masked.add(index + 1)
    return masked


def _inner_len(obj: object, attr: str) -> int | None:
    """len() of a stdlib queue's underlying deque/list, read from the instance dict."""
    namespace = _instance_dict(obj)
    if namespace is None:
        return None
    inner = dict.get(namespace, attr)
    if type(inner) is collections.deque or type(inner) is list:
        return len(inner)
    return None


def _clip(text: str, limit: int) -> str:
    """text cut to limit characters, marked with an ellipsis when cut."""
    if len(text) <= limit:
        return text
    return text[: max(0, limit - 1)] + _TRUNCATED


# ---------------------------------------------------------------------------- children


def _children(obj: object, max_items: int) -> list[tuple[str, object]]:
    """Body of safe_children."""
    tp = type(obj)
    if tp is list or tp is tuple or tp is collections.deque:
        items = _snapshot(lambda: obj, max_items)  # type: ignore[return-value]
        masked = _masked(items, len(obj))  # type: ignore[arg-type]
        return [(f"[{i}]", REDACTED if i in masked else item) for i, item in enumerate(items)]
    if _is_exact(tp, _DICT_TYPES):
        pairs = _snapshot(obj.items, max_items)  # type: ignore[attr-defined]
        return [
            (safe_repr(key, max_len=_LABEL_LEN), REDACTED if _sensitive_key(key) else value)
            for key, value in pairs
        ]
    if tp is set or tp is frozenset:
        return [(f"{{{i}}}", item) for i, item in enumerate(_snapshot(lambda: obj, max_items))]
    if _is_exact(tp, _LEAF_TYPES):
        return []
    if issubclass(tp, type):
        namespace = _type_ns(obj)
        pairs = _snapshot(namespace.items, max_items)
        return [(_attr_label(key), _attr_value(key, value)) for key, value in pairs]
    out: list[tuple[str, object]] = []
    secret: set[int] = set()  # indices in out whose value is masked
    if issubclass(tp, BaseException):
        out.append(("args", _exc_args(obj)))
    is_module = issubclass(tp, types.ModuleType)
    namespace = _module_ns(obj) if is_module else _instance_dict(obj)
    seen: set[str] = set()
    if type(namespace) is dict:
        for key, value in _snapshot(namespace.items, max(0, max_items - len(out))):
            label = _attr_label(key)
            seen.add(label)
            if _sensitive_key(key):
                secret.add(len(out))
            out.append((label, value))
    out.extend(_slot_values(obj, seen, max(0, max_items - len(out))))
    # an entry (multidict's, a cookie, a form field) whose name names a secret: its value is one
    entry = any(label in _NAME_ATTRS and _is_field_name(_name_text(v)) for label, v in out)
    return [
        (
            label,
            REDACTED
            if i in secret or is_sensitive(label) or (entry and label in _VALUE_ATTRS)
            else v,
        )
        for i, (label, v) in enumerate(out)
    ]


def _attr_label(key: object) -> str:
    """Label of an attribute: its name, or a safe repr for a non-str key."""
    name = _exact_str(key)
    return name[:_NAME_CAP] if name is not None else safe_repr(key, max_len=_LABEL_LEN)


def _attr_value(key: object, value: object) -> object:
    """The value of an attribute, or REDACTED when its name names a secret."""
    return REDACTED if _sensitive_key(key) else value


_DICT_TYPES = _by_id(*_DICT_LIKE)
_LEAF_TYPES = _by_id(
    type(None), bool, int, float, complex, str, bytes, bytearray, range, slice, type(...)
)


# ---------------------------------------------------------------------------- rendering


class _Renderer:
    """Writes a repr into a list of parts, stopping (raising _Full) once limit is reached."""

    __slots__ = ("active", "limit", "max_depth", "max_items", "parts", "size")

    def __init__(self, limit: int, max_depth: int, max_items: int) -> None:
        """A renderer with the caller's limits and an empty output."""
        self.limit = limit
        self.max_depth = max_depth
        self.max_items = max_items
        self.parts: list[str] = []
        self.size = 0
        self.active: set[int] = set()  # ids of the containers being rendered (cycle detection)

    def write(self, text: str) -> None:
        """Append text, or as much as fits and stop."""
        room = self.limit - self.size
        if len(text) > room:
            self.parts.append(text[:room])
            self.size = self.limit
            raise _Full
        self.parts.append(text)
        self.size += len(text)

    def render(self, obj: object, depth: int) -> None:
        """Write the repr of any object; an internal failure shows as <unrepresentable T>."""
        mark = (len(self.parts), self.size)
        try:
            self._dispatch(obj, depth)
        except _Full:
            raise
        except Exception:
            del self.parts[mark[0] :]
            self.size = mark[1]
            self.write(f"<unrepresentable {safe_type_name(obj)}>")

    def _dispatch(self, obj: object, depth: int) -> None:
        """Pick the renderer for type(obj): exact builtin types only, else a generic form."""
        tp = type(obj)
        entry = _HANDLERS.get(id(tp))
        if entry is not None and entry[0] is tp:
            entry[1](self, obj, depth)
            return
        optional = _optional_types()
        if _is_exact(tp, optional["decimal"]) or _is_exact(tp, optional["path"]):
            self.write(repr(obj))  # stdlib code of an exact type: no user code
        elif _is_exact(tp, optional["uuid"]):
            self._uuid(obj)
        elif _is_exact(tp, optional["zoneinfo"]):
            self.write("zoneinfo.ZoneInfo(key=")
            self.render(obj.key, depth + 1)  # type: ignore[attr-defined]
            self.write(")")
        elif issubclass(tp, type):
            self._class(obj)  # type: ignore[arg-type]
        elif issubclass(tp, BaseException):
            self._exception(obj, depth)  # type: ignore[arg-type]
        else:
            self._default(obj)

    # -- scalars

    def _plain(self, obj: object, depth: int) -> None:
        """Types whose builtin repr is C code over plain data (None, bool, float, date...)."""
        self.write(repr(obj))

    def _int(self, obj: int, depth: int) -> None:
        """An int; one too long to show (or to convert at all) is summarised by its size."""
        digits = int(obj.bit_length() * 0.30103) + 1
        if digits > self.limit + 64:
            self.write(f"<int with ~{digits} digits>")
            return
        try:
            text = int.__repr__(obj)
        except ValueError:  # beyond sys.get_int_max_str_digits()
            text = f"<int with ~{digits} digits>"
        self.write(text)

    def _str(self, obj: str, depth: int) -> None:
        """A str, redacted; only a window a little larger than the room left is processed."""
        text, partial = self._window(obj)
        self._write_quoted(repr(text), partial)

    def _bytes(self, obj: bytes, depth: int) -> None:
        """A bytes object, redacted like text (latin-1 maps bytes to chars one to one)."""
        text, partial = self._window(obj)
        self._write_quoted(repr(text), partial)

    def _bytearray(self, obj: bytearray, depth: int) -> None:
        """A bytearray, shown as bytearray(b'...')."""
        self.write("bytearray(")
        text, partial = self._window(obj)
        self._write_quoted(repr(text), partial)
        self.write(")")

    def _window(self, obj: str | bytes | bytearray) -> tuple[Any, bool]:
        """Redacted prefix of obj worth showing, and whether it is only a part of it."""
        window = self.limit - self.size + 2
        cut = window + _REDACT_MARGIN
        partial = len(obj) > cut
        piece = obj[:cut] if partial else obj
        text = piece if type(piece) is str else bytes(piece).decode("latin-1")
        redacted = redact_text(text)
        if len(redacted) > window:
            redacted = redacted[:window]
            partial = True
        if type(piece) is str:
            return redacted, partial
        if redacted == text and not partial:
            return bytes(piece), False
        return redacted.encode("latin-1"), partial

    def _write_quoted(self, text: str, partial: bool) -> None:
        """Write a quoted repr; a partial one loses its closing quote and ends the output."""
        if partial:
            self.write(text[:-1])
            raise _Full
        self.write(text)

    # -- containers

    def _seq(
        self,
        obj: Any,
        depth: int,
        brackets: str,
        items: list[Any],
        count: int,
        masked: set[int] | frozenset[int] = frozenset(),
    ) -> None:
        """Items of a list/tuple/set/deque between brackets, with depth/cycle/item limits;
        the items at ``masked`` indices show as the mask."""
        opening, closing = brackets[0], brackets[1]
        if count == 0:
            self.write(brackets)
            return
        if id(obj) in self.active or depth >= self.max_depth:
            self.write(f"{opening}...{closing}")
            return
        self.active.add(id(obj))
        try:
            self.write(opening)
            for index, item in enumerate(items):
                if index:
                    self.write(", ")
                if index in masked:
                    self.write(REDACTED)
                else:
                    self.render(item, depth + 1)
            more = count - len(items)
            if more > 0:
                self.write(f"{', ' if items else ''}..., +{more} more")
            elif count == 1 and brackets == "()":
                self.write(",")
            self.write(closing)
        finally:
            self.active.discard(id(obj))

    def _list(self, obj: list[Any], depth: int) -> None:
        """A list; values that a neighbour marks as secret are masked (see _masked)."""
        count = len(obj)
        items = obj[: self.max_items]
        self._seq(obj, depth, "[]", items, count, _masked(items, count))

    def _tuple(self, obj: tuple[Any, ...], depth: int) -> None:
        """A tuple; values that a neighbour marks as secret are masked (see _masked)."""
        count = len(obj)
        items = list(obj[: self.max_items])
        self._seq(obj, depth, "()", items, count, _masked(items, count))

    def _set(self, obj: set[Any] | frozenset[Any], depth: int) -> None:
        """A set or frozenset, as set()/frozenset() when empty like the builtin repr."""
        count = len(obj)
        frozen = type(obj) is frozenset
        if count == 0:
            self.write("frozenset()" if frozen else "set()")
            return
        if frozen:
            self.write("frozenset(")
        self._seq(obj, depth, "{}", _snapshot(lambda: obj, self.max_items), count)
        if frozen:
            self.write(")")

    def _deque(self, obj: collections.deque[Any], depth: int) -> None:
        """A collections.deque, with its maxlen."""
        self.write("deque(")
        items = _snapshot(lambda: obj, self.max_items)
        self._seq(obj, depth, "[]", items, len(obj), _masked(items, len(obj)))
        if obj.maxlen is not None:
            self.write(f", maxlen={obj.maxlen}")
        self.write(")")

    def _dict(self, obj: dict[Any, Any], depth: int) -> None:
        """A dict: keys and values, secrets masked by key name."""
        count = len(obj)
        if count == 0:
            self.write("{}")
            return
        if id(obj) in self.active or depth >= self.max_depth:
            self.write("{...}")
            return
        self.active.add(id(obj))
        try:
            self.write("{")
            pairs = _snapshot(obj.items, self.max_items)
            for index, (key, value) in enumerate(pairs):
                if index:
                    self.write(", ")
                self.render(key, depth + 1)
                self.write(": ")
                if _sensitive_key(key):
                    self.write(REDACTED)
                else:
                    self.render(value, depth + 1)
            more = count - len(pairs)
            if more > 0:
                self.write(f"{', ' if pairs else ''}..., +{more} more")
            self.write("}")
        finally:
            self.active.discard(id(obj))

    def _dict_subtype(self, obj: dict[Any, Any], depth: int) -> None:
        """An exact OrderedDict/defaultdict/Counter: Name({...}) (defaultdict with its factory)."""
        name = _short_class_name(type(obj))
        self.write(f"{name}(")
        if type(obj) is collections.defaultdict:
            self.render(obj.default_factory, depth + 1)
            self.write(", ")
        elif not obj:
            self.write(")")
            return
        self._dict(obj, depth)
        self.write(")")

    def _range(self, obj: range, depth: int) -> None:
        """A range, components rendered as ints (which may be huge)."""
        self.write("range(")
        self._int(obj.start, depth)
        self.write(", ")
        self._int(obj.stop, depth)
        if obj.step != 1:
            self.write(", ")
            self._int(obj.step, depth)
        self.write(")")

    def _slice(self, obj: slice, depth: int) -> None:
        """A slice; its components can be any objects."""
        self.write("slice(")
        self.render(obj.start, depth + 1)
        self.write(", ")
        self.render(obj.stop, depth + 1)
        self.write(", ")
        self.render(obj.step, depth + 1)
        self.write(")")

    # -- code, classes, modules

    def _class(self, cls: type) -> None:
        """A class, as <class 'module.QualName'>."""
        self.write(f"<class '{_class_name(cls)}'>")

    def _function(self, obj: types.FunctionType, depth: int) -> None:
        """A Python function, by qualified name."""
        name = _exact_str(_func_qualname(obj)) or "?"
        self.write(f"<function {name[:_NAME_CAP]} at {_address(obj)}>")

    def _builtin(self, obj: types.BuiltinFunctionType, depth: int) -> None:
        """A builtin function or method of a builtin object."""
        name = (_exact_str(_builtin_name(obj)) or "?")[:_NAME_CAP]
        owner = _builtin_self(obj)
        if owner is None or issubclass(type(owner), types.ModuleType):
            self.write(f"<built-in function {name}>")
        else:
            kind = _class_name(type(owner))
            self.write(f"<built-in method {name} of {kind} object at {_address(owner)}>")

    def _method(self, obj: types.MethodType, depth: int) -> None:
        """A bound method: function name and a safe repr of what it is bound to."""
        func = _method_func(obj)
        if type(func) is types.FunctionType:
            name = _exact_str(_func_qualname(func)) or "?"
        elif type(func) is types.BuiltinFunctionType:
            name = _exact_str(_builtin_name(func)) or "?"
        else:
            name = _class_name(type(func))
        self.write(f"<bound method {name[:_NAME_CAP]} of ")
        self.render(_method_self(obj), depth + 1)
        self.write(">")

    def _module(self, obj: types.ModuleType, depth: int) -> None:
        """A module, by the __name__ in its namespace (no module __getattr__ runs)."""
        namespace = _module_ns(obj)
        name = _exact_str(dict.get(namespace, "__name__")) if type(namespace) is dict else None
        self.write(f"<module {repr(name[:_NAME_CAP]) if name is not None else '?'}>")

    def _generator(self, obj: object, depth: int) -> None:
        """A coroutine, generator or async generator, by qualified name."""
        _, kind, get_qualname = _GEN_QUALNAMES[id(type(obj))]
        name = _exact_str(get_qualname(obj)) or "?"
        self.write(f"<{kind} object {name[:_NAME_CAP]} at {_address(obj)}>")

    def _exception(self, obj: BaseException, depth: int) -> None:
        """An exception, as Name(args...) from its args (its __repr__/__str__ never run)."""
        args = _exc_args(obj)
        self.write(_short_class_name(type(obj)))
        if type(args) is not tuple:
            self.write("(?)")
        elif len(args) == 1:
            self.write("(")
            self.render(args[0], depth + 1)
            self.write(")")
        else:
            self._seq(args, depth, "()", list(args[: self.max_items]), len(args))

    def _default(self, obj: object) -> None:
        """Any other object: <module.QualName object at 0x...>."""
        self.write(f"<{_class_name(type(obj))} object at {_address(obj)}>")

    # -- exact stdlib types

    def _datetime(self, obj: datetime.datetime | datetime.time, depth: int) -> None:
        """A datetime or time; the tzinfo (possibly user code) is rendered safely."""
        tz = obj.tzinfo
        if tz is None:
            self.write(repr(obj))
            return
        naive = repr(obj.replace(tzinfo=None))
        self.write(f"{naive[:-1]}, tzinfo=")
        self.render(tz, depth + 1)
        self.write(")")

    def _timezone(self, obj: datetime.timezone, depth: int) -> None:
        """A datetime.timezone (its name could be a str subclass, so it is rendered safely)."""
        if obj is datetime.timezone.utc:
            self.write("datetime.timezone.utc")
            return
        args = obj.__getinitargs__()  # type: ignore[attr-defined]
        self.write(f"datetime.timezone({args[0]!r}")
        if len(args) > 1:
            self.write(", ")
            self.render(args[1], depth + 1)
        self.write(")")

    def _uuid(self, obj: Any) -> None:
        """A uuid.UUID, from its int slot."""
        value = type(obj).__dict__["int"].__get__(obj)
        if type(value) is not int or not 0 <= value < 1 << 128:
            self._default(obj)
            return
        h = f"{value:032x}"
        self.write(f"UUID('{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}')")


def _address(obj: object) -> str:
    """The 0x... address shown in default reprs."""
    return f"0x{id(obj):x}"


_HANDLERS: dict[int, tuple[type, Callable[[_Renderer, Any, int], None]]] = {
    id(cls): (cls, handler)
    for cls, handler in [
        (type(None), _Renderer._plain),
        (bool, _Renderer._plain),
        (float, _Renderer._plain),
        (complex, _Renderer._plain),
        (type(...), _Renderer._plain),
        (type(NotImplemented), _Renderer._plain),
        (datetime.date, _Renderer._plain),
        (datetime.timedelta, _Renderer._plain),
        (datetime.datetime, _Renderer._datetime),
        (datetime.time, _Renderer._datetime),
        (datetime.timezone, _Renderer._timezone),
        (int, _Renderer._int),
        (str, _Renderer._str),
        (bytes, _Renderer._bytes),
        (bytearray, _Renderer._bytearray),
        (list, _Renderer._list),
        (tuple, _Renderer._tuple),
        (set, _Renderer._set),
        (frozenset, _Renderer._set),
        (dict, _Renderer._dict),
        (collections.OrderedDict, _Renderer._dict_subtype),
        (collections.defaultdict, _Renderer._dict_subtype),
        (collections.Counter, _Renderer._dict_subtype),
        (collections.deque, _Renderer._deque),
        (range, _Renderer._range),
        (slice, _Renderer._slice),
        (types.FunctionType, _Renderer._function),
        (types.BuiltinFunctionType, _Renderer._builtin),
        (types.MethodType, _Renderer._method),
        (types.ModuleType, _Renderer._module),
        (types.CoroutineType, _Renderer._generator),
        (types.GeneratorType, _Renderer._generator),
        (types.AsyncGeneratorType, _Renderer._generator),
    ]
}
