"""Each agent.compat function checked against real asyncio on the running Python.

These run on every supported version (make test-matrix); each fails on the version
where the assumption its function relies on breaks.
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import json
import os
import pkgutil
import selectors
import subprocess
import sys
import threading
import time
import tracemalloc
import weakref
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import pytest

import agent
from agent import compat
from agent.collect.tasks import TaskRegistry, awaited_tasks
from agent.collect.tasktable import awaiting_map
from tests.helpers import LoopThread, wait_until

RUNNING = f"Python {sys.version.split()[0]}"


@pytest.fixture
def lt() -> Iterator[LoopThread]:
    loop_thread = LoopThread("compat-loop")
    yield loop_thread
    loop_thread.stop()


async def forever() -> None:
    await asyncio.sleep(3600)


async def settle() -> None:
    """Give freshly created tasks their first step (they reach their first await)."""
    for _ in range(3):
        await asyncio.sleep(0)


def test_every_task_is_found_and_the_registry_assumption_holds(lt):
    async def make() -> list[asyncio.Task[None]]:
        tasks = [asyncio.create_task(forever(), name=f"t{i}") for i in range(5)]
        await settle()
        return tasks

    made = lt.run(make)
    found = {id(t) for t in TaskRegistry().all_tasks()}
    assert {id(t) for t in made} <= found
    registered = {id(t) for t in compat.registered_tasks()}
    if compat.TASKS_PER_THREAD:  # 3.14+: native tasks are only in the per-thread lists
        assert not {id(t) for t in made} & registered
        assert {id(t) for t in made} <= {id(t) for t in compat.loop_tasks(lt.loop)}
    else:  # up to 3.13 the module registries hold every task, and len() counts them
        assert {id(t) for t in made} <= registered
        assert compat.registered_count() >= len(made)
    assert TaskRegistry().count_tasks() >= len(made)


def test_current_task_is_read_from_another_thread(lt):
    entered, release = threading.Event(), threading.Event()

    async def blocking() -> None:
        entered.set()
        release.wait(10)  # blocks the loop on purpose: this task is current meanwhile

    future = asyncio.run_coroutine_threadsafe(blocking(), lt.loop)
    assert entered.wait(10)
    try:
        current = compat.current_task(lt.loop)
        assert current is not None and current.get_coro().__qualname__.endswith("blocking")
    finally:
        release.set()
        future.result(10)
    assert compat.current_task(lt.loop) is None  # idle loop: nothing runs


def test_task_loop_and_the_loop_thread(lt):
    task = lt.run(lambda: _spawn(forever()))
    assert compat.task_loop(task) is lt.loop
    assert compat.loop_thread_id(lt.loop) == lt.thread.ident


async def _spawn(coro: Any, name: str | None = None) -> asyncio.Task[Any]:
    task = asyncio.create_task(coro, name=name)
    await settle()
    return task


def _owner_and_children(lt: LoopThread, body: Callable[[], Any]) -> tuple[Any, list[Any]]:
    """Start ``body`` as task 'owner'; the tasks it created, once it is suspended."""

    async def make() -> tuple[Any, list[Any]]:
        before = asyncio.all_tasks()
        owner = asyncio.create_task(body(), name="owner")
        await settle()
        children = [t for t in asyncio.all_tasks() - before if t is not owner]
        return owner, children

    return lt.run(make)


async def _direct() -> None:
    await asyncio.create_task(forever())


async def _gather() -> None:
    await asyncio.gather(asyncio.create_task(forever()), asyncio.create_task(forever()))


async def _wait() -> None:
    await asyncio.wait([asyncio.create_task(forever())])


async def _shield() -> None:
    await asyncio.shield(asyncio.create_task(forever()))


async def _taskgroup() -> None:
    async with asyncio.TaskGroup() as group:  # type: ignore[attr-defined]
        group.create_task(forever())
        group.create_task(forever())


SHAPES = {"direct": _direct, "gather": _gather, "wait": _wait, "shield": _shield}
if hasattr(asyncio, "TaskGroup"):
    SHAPES["taskgroup"] = _taskgroup


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_awaited_tasks_are_found_for_every_way_of_awaiting(lt, shape):
    owner, children = _owner_and_children(lt, SHAPES[shape])
    assert children
    assert {id(t) for t in awaited_tasks(owner)} == {id(t) for t in children}


def test_awaited_by_agrees_with_capture_call_graph(lt):
    if not compat.AWAITED_BY:
        assert compat.awaited_by(object()) == frozenset()
        pytest.skip(f"futures record their awaiters from Python 3.14 ({RUNNING})")
    for shape in sorted(SHAPES):
        owner, children = _owner_and_children(lt, SHAPES[shape])
        for child in children:
            graph = asyncio.capture_call_graph(child, limit=0)
            public = {id(g.future) for g in graph.awaited_by}
            assert {id(p) for p in compat.awaited_by(child)} == public == {id(owner)}, shape
        inverted = awaiting_map([owner, *children])
        assert inverted is not None
        assert {id(t) for t in inverted[id(owner)]} == {id(t) for t in children}


def test_private_links_used_up_to_313(lt):
    """_fut_waiter and gather's _children: what awaited_tasks reads before 3.14."""
    if compat.AWAITED_BY:
        pytest.skip(f"not read on {RUNNING}: futures record their awaiters there")
    owner, children = _owner_and_children(lt, _direct)
    assert compat.fut_waiter(owner) is children[0]
    owner, children = _owner_and_children(lt, _gather)
    gathering = compat.fut_waiter(owner)
    assert {id(t) for t in compat.gather_children(gathering)} == {id(t) for t in children}
    owner, children = _owner_and_children(lt, _shield)
    assert compat.shielded(compat.fut_waiter(owner)) is children[0]
    assert compat.shielded(children[0]) is None


