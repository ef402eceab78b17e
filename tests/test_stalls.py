"""The stall catcher against real hosts: each way of blocking an event loop is caught, and
the culprit it names is the line that blocked.

tests/hosts/stalls.py blocks its loop on command: a synchronous sleep in a coroutine, a
blocking call_soon callback, a CPU-bound loop in bytecode, a CPU-bound C call (json), and
another thread holding the GIL in one long C call (an ``re`` match that backtracks ~2**24
times: the re engine never releases the GIL). A viewer reads the stalls.
"""

from __future__ import annotations

import asyncio
import json
import queue
import random
import re
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent import compat
from agent.collect.stalls import StallWatch
from agent.collect.tasks import TaskRegistry
from agent.schema import StallEvent
from observer.client import Node, connect
from tests.attack.forms import Forge, leaks
from tests.helpers import ROOT, HostProcess, LoopThread, echo_ok, wait_until
from tests.test_cli import observer

HOST_FILE = ROOT / "tests" / "hosts" / "stalls.py"


def marker_line(marker: str, path: Path = HOST_FILE) -> int:
    """The number of the line carrying ``# STALL-<marker>``."""
    for number, text in enumerate(path.read_text().splitlines(), 1):
        if text.rstrip().endswith(f"# STALL-{marker}"):
            return number
    raise AssertionError(f"no STALL-{marker} line in {path}")


class StallHost:
    def __init__(self, keys, *args: str, env: dict[str, str] | None = None) -> None:
        self.keys = keys
        self.process = HostProcess(
            [sys.executable, "-m", "tests.hosts.stalls", str(keys.directory), *args], env=env
        )
        self.address = self.process.wait_line(r"^agent: (\S+)").group(1)
        self.echo = self.process.wait_line(r"^echo: (\S+)").group(1)
        self.process.wait_line(r"^ready$")

    def connect(self, role: str = "viewer") -> Node:
        token = self.keys.operator_token if role == "operator" else self.keys.viewer_token
        return connect(self.address, token_file=token, fingerprint=self.keys.fingerprint)

    def creds(self, role: str = "viewer") -> list[str]:
        token = self.keys.operator_token if role == "operator" else self.keys.viewer_token
        return ["--token-file", str(token), "--fingerprint", self.keys.fingerprint]

    def block(
        self, node: Node, command: str, marker: str, path: Path = HOST_FILE, tries: int = 1
    ) -> StallEvent:
        """Send ``command``, wait until the host says it is over, and return the stall the
        agent recorded for it (the one whose culprit is the marked line).

        ``tries``: for a GIL held in C code, nothing in Python can look while it is held;
        the watchdog reads the stacks the moment it gets the GIL back, and the thread that
        held it still stands on its line unless the OS let it run on first (seen on this
        loaded 2-core machine for about 1 json.dumps in 10): such a case may ask again."""
        for attempt in range(tries):
            try:
                return self._block_once(node, command, marker, path)
            except AssertionError:
                if attempt == tries - 1:
                    raise
        raise AssertionError("unreachable")

    def _block_once(self, node: Node, command: str, marker: str, path: Path) -> StallEvent:
        line = marker_line(marker, path)
        since = node.stalls(time.time() + 3600).time
        start = self.process.mark()
        self.process.send(command)
        self.process.wait_line(rf"^event: {command} done", start=start)

        def caught() -> StallEvent | None:
            events = node.stalls(since).stalls
            return next((e for e in events if e.line == line and e.file == str(path)), None)

        seen: list[StallEvent] = []

        def check() -> StallEvent | None:
            seen[:] = node.stalls(since).stalls
            return caught()

        try:
            return wait_until(check, timeout=5, message=f"a stall at line {line}")
        except AssertionError:
            raise AssertionError(
                f"no stall blamed on {path.name}:{line}; got "
                + "; ".join(f"{e.function} {e.file}:{e.line} ({e.duration:.3f}s)" for e in seen)
            ) from None


@pytest.fixture(scope="module")
def stall_host(keys) -> Iterator[StallHost]:
    host = StallHost(keys)
    yield host
    host.process.stop()


