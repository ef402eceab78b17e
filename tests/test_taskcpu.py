"""CPU per task against a real host (tests/hosts/taskcpu.py): a task burning CPU must top
the list with the CPU the host itself measured for it, idle tasks must read about zero, a
task blocking its loop in time.sleep must show wall time without CPU; turning it off must
leave no sys.monitoring tool or event in the host; a viewer is refused and audited.
Driven through the real client and CLI.
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Iterator

import pytest

from agent.collect import taskcpu
from agent.schema import TaskCpu
from observer.client import Node, connect
from observer.errors import RemoteError
from tests.helpers import HostProcess, echo_ok, wait_until
from tests.test_cli import observer
from tests.test_forks import forker  # noqa: F401  (the fixture)

NEEDS_312 = pytest.mark.skipif(sys.version_info < (3, 12), reason="sys.monitoring is 3.12+")
TOOLS_OFF = r"^event: tools \[None, None, None, None, None, None\] watched 0$"
TOOL_ON = r"^event: tools \[.*'runtime-observer task cpu'.*\] watched 1$"


class CpuHost:
    def __init__(self, keys) -> None:
        self.keys = keys
        self.process = HostProcess(
            [sys.executable, "-m", "tests.hosts.taskcpu", str(keys.directory)]
        )
        self.address = self.process.wait_line(r"^agent: (\S+)").group(1)
        self.echo = self.process.wait_line(r"^echo: (\S+)").group(1)
        self.process.wait_line(r"^ready$")

    def connect(self, role: str = "operator") -> Node:
        token = self.keys.operator_token if role == "operator" else self.keys.viewer_token
        return connect(self.address, token_file=token, fingerprint=self.keys.fingerprint)

    def creds(self, role: str = "operator") -> list[str]:
        token = self.keys.operator_token if role == "operator" else self.keys.viewer_token
        return ["--token-file", str(token), "--fingerprint", self.keys.fingerprint]

    def hot_cpu(self, node: Node) -> float:
        """The CPU the host measured in its hot task so far (its exposed ``stats``)."""
        for variable in node.exposed("stats"):
            if variable.name in ("hot_cpu", "'hot_cpu'"):
                return float(variable.repr)
        raise AssertionError("the host exposes no hot_cpu")


@pytest.fixture
def cpu_host(keys) -> Iterator[CpuHost]:
    host = CpuHost(keys)
    yield host
    host.process.stop()


def by_name(report: TaskCpu) -> dict[str, float]:
    return {row.name: row.cpu for row in report.rows if row.name}


@NEEDS_312
def test_a_cpu_bound_task_tops_the_list_with_the_cpu_the_host_measured(cpu_host):
    mark = cpu_host.process.mark()
    with cpu_host.connect("operator") as node:
        assert not node.task_cpu().enabled  # off until someone turns it on
        started = node.task_cpu_start()
        assert started.ok and "CPU per task on" in started.message
        cpu_host.process.wait_line(TOOL_ON, start=mark)
        before = cpu_host.hot_cpu(node)
        time.sleep(3.0)  # the window being measured (not synchronisation)
        report = node.task_cpu(window=60.0, top=20)
        after = cpu_host.hot_cpu(node)
    assert report.enabled and report.rows
    top = report.rows[0]
    assert top.name == "hot-task" and top.coroutine == "hot" and top.alive
    measured = after - before  # the host's own clock around each burn, over about the window
    assert measured > 0.5
    assert abs(top.cpu - measured) <= max(0.25 * measured, 0.05), (top.cpu, measured)
    assert top.steps > 20
    names = by_name(report)
    idle = [cpu for name, cpu in names.items() if name.startswith("idle-")]
    assert all(cpu < 0.005 for cpu in idle)  # they ran no step in the window at all
    blocker = next(row for row in report.rows if row.name == "blocker-task")
    assert blocker.wall > 10 * max(blocker.cpu, 0.001)  # blocked its loop without the CPU
    assert report.cpu >= top.cpu and report.covered > 2.5
    assert echo_ok(cpu_host.echo)


@NEEDS_312
def test_off_leaves_no_tool_and_no_event_in_the_host(cpu_host):
    mark = cpu_host.process.mark()
    with cpu_host.connect("operator") as node:
        node.task_cpu_start(keep=True)
        cpu_host.process.wait_line(TOOL_ON, start=mark)
        wait_until(lambda: node.task_cpu(5.0, 5).rows, message="no step counted")
        mark = cpu_host.process.mark()
        stopped = node.task_cpu_stop()
        assert stopped.ok and "unwatched" in stopped.message
        cpu_host.process.wait_line(TOOLS_OFF, start=mark)  # get_tool None, no local event
        assert not node.task_cpu().enabled
        with pytest.raises(RemoteError, match="not on"):
            node.task_cpu_stop()
        actions = [(r.action, r.result) for r in node.audit()]
    assert ("task cpu start keep", "ok") in actions
    assert ("task cpu stop", "ok") in actions
    assert echo_ok(cpu_host.echo)


@NEEDS_312
def test_it_stops_with_the_session_that_started_it_without_keep(cpu_host):
    mark = cpu_host.process.mark()
    with cpu_host.connect("operator") as node:
        node.task_cpu_start()
        cpu_host.process.wait_line(TOOL_ON, start=mark)
        mark = cpu_host.process.mark()
    cpu_host.process.wait_line(TOOLS_OFF, start=mark)
    with cpu_host.connect("viewer") as viewer:
        stops = [r for r in viewer.audit() if r.action == "task cpu stop"]
    assert stops and "session ended" in stops[-1].detail


def test_a_viewer_is_refused_and_audited_and_nothing_is_hooked(cpu_host):
    mark = cpu_host.process.mark()
    with cpu_host.connect("viewer") as viewer:
        with pytest.raises(RemoteError, match="operator"):
            viewer.task_cpu_start(keep=True)
        report = viewer.task_cpu()  # reading is any role's
        assert not report.enabled
    with cpu_host.connect("operator") as node:
        denied = [r for r in node.audit() if r.action.startswith("task cpu start")]
    assert denied and denied[-1].result == "denied" and denied[-1].role == "viewer"
    lines = cpu_host.process.lines[mark:]
    assert not any(re.search(TOOL_ON, line) for line in lines)  # the host was never hooked
    assert echo_ok(cpu_host.echo)


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="3.10/3.11 only")
def test_before_312_it_says_so_in_one_line(cpu_host):
    with cpu_host.connect("operator") as node:
        assert "needs Python 3.12+" in node.task_cpu().note
        with pytest.raises(RemoteError, match="needs Python 3.12"):
            node.task_cpu_start()
    out = observer("cpu", cpu_host.address, *cpu_host.creds())
    assert out.returncode == 1 and "needs Python 3.12+" in out.stdout


@NEEDS_312
def test_the_cli_turns_it_on_lists_the_busiest_and_sorts_ps(cpu_host):
    on = observer("cpu", cpu_host.address, *cpu_host.creds(), "--on")
    assert on.returncode == 0, on.stderr
    assert "CPU per task on" in on.stdout

    def listed() -> str:
        out = observer("cpu", cpu_host.address, *cpu_host.creds("viewer"), "--top", "3")
        return out.stdout if out.returncode == 0 and "hot-task" in out.stdout else ""

    text = wait_until(listed, message="hot-task never listed")
    first_row = text.splitlines()[2]
    assert first_row.split()[1] == "hot-task"
    out = observer("ps", cpu_host.address, *cpu_host.creds("viewer"), "--sort", "cpu", "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["tasks"][0]["name"] == "hot-task"
    assert data["task_cpu"]["cpu"][data["tasks"][0]["id"]] > 0
    text = observer("ps", cpu_host.address, *cpu_host.creds("viewer"), "--sort", "cpu").stdout
    assert re.search(r"hot-task\s+pending\s+\d+\.\dms", text)
    out = observer("cpu", cpu_host.address, *cpu_host.creds("viewer"), "--off")
    assert out.returncode != 0 and "operator" in out.stderr  # a viewer cannot turn it off
    off = observer("cpu", cpu_host.address, *cpu_host.creds(), "--off")
    assert off.returncode == 0 and "off after" in off.stdout
    out = observer("ps", cpu_host.address, *cpu_host.creds(), "--sort", "cpu")
    assert out.returncode == 1 and "observer cpu NODE --on" in out.stderr


def test_windows_are_bounded_and_checked():
    meter = taskcpu.TaskCpuMeter(lambda _t: "task-1", lambda _i: None, list, lambda: False)
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(Exception, match="positive"):
            meter.window(bad, 10)
    report = meter.window(1e9, 10**9)
    assert not report.enabled and report.window == taskcpu.MAX_WINDOW


@NEEDS_312
def test_a_worker_is_measured_through_its_master_and_audited_there(forker):  # noqa: F811
    """An operator turns CPU per task on in a forked worker through the master's port:
    the worker's own meter runs (the master's stays off), and the master's audit names
    the worker; a viewer's attempt is refused by the worker and audited by the master."""
    import os
    import signal

    master = forker("--workers")
    pid, said = master.fork("os", "term")
    assert said["running"] == "True", said
    with master.connect(role="viewer") as viewer:
        with pytest.raises(RemoteError, match="operator"):
            viewer.worker(pid).task_cpu_start()
    with master.connect() as node:
        worker = node.worker(pid)
        assert worker.task_cpu_start().ok
        assert worker.task_cpu().enabled
        assert not node.task_cpu().enabled  # the master's own meter never started
        assert worker.task_cpu_stop().ok
        audit = [(r.action, r.result, r.role) for r in node.audit()]
    assert (f"task_cpu_start in worker {pid}", "denied", "viewer") in audit
    assert (f"task_cpu_start in worker {pid}", "ok", "operator") in audit
    assert (f"task_cpu_stop in worker {pid}", "ok", "operator") in audit
    os.kill(pid, signal.SIGTERM)
    assert master.reap(pid) == -15


