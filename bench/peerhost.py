"""Host for bench/peers.py: N tasks of a chosen shape, 50 idle threads, our agent,
aiomonitor (when importable), a 1 ms loop-stall monitor and the in-loop CPython floors.

Shapes (every leaf task's coroutine is 3 coroutines deep, sleeping in the innermost):
``chains`` -- chains of 3 tasks, each awaiting the next; ``flat`` -- independent tasks;
``gather`` -- a parent awaiting ``asyncio.gather`` of ``--fanout`` children.

stdin commands, one a line; answers on stdout:
  reset    clear the worst stall seen
  report   ``stall: SECONDS``, the worst loop stall since the last reset
  floor    on the loop: ``asyncio.all_tasks()`` + ``get_stack(limit=1)`` each;
           answers ``floor: SECONDS TASKS``
  chain    on the loop: every task's whole ``cr_await`` chain (function, line per frame);
           answers ``chain: SECONDS TASKS``
The first line is ``ready: {json}``: pid, agent address, task count, aiomonitor's ports
(or why it is missing).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import gc
import json
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psutil

import agent

HOUR = 3600.0
CHAIN = 3  # tasks per chain
TICK = 0.001


class Census:
    """Counts leaves as they start; ``done`` is set once all ``target`` of them run."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.count = 0
        self.done = asyncio.Event()
        if target <= 0:
            self.done.set()

    def arrive(self) -> None:
        self.count += 1
        if self.count >= self.target:
            self.done.set()


async def leaf(census: Census) -> None:
    await _leaf_middle(census)


async def _leaf_middle(census: Census) -> None:
    await _leaf_inner(census)


async def _leaf_inner(census: Census) -> None:
    census.arrive()
    await asyncio.sleep(HOUR)


async def chain_link(census: Census, chain: int, level: int) -> None:
    """Level 0 is the leaf; every other level awaits a task one level down."""
    if level == 0:
        await leaf(census)
        return
    await asyncio.create_task(
        chain_link(census, chain, level - 1), name=f"chain-{chain}-{level - 1}"
    )


async def fan_out(census: Census, width: int) -> None:
    await asyncio.gather(*(leaf(census) for _ in range(width)))


def spawn(shape: str, tasks: int, fanout: int) -> tuple[list[asyncio.Task[None]], Census]:
    """Start ``tasks`` tasks (rounded down to whole chains/groups) of ``shape``."""
    if shape == "chains":
        chains = tasks // CHAIN
        census = Census(chains)
        started = [
            asyncio.create_task(chain_link(census, i, CHAIN - 1), name=f"chain-{i}-{CHAIN - 1}")
            for i in range(chains)
        ]
    elif shape == "gather":
        groups = tasks // (fanout + 1)
        census = Census(groups * fanout)
        started = [
            asyncio.create_task(fan_out(census, fanout), name=f"fan-{i}") for i in range(groups)
        ]
    else:
        census = Census(tasks)
        started = [asyncio.create_task(leaf(census), name=f"flat-{i}") for i in range(tasks)]
    return started, census


def floor_stack(loop: asyncio.AbstractEventLoop) -> None:
    """The least any in-loop task lister can do: every task and its innermost frame."""
    started = time.perf_counter()
    tasks = asyncio.all_tasks(loop)
    for task in tasks:
        task.get_stack(limit=1)
    elapsed = time.perf_counter() - started
    print(f"floor: {elapsed:.6f} {len(tasks)}", flush=True)


def floor_chain(loop: asyncio.AbstractEventLoop) -> None:
    """Every task's whole await chain (function and line of each coroutine), in-loop."""
    started = time.perf_counter()
    tasks = asyncio.all_tasks(loop)
    rows: list[tuple[str, int]] = []
    for task in tasks:
        coro: Any = task.get_coro()
        for _ in range(1000):  # bounded, whatever the host built
            if coro is None:
                break
            frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
            if frame is not None:
                rows.append((frame.f_code.co_name, frame.f_lineno))
            coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    elapsed = time.perf_counter() - started
    print(f"chain: {elapsed:.6f} {len(tasks)}", flush=True)


class Stalls:
    """The worst loop stall, measured by a task that wakes every millisecond.

    ``reset`` and ``report`` are queued from the stdin thread and handled by that task
    right after it has measured a tick, so a report always includes a stall that was
    still going on when it was asked for (a paused process, a long call).
    """

    def __init__(self) -> None:
        self.worst = 0.0
        self.requests: collections.deque[str] = collections.deque()

    async def run(self) -> None:
        last = time.perf_counter()
        while True:
            await asyncio.sleep(TICK)
            now = time.perf_counter()
            self.worst = max(self.worst, now - last - TICK)
            last = now
            while self.requests:
                if self.requests.popleft() == "reset":
                    self.worst = 0.0
                else:
                    print(f"stall: {self.worst:.6f}", flush=True)