@pytest.fixture(scope="module")
def viewer(stall_host) -> Iterator[Node]:
    node = stall_host.connect("viewer")
    yield node
    node.close()


def test_time_sleep_in_a_coroutine_is_blamed_on_its_line_and_its_task(stall_host, viewer):
    event = stall_host.block(viewer, "sleep", "SLEEP")
    assert event.function == "sleeper"
    assert event.source.endswith("# STALL-SLEEP")
    assert 0.35 <= event.duration <= 2.0, event.duration
    assert event.captures >= 2  # 0.5 s at a 0.1 s threshold: read again while it lasted
    assert event.task.endswith(" (sleeper)") and event.handle == "task step"
    assert not event.gil_elsewhere
    assert event.loop.startswith("loop-") and event.thread == "MainThread"
    assert [f.function for f in event.frames][-1] == "sleeper"
    assert echo_ok(stall_host.echo)


def test_a_blocking_call_soon_callback_is_named_with_its_line(stall_host, viewer):
    event = stall_host.block(viewer, "callback", "CALLBACK")
    assert event.function == "blocking_callback"
    assert event.task == ""  # a plain callback: no task was running
    assert event.handle.startswith("blocking_callback (") and "stalls.py" in event.handle
    assert not event.gil_elsewhere


def test_a_cpu_bound_loop_is_blamed_on_its_line(stall_host, viewer):
    event = stall_host.block(viewer, "cpu", "CPU")
    # the coroutine's line, or the generator expression on it (the captures may all have
    # caught the generator's frame, or some caught sum() between two of its steps)
    assert event.function in ("cruncher", "cruncher.<locals>.<genexpr>", "<genexpr>")
    assert event.duration >= 0.1
    assert not event.gil_elsewhere


def test_cpu_bound_c_code_in_the_loop_is_blamed_on_the_line_that_called_it(stall_host, viewer):
    event = stall_host.block(viewer, "json", "JSON", tries=3)
    assert event.function == "encoder"
    assert not event.gil_elsewhere  # the loop's own thread held the GIL
    # the task is named when the watchdog looked while the step still ran (the loop may
    # have run on before it could look: then only the stack tells)
    assert event.task in ("", f"{event.task.split(' ')[0]} (encoder)")
    assert event.frames[-1].function != "encoder"  # json's own frames are in the stack


def test_another_thread_holding_the_gil_is_named_with_its_line(stall_host, viewer):
    event = stall_host.block(viewer, "gil", "GIL", tries=3)
    assert event.gil_elsewhere and event.gil_thread == "gil-hog"
    assert event.function in ("gil_hog", "gil_hog.<locals>.<listcomp>", "<listcomp>")
    assert event.late >= 0.1  # the watchdog itself could not run meanwhile
    hog = next(t for t in event.threads if t.name == "gil-hog")
    assert hog.cpu is not None and hog.cpu >= 0.05
    assert echo_ok(stall_host.echo)


def test_the_cli_lists_stalls_as_text_and_json(stall_host, viewer):
    stall_host.block(viewer, "sleep", "SLEEP")
    args = [stall_host.address, *stall_host.creds("viewer")]
    out = observer("stalls", *args)
    assert out.returncode == 0, out.stderr
    assert "TIME" in out.stdout and "CULPRIT" in out.stdout and "sleeper" in out.stdout
    assert f"hosts/stalls.py:{marker_line('SLEEP')}" in out.stdout
    assert "blocking stack, outermost first:" in out.stdout
    data = json.loads(observer("stalls", *args, "--json").stdout)
    assert data["threshold"] == pytest.approx(0.1)
    assert any(e["line"] == marker_line("SLEEP") for e in data["stalls"])
    recent = json.loads(observer("stalls", *args, "--json", "--since", "3600").stdout)
    assert len(recent["stalls"]) == len(data["stalls"])
    none = json.loads(observer("stalls", *args, "--json", "--since", "0.001").stdout)
    assert none["stalls"] == []


