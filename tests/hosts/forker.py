"""A master with the agent that forks children on command (tests/test_forks.py);
``--workers`` starts the agent with workers=True, ``--bind HOST:PORT`` where it listens.

The main thread reads commands on stdin (so a forked child's sys.exit runs the
interpreter's real exit path: atexit and all); an asyncio echo server runs on another
thread to prove the master keeps serving. Commands:

- ``fork METHOD HOW``: METHOD is ``os`` (os.fork) or a multiprocessing start method
  (``fork``, ``forkserver``, ``spawn``), or ``os-locked`` (os.fork while the agent's lock
  is held, as when another thread is in agent.expose()); HOW is what the child does
  (tests/hosts/forkchild.py).
  Prints ``event: forked PID``.
- ``pool METHOD N [join]``: a multiprocessing Pool of N workers (``join``: each calls
  agent.join() as its initializer); prints ``event: pool PID,PID``.
- ``executor METHOD N [join]``: a ProcessPoolExecutor of N workers, each made to run a
  task; prints ``event: executor PID,PID``.
- ``--spawned`` (an argument): the master opts in to spawned workers
  (OBSERVER_AGENT_SPAWNED_WORKERS=1, agent.spawned).
- ``reap PID``: wait for that child; prints ``event: reaped PID CODE`` (negative: signal).
- ``relay-close PID TRIALS``: a session's relay closed while its call waits on the stopped
  worker PID, TRIALS times (relay_close_trials); prints ``event: relay-close JSON``.
- ``--no-tree`` (an argument): the master's agent as one from before the tree call (its
  service without ``exposed_tree``), for the observer's fallback to two round trips.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import multiprocessing
import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import agent
from tests.hosts.common import echo, start_agent
from tests.hosts.forkchild import child_main, say


def serve_echo(ready: Callable[[str], None]) -> None:
    async def serve() -> None:
        server = await asyncio.start_server(echo, "127.0.0.1", 0)
        host, port = server.sockets[0].getsockname()[:2]
        ready(f"{host}:{port}")
        async with server:
            await server.serve_forever()

    asyncio.run(serve())


@contextlib.contextmanager
def lock_held_elsewhere() -> Iterator[None]:
    """Another thread holds the agent's lock meanwhile (as one in agent.expose() may)."""
    taken, release = threading.Event(), threading.Event()

    def hold() -> None:
        with agent._lock:
            taken.set()
            release.wait()

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    taken.wait()
    try:
        yield
    finally:
        release.set()
        thread.join()


def fork(method: str, how: str, port: int, keys: str) -> tuple[int, Callable[[], int]]:
    """Start a child; returns its pid and a function that waits for it (its exit code,
    negative for a signal)."""
    if method in ("os", "os-locked"):
        with lock_held_elsewhere() if method == "os-locked" else contextlib.nullcontext():
            pid = os.fork()
        if pid == 0:
            try:
                child_main(how, port, keys)
            except SystemExit:
                raise  # the interpreter's own exit: atexit runs agent.stop() in the child
            except BaseException:
                os._exit(1)

        def reap() -> int:
            status = os.waitpid(pid, 0)[1]
            return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)

        return pid, reap
    process = multiprocessing.get_context(method).Process(
        target=child_main, args=(how, port, keys), daemon=True
    )
    process.start()

    def join() -> int:
        process.join()
        return int(process.exitcode or 0)

    assert process.pid is not None
    return process.pid, join


FILES_OPENED = 8  # files the master opens right after each close: one takes a freed number