def test_taskgroup_tasks(lt):
    if not hasattr(asyncio, "TaskGroup"):
        assert compat.taskgroup_tasks(object()) == []
        pytest.skip(f"TaskGroup needs Python 3.11+ ({RUNNING})")
    seen: dict[str, Any] = {}

    async def body() -> None:
        async with asyncio.TaskGroup() as group:  # type: ignore[attr-defined]
            seen["group"] = group
            group.create_task(forever())
            await asyncio.sleep(3600)

    _owner, children = _owner_and_children(lt, body)
    assert {id(t) for t in compat.taskgroup_tasks(seen["group"])} == {id(t) for t in children}


def test_registered_refs_are_asyncio_own_and_outlive_their_task(lt):
    """Up to 3.13 the registries' weak references tell a task from a later one at the same
    address without a weakref of the agent's own; from 3.14 native tasks are not there."""
    task = lt.run(lambda: _spawn(forever()))
    refs, strong = compat.registered_refs()
    mine = [r for r in refs if r() is task]
    if compat.TASKS_PER_THREAD:
        assert not mine and task not in strong
        return
    assert len(mine) == 1 and type(mine[0]) is weakref.ref
    assert any(r is mine[0] for r in _registry_refs())  # asyncio's very object, not a copy
    held, task_id, box = mine[0], id(task), [task]
    del task, mine

    async def finish() -> None:
        box[0].cancel()
        await asyncio.gather(box.pop(), return_exceptions=True)

    lt.run(finish)
    gc.collect()
    assert held() is None  # the task is gone: a new one at task_id cannot pass for it
    later = [r for r in compat.registered_refs()[0] if id(r()) == task_id]
    assert all(r is not held for r in later)


def _registry_refs() -> list[Any]:
    found = []
    for name in ("_all_tasks", "_scheduled_tasks"):
        registry = getattr(asyncio.tasks, name, None)
        data = getattr(registry, "data", None)
        if type(data) is set:
            found.extend(data)
    return found