def test_a_stall_shows_no_planted_secret(keys, tmp_path):
    """What the attacker did: nothing; the host's blocking line and its locals hold secrets
    (random, so any 12 characters of one showing is a leak). A viewer reads the stall as
    the API, the CLI text and JSON give it; the source line comes redacted."""
    forge = Forge(random.Random(20261129))
    token, password = forge.jwt(), forge.password()
    module = tmp_path / "planted_stall.py"
    module.write_text(
        "import time\n\n\n"
        "def block():\n"
        f'    db_password = "{password}"  # noqa: F841\n'
        f'    time.sleep(0.4); headers = {{"Authorization": "Bearer {token.text}"}}  '
        "# STALL-SECRET\n"
    )
    host = StallHost(keys, "--module", str(module))
    try:
        with host.connect("viewer") as node:
            event = host.block(node, "module", "SECRET", module)
            assert "<redacted>" in event.source
            texts = [repr(node.stalls())]
        args = [host.address, *host.creds("viewer")]
        texts.append(observer("stalls", *args).stdout)
        texts.append(observer("stalls", *args, "--json").stdout)
        needles = (*token.needles, password)
        for text in texts:
            assert not leaks(needles, text)
    finally:
        host.process.stop()


def test_off_means_no_watchdog(keys):
    host = StallHost(keys, "--threshold", "0")
    try:
        with host.connect("viewer") as node:
            listing = node.stalls()
            assert listing.threshold == 0 and listing.stalls == ()
            assert not any(t.name == "observer-agent-stalls" for t in node.threads())
        out = observer("stalls", host.address, *host.creds())
        assert out.returncode == 0 and "off" in out.stdout
    finally:
        host.process.stop()


# ---------------------------------------------------------------- the watchdog in-process


@pytest.fixture
def loop_thread() -> Iterator[LoopThread]:
    lt = LoopThread("stall-loop")
    yield lt
    lt.stop()


def watch_over(registry: TaskRegistry, **kw) -> StallWatch:
    watch = StallWatch(
        lambda: [(lp, ident, registry.loop_id(lp)) for lp, ident in registry.loops()], **kw
    )
    watch.start()
    return watch


def test_idle_cost_is_one_wake_up_and_one_heartbeat_per_half_threshold(loop_thread):
    registry = TaskRegistry()
    registry.loop_serial(loop_thread.loop)
    watch = watch_over(registry, threshold=0.1)
    try:
        wait_until(lambda: watch.beats >= 1, message="the first heartbeat")
        wakeups, beats, started = watch.wakeups, watch.beats, time.monotonic()
        wait_until(lambda: time.monotonic() - started >= 1.0, message="a second")
        elapsed = time.monotonic() - started
        assert watch.wakeups - wakeups <= elapsed / 0.05 + 2
        assert watch.beats - beats <= elapsed / 0.05 + 2
        assert watch.beats - beats >= elapsed / 0.05 / 3  # it does watch
        assert watch.stalls().stalls == ()
    finally:
        watch.stop()


def switches(native_id: int) -> int:
    """Times a thread of this process went to sleep and was woken (Linux's count)."""
    status = Path(f"/proc/self/task/{native_id}/status").read_text()
    return int(re.search(r"^voluntary_ctxt_switches:\s+(\d+)", status, re.M).group(1))


@pytest.mark.skipif(
    compat.thread_syscall_file(threading.get_native_id()) is None,
    reason="needs Linux's /proc/self/task/TID/syscall on a machine whose epoll numbers are known",
)
def test_a_loop_idle_in_its_selector_is_watched_without_waking_it(loop_thread):
    """An idle loop's thread stands in its selector: the watchdog still checks it every
    half threshold, but posts nothing, so the loop's thread is never woken (the kernel
    counts its sleeps); a loop that blocks is still caught; the syscall files it reads
    are closed when it stops."""
    fds = len(list(Path("/proc/self/fd").iterdir()))
    registry = TaskRegistry()
    registry.loop_serial(loop_thread.loop)
    watch = watch_over(registry, threshold=0.05)
    native = loop_thread.thread.native_id
    try:
        wait_until(lambda: watch.wakeups >= 3, message="the watchdog running")
        woken, beats, wakeups, posted = switches(native), watch.beats, watch.wakeups, watch.posted
        wait_until(lambda: watch.wakeups >= wakeups + 20, message="twenty wake-ups")
        assert watch.beats - beats >= 15  # it did check the loop at (nearly) each
        assert watch.posted - posted <= 2  # without posting a heartbeat
        assert switches(native) - woken <= 2  # and did not wake it (was one a heartbeat)
        done = threading.Event()
        loop_thread.loop.call_soon_threadsafe(lambda: (time.sleep(0.2), done.set()))
        assert done.wait(10)
        event = wait_until(lambda: watch.stalls().stalls, message="the stall")[-1]
        assert event.duration >= 0.05 and event.function.endswith("<lambda>")
    finally:
        watch.stop()
    assert len(list(Path("/proc/self/fd").iterdir())) <= fds


