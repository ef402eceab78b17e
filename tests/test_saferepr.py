"""safe_repr & co. on hostile objects: no host code runs, output stays bounded, data is faithful."""

from __future__ import annotations

import asyncio
import collections
import datetime
import decimal
import pathlib
import queue
import sys
import time
import types
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.redact import REDACTED, is_sensitive, redact_text
from agent.saferepr import safe_children, safe_len, safe_repr, safe_type_name

SLACK = 0  # safe_repr never exceeds max_len at all
TRAPPED = [
    "__repr__",
    "__str__",
    "__format__",
    "__len__",
    "__iter__",
    "__eq__",
    "__ne__",
    "__hash__",
    "__bool__",
    "__getattr__",
    "__getattribute__",
    "__sizeof__",
    "__dir__",
    "__contains__",
    "__getitem__",
    "__reduce__",
    "__reduce_ex__",
]


def _trap(calls: list[str], name: str):
    def method(self, *args, **kwargs):
        calls.append(name)
        raise AssertionError(f"host code ran: {name}")

    return method


def hostile_class(base: type = object, name: str = "Hostile") -> tuple[type, list[str]]:
    """A class whose every dunder (and __class__, properties) records the call and raises."""
    calls: list[str] = []
    namespace = {dunder: _trap(calls, dunder) for dunder in TRAPPED}
    namespace["__class__"] = property(_trap(calls, "__class__"))
    namespace["prop"] = property(_trap(calls, "prop"))
    return type(name, (base,), namespace), calls


def new(cls: type, **attrs: object) -> object:
    """An instance made without running any of cls's methods, with instance attributes set."""
    obj = object.__new__(cls)
    for key, value in attrs.items():
        object.__setattr__(obj, key, value)
    return obj


def check_all(obj: object, calls: list[str], max_len: int = 240) -> str:
    """Run every public function on obj; assert no hostile method ran; return safe_repr."""
    out = safe_repr(obj, max_len=max_len)
    assert len(out) <= max_len + SLACK
    assert isinstance(safe_type_name(obj), str)
    safe_len(obj)
    safe_children(obj)
    safe_children(obj, max_items=1)
    assert calls == []
    return out


def test_hostile_instance_is_never_touched():
    cls, calls = hostile_class()
    obj = new(cls, x=1, password="hunter2")
    out = check_all(obj, calls)
    assert out == f"<{__name__}.Hostile object at 0x{id(obj):x}>"
    assert safe_type_name(obj) == f"{__name__}.Hostile"
    assert safe_len(obj) is None
    assert safe_children(obj) == [("x", 1), ("password", REDACTED)]
    assert calls == []


def test_hostile_objects_inside_containers():
    cls, calls = hostile_class()
    obj = new(cls)
    data = [obj, (obj,), {"a": obj}, frozenset([1]), collections.deque([obj])]
    out = check_all(data, calls, max_len=2000)
    assert out.count("Hostile object at 0x") == 4
    assert [label for label, _ in safe_children(data)] == [f"[{i}]" for i in range(5)]


def test_repr_that_would_loop_forever_is_never_called():
    called = []

    class Loops:
        def __repr__(self):
            called.append("repr")
            raise AssertionError("would loop forever")

    assert safe_repr(Loops()).startswith(f"<{__name__}.")
    assert called == []


def test_repr_that_raises_or_returns_10mb():
    called = []

    class Raises:
        def __repr__(self):
            called.append("raises")
            raise RuntimeError("boom")

    class Huge:
        def __repr__(self):
            called.append("huge")
            return "x" * 10_000_000

    for obj in (Raises(), Huge(), [Huge()] * 1000):
        out = safe_repr(obj, max_len=100)
        assert len(out) <= 100
    assert called == []


def test_getattr_and_getattribute_are_not_used():
    seen = []

    class Recorder:
        def __getattribute__(self, name):
            seen.append(name)
            return object.__getattribute__(self, name)

        def __getattr__(self, name):
            seen.append("getattr:" + name)
            raise AttributeError(name)

    obj = Recorder()
    object.__setattr__(obj, "token", "abc")
    object.__setattr__(obj, "n", 3)
    assert safe_repr(obj).endswith(f"Recorder object at 0x{id(obj):x}>")
    assert safe_children(obj) == [("token", REDACTED), ("n", 3)]
    assert safe_len(obj) is None
    assert seen == []