def test_local_values_read_a_suspended_coroutines_locals_without_f_locals(lt):
    """gc.get_referents of the coroutine (3.11+) or of its frame (3.10) holds its locals;
    f_locals would leave a dict attached to the frame on 3.10-3.12."""
    marker = asyncio.Event  # an object nothing else in the frame holds

    async def holder() -> None:
        kept = [marker]  # noqa: F841
        child = asyncio.create_task(forever())
        await asyncio.sleep(3600)
        child.cancel()

    owner = lt.run(lambda: _spawn(holder()))
    coro = owner.get_coro()
    frame = coro.cr_frame
    values = compat.local_values(coro, frame)
    assert any(type(v) is list and v == [marker] for v in values)
    assert any(compat.is_task(v) for v in values)
    if sys.version_info < (3, 13):
        assert not any(type(r) is dict and "kept" in r for r in gc.get_referents(frame))


async def _one_await() -> None:
    await asyncio.sleep(3600)  # ONE-AWAIT


async def _three_waits(flag: bool) -> None:
    if flag:
        await asyncio.sleep(3600)  # WAIT-1
    async with asyncio.Lock():  # WAIT-2
        pass
    await asyncio.sleep(3600)  # WAIT-3


def _marked(*marks: str) -> set[int]:
    source = open(__file__).read().splitlines()
    return {i for i, text in enumerate(source, 1) for m in marks if text.endswith(f"# {m}")}


def test_suspension_lines_name_every_place_a_coroutine_can_wait(lt):
    """From the bytecode's yield points (YIELD_VALUE, YIELD_FROM up to 3.10): a coroutine
    suspended in a code with one such line is at that line, frame or not."""
    assert compat.suspension_lines(_one_await.__code__) == _marked("ONE-AWAIT")
    assert compat.suspension_lines(_three_waits.__code__) == _marked("WAIT-1", "WAIT-2", "WAIT-3")
    assert compat.suspension_lines(_marked.__code__) == frozenset()  # a plain function
    task = lt.run(lambda: _spawn(_one_await()))
    coro = task.get_coro()
    assert compat.coroutine_suspended(coro) == compat.FRAMES_ON_DEMAND  # 3.10 cannot tell
    assert {coro.cr_frame.f_lineno} == _marked("ONE-AWAIT")
    assert (sys.version_info >= (3, 11)) == compat.FRAMES_ON_DEMAND


class Hostile:
    """Runs host code on every generic lookup and says so."""

    calls: ClassVar[list[str]] = []

    @property  # type: ignore[misc]
    def __class__(self) -> type:
        Hostile.calls.append("__class__")
        return asyncio.Task

    def __getattr__(self, name: str) -> Any:
        Hostile.calls.append(name)
        raise AttributeError(name)

    def __await__(self) -> Iterator[None]:
        yield None


def test_type_checks_and_names_never_run_host_code(lt):
    Hostile.calls.clear()
    hostile = Hostile()
    assert isinstance(hostile, asyncio.Task)  # what a naive check would conclude
    Hostile.calls.clear()
    assert not compat.is_task(hostile) and not compat.is_event_loop(hostile)
    assert compat.coroutine_name(hostile) == "Hostile"
    assert Hostile.calls == []
    task = lt.run(lambda: _spawn(forever()))
    assert compat.is_task(task) and compat.is_event_loop(lt.loop)
    assert compat.coroutine_name(task.get_coro()) == "forever"