def test_a_callback_blocking_in_a_selector_of_its_own_is_a_stall(loop_thread):
    """A blocking ``select`` a callback makes (a synchronous client waiting on a socket)
    is not the loop's own wait for I/O: the loop is stalled, and caught."""
    import selectors

    registry = TaskRegistry()
    registry.loop_serial(loop_thread.loop)
    watch = watch_over(registry, threshold=0.05)
    done = threading.Event()

    def sync_client_wait() -> None:
        with selectors.DefaultSelector() as selector:
            selector.select(0.3)
        done.set()

    try:
        wait_until(lambda: watch.beats >= 2, message="watching")
        loop_thread.loop.call_soon_threadsafe(sync_client_wait)
        assert done.wait(10)
        event = wait_until(lambda: watch.stalls().stalls, message="the stall")[-1]
        assert event.duration >= 0.2 and event.function.endswith("sync_client_wait")
    finally:
        watch.stop()


def test_the_ring_keeps_the_newest_and_since_filters(loop_thread):
    registry = TaskRegistry()
    registry.loop_serial(loop_thread.loop)
    watch = watch_over(registry, threshold=0.05, capacity=3)
    try:
        for n in range(5):
            done = threading.Event()
            loop_thread.loop.call_soon_threadsafe(lambda d=done: (time.sleep(0.15), d.set()))
            assert done.wait(10)
            wait_until(lambda n=n: watch.stalls().total >= n + 1, message=f"stall {n + 1}")
        listing = watch.stalls()
        assert listing.total == 5 and [e.serial for e in listing.stalls] == [3, 4, 5]
        last = listing.stalls[-1]
        assert watch.stalls(last.start + last.duration - 0.001).stalls == (last,)
        assert watch.stalls(time.time() + 1).stalls == ()
    finally:
        watch.stop()


def test_a_loop_that_stops_ends_its_watch(loop_thread):
    registry = TaskRegistry()
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="short-loop")
    thread.start()
    registry.loop_serial(loop)
    registry.loop_serial(loop_thread.loop)
    watch = watch_over(registry, threshold=0.05)
    try:
        wait_until(lambda: watch.beats >= 2, message="heartbeats")
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
        before = watch.beats
        wait_until(lambda: watch.beats >= before + 10, message="more heartbeats")
        assert watch.stalls().stalls == ()  # a stopped loop is not a stalled one
    finally:
        watch.stop()


def test_a_holder_found_waiting_is_not_blamed_on_its_wait():
    """A thread that held the GIL and went back to waiting before the watchdog looked
    stands in a stdlib wait: that line says nothing about the hold, so it is not a culprit."""
    from agent.collect.stalls import waiting
    from agent.schema import FrameInfo

    def stack(*places: tuple[str, str]) -> tuple[FrameInfo, ...]:
        return tuple(FrameInfo(i, f, file, 1, "") for i, (f, file) in enumerate(places))

    host = ("gil_hog", str(HOST_FILE))
    assert waiting(stack(host, ("Queue.get", queue.__file__), ("wait", threading.__file__)))
    assert waiting(stack(host, ("Condition.wait", threading.__file__)))
    assert not waiting(stack(host))
    assert not waiting(stack(host, ("match", re.__file__)))
    assert not waiting(stack(("wait", str(HOST_FILE))))  # the host's own "wait" is code