def test_metaclass_with_hostile_getattribute():
    calls: list[str] = []
    armed = [False]

    class EvilMeta(type):
        def __getattribute__(cls, name):
            if armed[0]:
                calls.append(name)
                raise AssertionError(name)
            return type.__getattribute__(cls, name)

        def __repr__(cls):
            calls.append("meta repr")
            raise AssertionError("meta repr")

        def __eq__(cls, other):
            if armed[0]:
                calls.append("meta eq")
            return NotImplemented

        def __hash__(cls):
            if armed[0]:
                calls.append("meta hash")
            return 0

    class Victim(metaclass=EvilMeta):
        api_key = "hunter2"

        def __init__(self):
            self.value = 1

    obj = Victim()
    class_repr = f"<class '{__name__}.{Victim.__qualname__}'>"
    armed[0] = True
    try:
        assert safe_repr(Victim) == class_repr
        assert "Victim object at 0x" in safe_repr(obj)
        assert safe_type_name(obj).endswith("Victim")
        assert safe_children(obj) == [("value", 1)]
        assert ("api_key", REDACTED) in safe_children(Victim)
        assert safe_len(obj) is None
        assert "hunter2" not in safe_repr({"x": [obj, Victim]})
    finally:
        armed[0] = False
    assert calls == []


def test_hostile_names_on_the_class():
    calls: list[str] = []

    class EvilStr(str):
        __repr__ = _trap(calls, "str repr")
        __str__ = _trap(calls, "str str")
        __format__ = _trap(calls, "str format")
        lower = _trap(calls, "str lower")

    hostile, hostile_calls = hostile_class()

    class Odd:
        __module__ = new(hostile)  # type: ignore[assignment]

    Odd.__qualname__ = EvilStr("Odd")
    obj = Odd()
    assert safe_repr(obj) == f"<Odd object at 0x{id(obj):x}>"
    assert safe_type_name(obj) == "Odd"
    assert safe_repr(Odd) == "<class 'Odd'>"
    # a str subclass as a dict key: shown as an object, but its secret value is still masked
    data = {EvilStr("password"): "hunter2"}
    assert "hunter2" not in safe_repr(data)
    assert safe_children(data)[0][1] == REDACTED
    assert calls == []
    assert hostile_calls == []


def test_raising_len_iter_eq_hash_in_keys():
    calls: list[str] = []
    armed = [False]

    class Key:
        def __hash__(self):
            if armed[0]:
                calls.append("hash")
                raise AssertionError("hash")
            return 1

        def __eq__(self, other):
            if armed[0]:
                calls.append("eq")
                raise AssertionError("eq")
            return self is other

        def __len__(self):
            calls.append("len")
            raise AssertionError("len")

        def __iter__(self):
            calls.append("iter")
            raise AssertionError("iter")

    a, b = Key(), Key()
    inner = {a}
    data = {a: 1, b: 2, "k": inner}
    armed[0] = True
    try:
        out = check_all(data, calls, max_len=1000)
        assert out.count("Key object at 0x") == 3
        children = [child for _, child in safe_children(data)]
        assert children[:2] == [1, 2]
        assert children[2] is inner
        assert safe_len(data) == 3
        assert safe_len(a) is None
    finally:
        armed[0] = False


def test_container_subclasses_are_not_rendered_structurally():
    calls: list[str] = []

    class MyList(list):
        __repr__ = _trap(calls, "repr")
        __iter__ = _trap(calls, "iter")
        __len__ = _trap(calls, "len")
        __getitem__ = _trap(calls, "getitem")

    class MyDict(dict):
        __repr__ = _trap(calls, "repr")
        __iter__ = _trap(calls, "iter")
        __len__ = _trap(calls, "len")
        items = _trap(calls, "items")
        keys = _trap(calls, "keys")

    class MyStr(str):
        __repr__ = _trap(calls, "repr")

    for obj in (MyList([1, 2]), MyDict(a=1), MyStr("x"), [MyList(), MyDict()]):
        out = check_all(obj, calls)
        assert "object at 0x" in out
        assert safe_len(obj) == (2 if type(obj) is list else None)