def commands(loop: asyncio.AbstractEventLoop, stalls: Stalls) -> None:
    actions: dict[str, Callable[[], object]] = {
        "reset": lambda: stalls.requests.append("reset"),
        "report": lambda: stalls.requests.append("report"),
        "floor": lambda: loop.call_soon_threadsafe(floor_stack, loop),
        "chain": lambda: loop.call_soon_threadsafe(floor_chain, loop),
    }
    for line in sys.stdin:
        action = actions.get(line.strip())
        if action is not None:
            action()
    # The driver closed our stdin: it is gone, so are we, once the loop has answered
    # every command already scheduled on it.
    loop.call_soon_threadsafe(os._exit, 0)


def listening_ports() -> set[int]:
    conns = psutil.Process().net_connections(kind="tcp")
    return {c.laddr.port for c in conns if c.status == psutil.CONN_LISTEN}


def web_ports() -> set[int]:
    """Ports served by the process's aiohttp runners (aiomonitor's web UI is one)."""
    from aiohttp import web

    ports: set[int] = set()
    for obj in gc.get_objects():
        if isinstance(obj, web.BaseRunner):
            with contextlib.suppress(Exception):
                ports.update(int(address[1]) for address in obj.addresses)
    return ports


def start_aiomonitor(loop: asyncio.AbstractEventLoop, hook: bool) -> dict[str, Any]:
    """Start aiomonitor on free ports (port 0) and find out which port is which.

    Its telnet server binds from a task of its own thread's loop, so the ports are
    looked for until both are listening (bounded).
    """
    try:
        import aiomonitor
    except Exception as exc:
        return {"aiomonitor": f"not importable ({type(exc).__name__}: {exc})"}
    before = listening_ports()
    aiomonitor.start_monitor(
        loop, port=0, webui_port=0, console_enabled=False, hook_task_factory=hook
    )
    deadline = time.monotonic() + 10.0
    new = listening_ports() - before
    while len(new) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)  # host start-up, before any measurement
        new = listening_ports() - before
    web = new & web_ports()
    telnet = new - web
    if len(web) != 1 or len(telnet) != 1:
        return {"aiomonitor": f"started, but its ports were not found (new ports {sorted(new)})"}
    return {"aiomonitor": "ok", "aiomonitor_web": web.pop(), "aiomonitor_telnet": telnet.pop()}


async def main(args: argparse.Namespace) -> None:
    keys = Path(args.keys)
    server = agent.start(
        "127.0.0.1:0",
        tls_cert=str(keys / "agent.crt"),
        tls_key=str(keys / "agent.key"),
        tokens={"operator": (keys / "operator.token").read_text().strip()},
        name="bench-peers",
    )
    loop = asyncio.get_running_loop()
    info: dict[str, Any] = {"pid": os.getpid(), "agent": server.address, "shape": args.shape}
    if args.aiomonitor:
        info.update(start_aiomonitor(loop, args.hook))  # on the loop's thread, as it wants
    else:
        info["aiomonitor"] = "disabled (--no-aiomonitor)"
    stop = threading.Event()
    for i in range(args.threads):
        threading.Thread(target=stop.wait, name=f"idle-{i}", daemon=True).start()
    started, census = spawn(args.shape, args.tasks, args.fanout)
    await census.done.wait()
    stalls = Stalls()
    stall = asyncio.create_task(stalls.run(), name="stall-monitor")
    info["tasks"] = len(asyncio.all_tasks())
    threading.Thread(target=commands, args=(loop, stalls), name="commands", daemon=True).start()
    print(f"ready: {json.dumps(info)}", flush=True)
    await asyncio.Event().wait()
    del started, stall  # keep references for the host's whole life


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("keys", help="a directory made by observer keygen")
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--shape", choices=["chains", "flat", "gather"], default="chains")
    parser.add_argument("--fanout", type=int, default=9, help="children per gather")
    parser.add_argument("--threads", type=int, default=50)
    parser.add_argument("--no-aiomonitor", dest="aiomonitor", action="store_false")
    parser.add_argument(
        "--aiomonitor-hook",
        dest="hook",
        action="store_true",
        help="let aiomonitor replace the task factory (records creation stacks)",
    )
    asyncio.run(main(parser.parse_args()))
