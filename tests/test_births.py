"""The task factory the agent chains in front of a loop's own (agent/collect/births.py),
on real loops in real threads: tasks keep being made as the app's factory makes them,
get their creation time, and the loop gets its factory back when the agent stops."""

from __future__ import annotations

import asyncio
import contextvars
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from agent import compat
from agent.collect.births import MAX_LOOPS, Births, TaskFactory, created
from tests.helpers import LoopThread

HOOKS = compat.factory_keeps_task_names()
needs_hooks = pytest.mark.skipif(
    not HOOKS, reason=f"{sys.version.split()[0]}: any task factory renames tasks 'None'"
)


@pytest.fixture
def lt() -> Iterator[LoopThread]:
    loop_thread = LoopThread("births-loop")
    yield loop_thread
    loop_thread.stop()


async def quick() -> int:
    return 7


async def parked() -> None:
    await asyncio.sleep(3600)


def make(lt: LoopThread, coro: Any, **kwargs: Any) -> asyncio.Task[Any]:
    async def create() -> asyncio.Task[Any]:
        return asyncio.get_running_loop().create_task(coro(), **kwargs)

    return lt.run(create)  # type: ignore[no-any-return]


@needs_hooks
def test_tasks_made_after_the_hook_carry_their_creation_time(lt):
    births = Births()
    before_hook = make(lt, parked)
    births.hook(lt.loop)
    assert births.hooked(lt.loop) and isinstance(lt.loop.get_task_factory(), TaskFactory)
    start = time.time()
    task = make(lt, parked)
    named = make(lt, parked, name="given")
    end = time.time()
    assert created(before_hook) is None  # made before: unknown
    assert start - 0.001 <= created(task) <= end
    assert task.get_name().startswith("Task-") and named.get_name() == "given"
    births.close()
    assert lt.loop.get_task_factory() is None
    assert created(make(lt, parked)) is None  # nothing stamped after close


@needs_hooks
def test_the_apps_factory_gets_every_argument_and_is_back_after_close(lt):
    calls: list[dict[str, Any]] = []

    class AppTask(asyncio.Task):  # type: ignore[type-arg]
        pass

    def app_factory(loop: Any, coro: Any, **kwargs: Any) -> Any:
        calls.append(kwargs)
        return AppTask(coro, loop=loop, **kwargs)

    lt.loop.set_task_factory(app_factory)
    births = Births()
    births.hook(lt.loop)
    context = contextvars.copy_context()
    task = make(lt, parked, context=context) if sys.version_info >= (3, 11) else make(lt, parked)
    assert type(task) is AppTask and created(task) is not None
    if sys.version_info >= (3, 11):
        assert calls[-1].get("context") is context
    births.close()
    assert lt.loop.get_task_factory() is app_factory


@needs_hooks
def test_an_app_factory_set_later_is_hooked_again_and_a_wrapper_of_ours_keeps_working(lt):
    births = Births()
    births.hook(lt.loop)
    ours = lt.loop.get_task_factory()
    wrapped: list[int] = []

    def app_wrapper(loop: Any, coro: Any, **kwargs: Any) -> Any:
        wrapped.append(1)
        return ours(loop, coro, **kwargs)

    lt.loop.set_task_factory(app_wrapper)  # the app put its own in front
    births.hook(lt.loop)  # found again: the agent goes first again
    assert lt.loop.get_task_factory() is not app_wrapper
    task = make(lt, parked)
    assert wrapped and created(task) is not None
    births.close()
    assert lt.loop.get_task_factory() is app_wrapper  # the app's, as it set it
    task = make(lt, quick)
    assert lt.run(lambda: task) == 7 and created(task) is None  # ours passes through


def test_errors_of_the_apps_factory_reach_the_caller_unchanged(lt):
    class Refused(Exception):
        pass

    def app_factory(loop: Any, coro: Any, **kwargs: Any) -> Any:
        coro.close()
        raise Refused("no")

    lt.loop.set_task_factory(app_factory)
    births = Births()
    births.hook(lt.loop)
    with pytest.raises(Refused):
        make(lt, parked)
    births.close()
    lt.loop.set_task_factory(None)  # the fixture's teardown makes tasks of its own


def test_loops_whose_factory_methods_are_host_code_are_left_alone():
    ran: list[str] = []

    class HostLoop(asyncio.SelectorEventLoop):  # type: ignore[misc,valid-type]
        def get_task_factory(self) -> Any:
            ran.append("get")
            return super().get_task_factory()

        def set_task_factory(self, factory: Any) -> None:
            ran.append("set")
            super().set_task_factory(factory)

    loop = HostLoop()
    try:
        births = Births()
        births.hook(loop)
        births.hook(loop)
        assert not births.hooked(loop) and ran == []
    finally:
        loop.close()


@needs_hooks
def test_debug_mode_creation_tracebacks_end_where_the_task_was_made(lt):
    lt.loop.set_debug(True)

    def traceback_end() -> tuple[str, int]:
        task = make(lt, parked)
        frame = task._source_traceback[-1]
        return frame.name, frame.lineno

    plain = traceback_end()
    births = Births()
    births.hook(lt.loop)
    hooked = traceback_end()
    births.close()
    assert plain[0] == hooked[0] == "create"  # make()'s inner coroutine, not the factory


@pytest.mark.skipif(not compat.EAGER_TASKS, reason=f"eager tasks need 3.12+ ({sys.version})")
@needs_hooks
def test_eager_tasks_still_run_their_first_step_at_once(lt):
    lt.loop.set_task_factory(asyncio.eager_task_factory)  # type: ignore[attr-defined]
    births = Births()
    births.hook(lt.loop)
    task = make(lt, quick)
    assert task.done() and task.result() == 7  # finished inside create_task: eager
    assert created(task) is not None
    births.close()
    assert lt.loop.get_task_factory() is asyncio.eager_task_factory  # type: ignore[attr-defined]


def test_no_hook_where_factories_rename_tasks(lt):
    births = Births()
    births.hook(lt.loop)
    assert births.hooked(lt.loop) is HOOKS
    births.close()
    assert lt.loop.get_task_factory() is None


@needs_hooks
def test_loops_that_are_gone_are_forgotten():
    """asyncio.run per job makes a loop each time: the agent remembers a bounded number."""
    births = Births()
    for _ in range(MAX_LOOPS + 50):
        loop = asyncio.new_event_loop()
        births.hook(loop)
        assert births.hooked(loop)
        loop.close()
        del loop
    assert len(births._loops) <= MAX_LOOPS
    births.close()