def test_recursive_containers_match_builtin_repr():
    lst: list[object] = [1]
    lst.append(lst)
    dct: dict[str, object] = {"a": 1}
    dct["self"] = dct
    both: list[object] = [dct, lst]
    for obj in (lst, dct, both):
        assert safe_repr(obj, max_depth=10) == repr(obj)


def test_deeply_nested_list_does_not_hit_recursion_limit():
    deep: list[object] = []
    node = deep
    for _ in range(10_000):
        child: list[object] = []
        node.append(child)
        node = child
    assert safe_repr(deep) == "[[[[...]]]]"
    out = safe_repr(deep, max_depth=10**6, max_len=100)
    assert len(out) <= 100
    assert safe_children(deep)[0][0] == "[0]"
    nested_dict: dict[str, object] = {}
    cur = nested_dict
    for _ in range(10_000):
        cur["x"] = {}
        cur = cur["x"]  # type: ignore[assignment]
    assert safe_repr(nested_dict) == "{'x': {'x': {'x': {...}}}}"


@pytest.mark.parametrize(
    "make",
    [
        lambda: list(range(1_000_000)),
        lambda: tuple(range(1_000_000)),
        lambda: dict.fromkeys(range(1_000_000)),
        lambda: set(range(1_000_000)),
        lambda: collections.deque(range(1_000_000)),
        lambda: "password=" + "x" * 10_000_000,
        lambda: b"y" * 10_000_000,
        lambda: bytearray(10_000_000),
        lambda: ["z" * 1_000_000] * 1000,
    ],
    ids=["list", "tuple", "dict", "set", "deque", "str", "bytes", "bytearray", "strs"],
)
def test_huge_containers_are_fast_and_truncated(make):
    obj = make()
    start = time.perf_counter()
    out = safe_repr(obj)
    children = safe_children(obj)
    elapsed = time.perf_counter() - start
    assert elapsed < 0.5
    assert len(out) <= 240
    assert len(children) <= 200
    if safe_len(obj) == 1_000_000:
        assert "..., +999980 more" in out
    else:
        assert out.endswith("…")
    if type(obj) is str:
        assert "xxx" not in out  # the value of password= is masked even far beyond the cut


def test_huge_int():
    big = 10**100_000
    assert safe_repr(big) == "<int with ~100001 digits>"
    assert safe_repr([big, 1]) == "[<int with ~100001 digits>, 1]"
    assert safe_repr(range(big)).startswith("range(0, <int with ~")
    assert safe_repr(2**64) == repr(2**64)
    if hasattr(sys, "set_int_max_str_digits"):
        old = sys.get_int_max_str_digits()
        sys.set_int_max_str_digits(640)
        try:
            assert safe_repr(10**700, max_len=10_000) == "<int with ~701 digits>"
        finally:
            sys.set_int_max_str_digits(old)


def test_dict_property_and_slots_are_not_run():
    calls: list[str] = []

    class DictProperty:
        @property
        def __dict__(self):  # type: ignore[override]
            calls.append("__dict__")
            raise AssertionError("__dict__")

    class Slotted:
        __slots__ = ("a", "secret", "unset")

        def __init__(self):
            self.a = 1
            self.secret = "hunter2"

    class ShadowedSlot(Slotted):
        __slots__ = ()
        a = property(_trap(calls, "a"))  # type: ignore[assignment]

    obj = DictProperty()
    check_all(obj, calls)
    assert safe_children(obj) == []
    assert safe_children(Slotted()) == [("a", 1), ("secret", REDACTED)]
    assert safe_children(new(ShadowedSlot)) == []
    shadowed = object.__new__(ShadowedSlot)
    Slotted.__dict__["a"].__set__(shadowed, 5)
    assert safe_children(shadowed) == [("a", 5)]
    assert calls == []