@NEEDS_312
def test_a_forked_child_turns_the_parents_accounting_off():
    """Fork while CPU per task is on: the child (which has no tick thread to drain the
    credits) finds no tool and no event left; the parent's accounting goes on."""
    import os
    import warnings

    from agent import forking
    from agent.collect.tasks import TaskRegistry

    forking.install()
    registry = TaskRegistry()
    meter = taskcpu.TaskCpuMeter(
        lambda t: registry.task_id(t)[0], registry.find_task, registry.all_tasks, lambda: True
    )
    taskcpu.register(meter)
    meter.start("test")
    tool = meter.tool
    meter.watch_coro(asyncio_coro := _coro())
    code = asyncio_coro.cr_code
    read, write = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads (3.12+)
        pid = os.fork()
    if pid == 0:  # the child: report and leave at once
        try:
            state = (sys.monitoring.get_tool(tool), sys.monitoring.get_local_events(tool, code))
            os.write(write, repr(state).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        said = pipe.read()
    os.waitpid(pid, 0)
    asyncio_coro.close()
    try:
        assert said == "(None, 0)"
        assert meter.enabled and sys.monitoring.get_tool(tool) == taskcpu.TOOL_NAME
    finally:
        meter.stop()
    assert sys.monitoring.get_tool(tool) is None


async def _coro() -> None:
    return None


def _burn(seconds: float) -> None:
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


@pytest.mark.skipif(sys.version_info < (3, 12), reason="eager tasks and sys.monitoring: 3.12+")
def test_an_eager_tasks_first_step_is_its_own_not_its_creators():
    """An eager task's first step runs inside its creator's step: each is credited its own
    CPU (the creator ~30 ms, the eager one ~40 ms), not the creator both."""
    import asyncio

    from agent import compat
    from agent.collect.tasks import TaskRegistry

    if not compat.factory_keeps_task_names():
        pytest.skip(
            "3.13.0 renames tasks made through any task factory, so the agent sets none: a "
            "new coroutine's code is watched at the next sweep, after an eager first step"
        )

    registry = TaskRegistry()
    meter = taskcpu.TaskCpuMeter(
        lambda t: registry.task_id(t)[0], registry.find_task, registry.all_tasks, lambda: False
    )
    ids: dict[str, str] = {}

    async def eager_child() -> None:
        _burn(0.04)  # its first step, run eagerly inside the creator's
        await asyncio.sleep(0)

    async def creator() -> None:
        _burn(0.015)
        child = asyncio.create_task(eager_child())
        ids["child"] = registry.task_id(child)[0]
        _burn(0.015)
        await child

    async def main() -> taskcpu.TaskCpu:
        loop = asyncio.get_running_loop()
        loop.set_task_factory(asyncio.eager_task_factory)
        registry.births.hook(loop)  # the agent's factory in front of the eager one
        meter.start("test")
        try:
            task = loop.create_task(creator())
            ids["creator"] = registry.task_id(task)[0]
            await task
            return meter.window(60.0, 10)
        finally:
            meter.stop()

    report = asyncio.run(main())
    cpu = {row.task: row.cpu for row in report.rows}
    assert 0.025 <= cpu[ids["creator"]] <= 0.045, cpu
    assert 0.035 <= cpu[ids["child"]] <= 0.055, cpu


@pytest.mark.skipif(sys.version_info < (3, 12), reason="sys.monitoring is 3.12+")
def test_the_step_hooks_return_none_never_disable():
    """sys.monitoring disables an event at a place for good when a callback returns
    DISABLE: the hooks return None whatever happens, in a task or out of one."""
    import asyncio

    enter, leave = taskcpu.step_hooks([{}], [0.0])
    code = _coro.__code__
    assert enter(code, 0) is None and leave(code, 0, None) is None  # no loop here
    assert enter(None, 0) is None and leave(None, 0, None) is None

    async def inside() -> list[object]:
        here = asyncio.current_task().get_coro().cr_code
        return [enter(here, 0), leave(here, 0, None), enter(code, 0), leave(code, 0, 1)]

    assert asyncio.run(inside()) == [None, None, None, None]