def relay_close_trials(server: Any, pid: int, trials: int) -> dict[str, Any]:
    """What a session's end does to a relayed call still waiting on a frozen worker: a
    Relay (agent.relay) logs in to worker ``pid``, the worker is stopped, a thread asks it
    ``hello``, the relay is closed, and the master opens files at once. Per trial: how the
    call ended and after how long, whether any file opened was read from (its offset
    moved), whether the link's socket was left open after the call ended."""
    from agent.relay import Relay, WorkerUnreachable

    data = tempfile.NamedTemporaryFile(prefix="relay-close-", delete=False)
    data.write(b"a file of the host's, opened as a relay closes\n" * 50)
    data.close()
    out: dict[str, Any] = {"ended": [], "seconds": [], "misread": 0, "left_open": 0}
    try:
        for _ in range(trials):
            relay = Relay(server.relay_keys, "viewer")
            relay.call(pid, "hello", ())  # logged in while the worker runs
            sock = relay._links[pid].conn._channel.stream.sock
            os.kill(pid, signal.SIGSTOP)
            ended: list[str] = []

            def ask(relay: Relay = relay, ended: list[str] = ended) -> None:
                try:
                    relay.call(pid, "hello", (), timeout=10.0)
                    ended.append("answered")
                except WorkerUnreachable:
                    ended.append("unreachable")
                except Exception as exc:
                    ended.append(type(exc).__name__)

            thread = threading.Thread(target=ask, daemon=True)
            thread.start()
            deadline = time.monotonic() + 10
            while not relay._links[pid].lock.locked() and time.monotonic() < deadline:
                os.sched_yield()  # until the call holds the link
            began = time.monotonic()
            relay.close()
            fds = [os.open(data.name, os.O_RDONLY) for _ in range(FILES_OPENED)]
            thread.join(15)
            out["seconds"].append(round(time.monotonic() - began, 3))
            out["ended"].append(ended[0] if ended else "waiting")
            out["misread"] += sum(os.lseek(fd, 0, os.SEEK_CUR) != 0 for fd in fds)
            out["left_open"] += sock.fileno() != -1
            for fd in fds:
                os.close(fd)
            os.kill(pid, signal.SIGCONT)
    finally:
        os.kill(pid, signal.SIGCONT)
        os.unlink(data.name)
    return out


def main(keys: str, extra: list[str]) -> None:
    bind = extra[extra.index("--bind") + 1] if "--bind" in extra else "127.0.0.1:0"
    metrics = extra[extra.index("--metrics") + 1] if "--metrics" in extra else None
    if "--spawned" in extra:
        os.environ["OBSERVER_AGENT_SPAWNED_WORKERS"] = "1"
    if "--no-tree" in extra:
        from agent.service import AgentService

        del AgentService.exposed_tree
    server = start_agent(keys, "forker", bind, workers="--workers" in extra, metrics=metrics)
    say(f"agent: {server.address}")
    if server.metrics is not None:
        say(f"metrics: {server.metrics.url}")
    threading.Thread(target=serve_echo, args=(lambda a: say(f"echo: {a}"),), daemon=True).start()
    children: dict[int, Callable[[], int]] = {}
    pools: list[Any] = []  # kept until the master exits
    for line in sys.stdin:
        words = line.split()
        if words[:1] == ["fork"] and len(words) in (3, 4):
            # "fork METHOD HOW metrics": the child counts its sockets on the metrics port
            port = server.port if len(words) == 3 else server.metrics.server.address[1]
            pid, children[pid] = fork(words[1], words[2], port, keys)
            say(f"event: forked {pid}")
        elif words[:1] == ["pool"] and len(words) in (3, 4):
            init = agent.join if words[3:] == ["join"] else None
            context = multiprocessing.get_context(words[1])
            pools.append(context.Pool(int(words[2]), initializer=init))
            pids = sorted(p.pid for p in pools[-1]._pool)
            say(f"event: pool {','.join(map(str, pids))}")
        elif words[:1] == ["executor"] and len(words) in (3, 4):
            executor = concurrent.futures.ProcessPoolExecutor(
                int(words[2]),
                mp_context=multiprocessing.get_context(words[1]),
                initializer=agent.join if words[3:] == ["join"] else None,
            )
            list(executor.map(abs, range(4 * int(words[2]))))  # every worker started
            pools.append(executor)
            pids = sorted(executor._processes)
            say(f"event: executor {','.join(map(str, pids))}")
        elif words[:1] == ["relay-close"] and len(words) == 3:
            trials = relay_close_trials(server, int(words[1]), int(words[2]))
            say(f"event: relay-close {json.dumps(trials)}")
        elif words[:1] == ["reap"] and len(words) == 2:
            pid = int(words[1])
            say(f"event: reaped {pid} {children.pop(pid)()}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