def test_exceptions_render_from_args_only():
    calls: list[str] = []

    class Boom(Exception):
        __repr__ = _trap(calls, "repr")
        __str__ = _trap(calls, "str")
        args = property(_trap(calls, "args"))  # type: ignore[assignment]

    exc = Boom("bad", 2)
    assert safe_repr(exc) == "Boom('bad', 2)"
    assert safe_repr(ValueError("x")) == repr(ValueError("x"))
    assert safe_repr(KeyError()) == repr(KeyError())
    assert safe_repr(ValueError("postgres://u:pw@h")) == f"ValueError('postgres://u:{REDACTED}@h')"
    assert safe_children(exc)[0] == ("args", ("bad", 2))
    assert calls == []


def test_bound_methods_functions_modules_types():
    cls, calls = hostile_class()
    obj = new(cls)

    def func():
        return None

    method = types.MethodType(func, obj)
    out = safe_repr(method)
    assert out.startswith("<bound method test_bound_methods_functions_modules_types.<locals>.func")
    assert "Hostile object at 0x" in out
    assert safe_repr(func) == repr(func)
    assert safe_repr(len) == repr(len)
    assert safe_repr([].append).startswith("<built-in method append of list object at 0x")
    assert safe_repr(sys) == "<module 'sys'>"
    assert safe_repr(int) == repr(int)
    assert safe_repr(collections.OrderedDict) == repr(collections.OrderedDict)
    assert safe_repr(cls) == f"<class '{__name__}.Hostile'>"
    assert calls == []


def test_module_with_getattr_is_not_called():
    calls: list[str] = []
    mod = types.ModuleType("fake_mod")
    mod.__getattr__ = _trap(calls, "module getattr")  # type: ignore[method-assign]
    mod.db_password = "hunter2"  # type: ignore[attr-defined]
    assert safe_repr(mod) == "<module 'fake_mod'>"
    assert ("db_password", REDACTED) in safe_children(mod)
    assert calls == []


def test_stdlib_value_types_match_builtin_repr():
    values = [
        datetime.datetime(2024, 5, 6, 7, 8, 9, 10),
        datetime.datetime(2024, 5, 6, tzinfo=datetime.timezone.utc),
        datetime.datetime(2024, 5, 6, tzinfo=datetime.timezone(datetime.timedelta(hours=2))),
        datetime.date(2024, 5, 6),
        datetime.time(1, 2, 3),
        datetime.timedelta(days=1, seconds=5),
        decimal.Decimal("1.50"),
        uuid.UUID("12345678-1234-5678-1234-567812345678"),
        pathlib.PurePosixPath("/etc/hosts"),
        pathlib.Path("relative"),
        collections.deque([1, 2], maxlen=3),
        collections.defaultdict(list, {"a": [1]}),
        collections.Counter({"a": 1}),
        range(3, 10, 2),
        slice(1, None, 2),
        Ellipsis,
        NotImplemented,
        complex(1, -2),
    ]
    for value in values:
        assert safe_repr(value) == repr(value)


def test_user_tzinfo_is_not_called():
    calls: list[str] = []

    class Zone(datetime.tzinfo):
        __repr__ = _trap(calls, "repr")

        def utcoffset(self, dt):
            return datetime.timedelta(0)

    when = datetime.datetime(2024, 1, 2, 3, 4, tzinfo=Zone())
    out = safe_repr(when)
    assert out.startswith("datetime.datetime(2024, 1, 2, 3, 4, tzinfo=<")
    assert "Zone object at 0x" in out
    assert calls == []


def test_redaction_in_nested_values():
    data = {
        "user": "bob",
        "password": "hunter2",
        "nested": {"apiKey": ["s3cret"], "dsn": "postgres://u:pw@db/x"},
        "headers": [("Authorization", "Basic abc"), ("Accept", "*/*")],
        "blob": b"token=abc",
    }
    out = safe_repr(data, max_len=1000, max_depth=5)
    assert "hunter2" not in out
    assert "s3cret" not in out
    assert ":pw@" not in out
    assert "Basic abc" not in out
    assert "abc" not in out
    assert "'Accept', '*/*'" in out
    children = dict(safe_children(data))
    assert children["'password'"] == REDACTED
    assert children["'user'"] == "bob"