def test_task_error_type_names_what_a_task_raised_without_retrieving_it(lt):
    class Custom(Exception):
        pass

    async def fails() -> None:
        raise Custom("x")

    async def returns() -> int:
        return 1

    async def run() -> list[asyncio.Task[Any]]:
        tasks = [asyncio.create_task(fails()), asyncio.create_task(returns())]
        cancelled = asyncio.create_task(forever())
        await settle()
        cancelled.cancel()
        await asyncio.wait([*tasks, cancelled])
        return [*tasks, cancelled]

    failed, done, cancelled = lt.run(run)
    assert compat.task_error_type(failed).endswith("Custom")
    assert compat.task_error_type(done) == compat.task_error_type(cancelled) == ""
    # not retrieved: asyncio still reports it when the task is freed (its _log_traceback)
    assert failed._log_traceback is True
    failed.exception()  # the test retrieves it itself, so nothing is logged at teardown


def test_trim_source_traceback_drops_the_innermost_entries(lt):
    lt.loop.set_debug(True)

    async def make() -> asyncio.Task[None]:
        return asyncio.get_running_loop().create_task(forever())

    task = lt.run(make)
    stack = list(task._source_traceback)
    compat.trim_source_traceback(task, 1)
    assert list(task._source_traceback) == stack[:-1]
    compat.trim_source_traceback(object(), 2)  # no traceback: nothing happens


def test_factory_keeps_task_names_matches_a_real_loop(lt):
    async def names() -> tuple[str, str]:
        loop = asyncio.get_running_loop()
        loop.set_task_factory(lambda lp, coro, **kw: asyncio.Task(coro, loop=lp, **kw))
        try:
            tasks = [loop.create_task(forever()), loop.create_task(forever(), name="kept")]
        finally:
            loop.set_task_factory(None)
        await settle()
        return tasks[0].get_name(), tasks[1].get_name()

    default, given = lt.run(names)
    assert given == "kept"
    assert compat.factory_keeps_task_names() is default.startswith("Task-")
    assert compat.type_mro(type(lt.loop))[-1] is object


def test_frame_self_finds_the_loop_in_run_forever(lt):
    frame = sys._current_frames()[lt.thread.ident]
    selves = []
    while frame is not None:
        if frame.f_code.co_name == "run_forever":
            selves.append(compat.frame_self(frame))
        frame = frame.f_back
    assert lt.loop in selves
    assert compat.frame_self(sys._getframe()) is None  # a function without self


def test_code_name_is_qualified_where_the_version_has_it():
    class Outer:
        def method(self) -> None:
            pass

    name = compat.code_name(Outer.method.__code__)
    expected = "method" if sys.version_info < (3, 11) else Outer.method.__qualname__
    assert name == expected


def test_eager_tasks_flag_matches_the_version():
    version = sys.version_info
    assert (
        version >= (3, 12),
        version >= (3, 14),
        version >= (3, 14),
    ) == (compat.EAGER_TASKS, compat.AWAITED_BY, compat.TASKS_PER_THREAD)