def test_safe_len_of_queues_and_containers():
    sync_queue: queue.Queue[int] = queue.Queue()
    sync_queue.put(1)
    sync_queue.put(2)
    lifo: queue.LifoQueue[int] = queue.LifoQueue()
    lifo.put(1)
    prio: queue.PriorityQueue[int] = queue.PriorityQueue()
    simple: queue.SimpleQueue[int] = queue.SimpleQueue()
    simple.put(1)
    async_queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(3):
        async_queue.put_nowait(i)
    async_prio: asyncio.PriorityQueue[int] = asyncio.PriorityQueue()
    async_prio.put_nowait(1)
    assert safe_len(sync_queue) == 2
    assert safe_len(lifo) == 1
    assert safe_len(prio) == 0
    assert safe_len(simple) == 1
    assert safe_len(async_queue) == 3
    assert safe_len(async_prio) == 1
    assert safe_len(collections.deque([1])) == 1
    assert safe_len("abc") == 3
    assert safe_len(range(10**30)) is None  # OverflowError in len(): no answer, no exception
    assert safe_len(3) is None

    class MyQueue(queue.Queue):
        def qsize(self):
            raise AssertionError("user code")

    assert safe_len(MyQueue()) is None
    broken = queue.Queue()
    broken.queue = new(hostile_class()[0])  # type: ignore[assignment]
    assert safe_len(broken) is None


def test_coroutine_and_generator_reprs():
    async def task_body(secret):
        return secret

    coro = task_body("hunter2")
    try:
        assert safe_repr(coro) == repr(coro)
    finally:
        coro.close()
    gen = (i for i in range(3))
    assert safe_repr(gen) == repr(gen)


def test_length_bound_for_every_max_len():
    cls, calls = hostile_class()
    value = {"k" * 50: [new(cls), "x" * 300, 10**200, b"\x00" * 100, {1, 2, 3}]}
    for max_len in range(1, 400, 7):
        assert len(safe_repr(value, max_len=max_len)) <= max_len
    assert calls == []


# ---------------------------------------------------------------------------- properties

leaves = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=20)
    | st.binary(max_size=20)
)
nested = st.recursive(
    leaves,
    lambda children: (
        st.lists(children, max_size=5)
        | st.lists(children, max_size=5).map(tuple)
        | st.dictionaries(st.text(alphabet="xyzqw", max_size=5), children, max_size=5)
    ),
    max_leaves=25,
)


def redactable(value: object) -> bool:
    """Whether safe_repr is expected to mask something in value (so it differs from repr)."""
    if type(value) is str:
        return redact_text(value) != value
    if type(value) is bytes:
        return redact_text(value.decode("latin-1")) != value.decode("latin-1")
    if type(value) in (list, tuple):
        # a neighbour may mark an item secret: a secret name or flag next to it, or a pair of
        # strings that may be (user, password) (an over-approximation: only repr is skipped)
        texts = [item for item in value if type(item) in (str, bytes)]
        if any(is_sensitive(text) for text in texts) or len(value) == len(texts) == 2:
            return True
        return any(redactable(item) for item in value)
    if type(value) is dict:
        return any(redactable(k) or redactable(v) for k, v in value.items())
    return False


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=nested, max_len=st.integers(1, 300), max_depth=st.integers(0, 4))
def test_safe_repr_on_arbitrary_builtin_data(value, max_len, max_depth):
    out = safe_repr(value, max_len=max_len, max_depth=max_depth)
    assert isinstance(out, str)
    assert len(out) <= max_len
    full = safe_repr(value, max_depth=100, max_items=10_000)
    expected = repr(value)
    if len(expected) <= 240 and not redactable(value):
        assert full == expected
    children = safe_children(value)
    if type(value) in (list, tuple):
        assert [child for _, child in children] == list(value)[:200] or redactable(value)
    elif type(value) is dict:
        assert [child for _, child in children] == list(value.values())[:200]
        assert [label for label, _ in children] == [safe_repr(key, max_len=100) for key in value][
            :200
        ]
    else:
        assert children == []
    if type(value) in (list, tuple, dict, str, bytes):
        assert safe_len(value) == len(value)