def test_every_agent_module_imports_on_this_version():
    """A fresh interpreter imports each agent module (nothing this version lacks, such as
    tomllib on 3.10 or sys.monitoring before 3.12) and nothing but stdlib, rpyc, psutil."""
    names = [m.name for m in pkgutil.walk_packages(agent.__path__, "agent.")]
    assert "agent.compat" in names
    code = (
        "import importlib, json, sys, sysconfig\n"
        "before = set(sys.modules)\n"
        f"for name in {names!r}: importlib.import_module(name)\n"
        "new = {m.split('.')[0] for m in set(sys.modules) - before}\n"
        "stdlib = sysconfig.get_paths()['stdlib']\n"
        "def outside(name):\n"
        "    if name in sys.stdlib_module_names: return False\n"
        "    path = getattr(sys.modules.get(name), '__file__', None) or ''\n"
        "    return not path.startswith(stdlib)  # e.g. Debian's _missing_stdlib_info\n"
        "third = {name for name in new if outside(name)}\n"
        "print(json.dumps(sorted(third)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    third = set(json.loads(out.stdout))
    assert third <= {"agent", "rpyc", "psutil"}, third
    for name in names:
        importlib.import_module(name)


def test_tracemalloc_traces_match_the_public_snapshot():
    was_tracing = tracemalloc.is_tracing()
    if not was_tracing:
        tracemalloc.start(2)
    try:
        kept = [bytearray(123_457) for _ in range(3)]  # a size nothing else allocates
        line = sys._getframe().f_lineno - 1
        raw = compat.tracemalloc_traces()
        public = tracemalloc.take_snapshot().traces
    finally:
        if not was_tracing:
            tracemalloc.stop()
    here = (__file__, line)
    ours = [t for t in raw if t[2] and t[2][0] == here and t[1] >= 123_457]
    theirs = [t for t in public if t.traceback[-1].filename == __file__ and t.size >= 123_457]
    assert len(ours) == len(theirs) == len(kept)
    assert sorted(t[1] for t in ours) == sorted(t.size for t in theirs)


def test_multiprocessing_children_names_the_processes_this_one_started() -> None:
    """multiprocessing.process._children holds the started, unjoined processes with
    their names; reading it reaps nothing (active_children() would)."""
    import multiprocessing
    import time

    process = multiprocessing.get_context("spawn").Process(
        target=time.sleep, args=(60,), name="SpawnProcess-compat"
    )
    process.start()
    try:
        assert compat.multiprocessing_children()[process.pid] == "SpawnProcess-compat"
    finally:
        process.kill()
        process.join()
    assert process.pid not in compat.multiprocessing_children()


def test_running_handle_names_the_callback_a_loop_runs(lt):
    """Handle._run's frame is on the loop thread's stack while a callback runs; its self is
    the Handle and its _callback slot the function (the stall catcher names it so)."""
    from agent.collect.stalls import describe_callback

    entered, release = threading.Event(), threading.Event()

    def blocking_callback() -> None:
        entered.set()
        release.wait(10)

    async def blocking_step() -> None:
        entered.set()
        release.wait(10)

    for run, expected in (
        (lambda: lt.loop.call_soon_threadsafe(blocking_callback), "blocking_callback ("),
        (lambda: asyncio.run_coroutine_threadsafe(blocking_step(), lt.loop), "task step"),
    ):
        entered.clear()
        release.clear()
        run()
        assert entered.wait(10)
        try:
            frame = sys._current_frames()[lt.thread.ident]
            handles = []
            while frame is not None:
                handle = compat.running_handle(frame)
                if handle is not None:
                    handles.append(handle)
                frame = frame.f_back
            assert len(handles) == 1, f"{RUNNING}: Handle._run frames found: {len(handles)}"
            text = describe_callback(compat.handle_callback(handles[0]))
            assert expected in text, text  # 3.11+ qualifies the name: test_...<locals>.
        finally:
            release.set()
    assert compat.running_handle(sys._getframe()) is None


def test_thread_cpu_time_reads_another_threads_cpu_clock():
    if not sys.platform.startswith("linux"):
        assert compat.thread_cpu_time(threading.get_native_id()) is None
        return
    measured: dict[str, float] = {}
    started, done = threading.Event(), threading.Event()

    def burn() -> None:
        before = time.thread_time()
        started.set()
        end = time.perf_counter() + 0.2
        while time.perf_counter() < end:
            pass
        measured["own"] = time.thread_time() - before
        done.wait(10)

    thread = threading.Thread(target=burn)
    thread.start()
    assert started.wait(10)
    first = compat.thread_cpu_time(thread.native_id)
    assert first is not None
    while "own" not in measured:
        time.sleep(0.01)
    later = compat.thread_cpu_time(thread.native_id)
    assert later is not None
    assert later - first == pytest.approx(measured["own"], abs=0.05)
    done.set()
    thread.join(10)
    # ended (the OS thread exits a moment after join returns): EINVAL, never a crash
    wait_until(lambda: compat.thread_cpu_time(thread.native_id) is None, message="EINVAL")
    assert compat.thread_cpu_time(None) is None and compat.thread_cpu_time(0) is None


def test_a_loop_thread_idle_in_its_own_epoll_wait_is_told_from_any_other_wait():
    """thread_waits_on: an idle selector loop's thread stands in an epoll wait on the
    loop's own selector (True); the same thread sleeping in a callback, or blocked in a
    selector of its own, is not (False); a loop without a selector has no descriptor."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        wait_until(loop.is_running, message="the loop running")
        epfd = compat.loop_selector_fd(loop)
        assert type(epfd) is int and epfd >= 0
        assert compat.loop_selector_fd(object()) is None
        probe = compat.thread_syscall_file(thread.native_id)
        if probe is None:
            assert not sys.platform.startswith("linux") or compat._EPOLL_WAITS is None
            return
        try:
            wait_until(lambda: compat.thread_waits_on(probe, epfd), message="idle in epoll")
            assert not compat.thread_waits_on(probe, epfd + 1000)
            for blocking in ("sleep", "selector"):
                go, done = threading.Event(), threading.Event()

                def block(
                    kind: str = blocking,
                    go: threading.Event = go,
                    done: threading.Event = done,
                ) -> None:
                    go.set()
                    if kind == "sleep":
                        time.sleep(0.3)
                    else:
                        with selectors.DefaultSelector() as own:
                            own.select(0.3)
                    done.set()

                loop.call_soon_threadsafe(block)
                assert go.wait(10)
                seen = [compat.thread_waits_on(probe, epfd) for _ in range(20)]
                assert done.wait(10)
                assert not any(seen[:10]), (blocking, seen)
        finally:
            os.close(probe)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def test_step_monitoring_is_there_from_312_and_a_tool_id_is_claimed_and_freed():
    monitoring = compat.step_monitoring()
    if sys.version_info < (3, 12):
        assert monitoring is None and compat.claim_tool_id("x") is None
        return
    assert monitoring is sys.monitoring
    tool = compat.claim_tool_id("compat-test")
    assert tool is not None and monitoring.get_tool(tool) == "compat-test"
    events = (monitoring.events.PY_START, monitoring.events.PY_YIELD)
    monitoring.register_callback(tool, events[0], lambda *_a: None)
    compat.release_tool_id(tool, events)
    assert monitoring.get_tool(tool) is None
    assert monitoring.register_callback(tool, events[0], None) is None  # unregistered


def test_running_task_task_coro_and_coroutine_code_name_a_task_and_its_outer_code():
    seen: list[Any] = []

    async def outer() -> None:
        task = asyncio.current_task()
        seen.extend([compat.running_task() is task, compat.task_coro(task)])
        seen.append(compat.coroutine_code(seen[1]))

    asyncio.run(outer())
    assert seen[0] is True
    assert seen[2] is outer.__code__
    assert compat.running_task() is None  # no loop runs on this thread
    assert compat.coroutine_code(iter(())) is None  # not a native coroutine
    py_task = getattr(asyncio.tasks, "_PyTask", None)
    if py_task is not None:  # the pure-Python task: its _coro, without get_coro

        async def body() -> None:
            task = py_task(asyncio.sleep(0))
            seen.append(compat.task_coro(task))
            await task

        asyncio.run(body())
        assert compat.coroutine_code(seen[-1]) is not None


def test_environ_state_changes_with_each_change_to_the_environment(monkeypatch):
    """What environ_lines' reuse rests on: the state differs after a variable is set,
    changed or removed, and is equal while nothing changes."""
    monkeypatch.setenv("OBSERVER_TEST_STATE", "one")
    first = compat.environ_state()
    assert compat.environ_state() == first
    monkeypatch.setenv("OBSERVER_TEST_STATE", "two")
    second = compat.environ_state()
    assert second != first
    monkeypatch.delenv("OBSERVER_TEST_STATE")
    assert compat.environ_state() not in (first, second)
