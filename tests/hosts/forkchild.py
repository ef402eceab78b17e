"""What a child of tests/hosts/forker.py does (importable, so spawn and forkserver can
run it too): say what it inherited from the master's agent, then end as it was told.

``how``: ``exit`` (sys.exit, so atexit runs agent.stop()), ``stop`` (agent.stop() first),
``term`` / ``kill`` (wait for the test's SIGTERM / SIGKILL), ``start`` (agent.start() of
its own, then wait for SIGTERM), ``idle`` (say nothing about the agent, wait for a
signal), ``loop`` (an asyncio loop with a task named worker-job; SIGUSR1 blocks that loop
for STALL seconds, a stall), ``code3`` (exit with status 3 on SIGUSR1), ``own`` (``loop``,
plus objects of a type only the worker makes and a 250 ms stall of its loop every 2 s).
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time

import agent

OWNED = 321  # WorkerOwned objects an ``own`` child holds
STALL = 0.4  # seconds a SIGUSR1 blocks a ``loop`` child's event loop


def say(line: str) -> None:
    """One write per line: the master and its children share this pipe, and print()'s
    separate write of the newline lets another process's line in between."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def agent_sockets(port: int) -> int:
    """How many of this process's descriptors are TCP sockets on the master agent's port
    (its listener or an observer's session, inherited through fork)."""
    count = 0
    for name in os.listdir("/proc/self/fd"):
        try:
            probe = socket.socket(fileno=os.dup(int(name)))
        except OSError:
            continue
        with probe:
            try:
                if probe.family in (socket.AF_INET, socket.AF_INET6):
                    count += probe.getsockname()[1] == port
            except OSError:
                pass
    return count


async def jobs() -> None:
    """A worker's event loop: one task named worker-job at a time; a cancelled one is
    replaced (as a server would), and the child says so."""
    asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, time.sleep, STALL)
    while True:
        job = asyncio.create_task(asyncio.Event().wait(), name="worker-job")
        try:
            await asyncio.shield(job)
        except asyncio.CancelledError:
            if not job.cancelled():
                raise
            say(f"event: child {os.getpid()} job cancelled")


def pidfds() -> int:
    """How many of this process's descriptors are pidfds (the master's exit watch holds
    one per worker; a child must hold none of them)."""
    count = 0
    for name in os.listdir("/proc/self/fd"):
        try:
            count += os.readlink(f"/proc/self/fd/{name}") == "anon_inode:[pidfd]"
        except OSError:
            continue
    return count


def parent_syscall_files() -> int:
    """How many of this process's descriptors read what its parent's threads stand in
    (the master's stall catcher holds one per loop thread; a child must hold none)."""
    count = 0
    for name in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            continue
        count += target.startswith(f"/proc/{os.getppid()}/task/") and target.endswith("/syscall")
    return count


class WorkerOwned:
    """Made only by an ``own`` child (never by the master): its census shows them."""


def blocking_report() -> None:
    """A blocking step on the worker's loop: the stall its Stalls tab shows."""
    time.sleep(0.25)


async def own_jobs(kept: list[WorkerOwned]) -> None:
    async def stall_now_and_then() -> None:
        while True:
            await asyncio.sleep(2.0)
            blocking_report()

    staller = asyncio.create_task(stall_now_and_then(), name="staller")
    try:
        await jobs()
    finally:
        staller.cancel()
        kept.clear()


def peer_ports() -> str:
    """The remote ports of this process's connected TCP sockets ("-" if none)."""
    ports = []
    for name in os.listdir("/proc/self/fd"):
        try:
            probe = socket.socket(fileno=os.dup(int(name)))
        except OSError:
            continue
        with probe:
            try:
                if probe.family in (socket.AF_INET, socket.AF_INET6):
                    ports.append(str(probe.getpeername()[1]))
            except OSError:
                pass
    return ",".join(sorted(ports)) or "-"


def child_main(how: str, port: int, keys: str) -> None:
    if how == "idle":  # touches nothing of the agent: a worker nobody observes
        say(f"event: child {os.getpid()} how=idle")
        while True:
            signal.pause()
    held = agent._server  # what the child holds: nothing of the parent's, or its own agent
    running = agent.running()
    say(
        f"event: child {os.getpid()} how={how} agent-sockets={agent_sockets(port)} "
        f"running={running is not None} remembers={held is not None and held is not running} "
        f"own={running.address if running is not None else '-'} peers={peer_ports()} "
        f"pidfds={pidfds()} parent-syscall-files={parent_syscall_files()}"
    )
    if how == "stop":
        agent.stop()
        say(f"event: child {os.getpid()} stopped")
        sys.exit(0)
    if how == "exit":
        sys.exit(0)
    if how == "loop":
        asyncio.run(jobs())
    if how == "code3":
        signal.signal(signal.SIGUSR1, lambda *_: os._exit(3))
    if how == "own":
        asyncio.run(own_jobs([WorkerOwned() for _ in range(OWNED)]))
    if how == "start":
        from tests.hosts.common import start_agent

        server = start_agent(keys, f"child-{os.getpid()}")
        say(f"event: child {os.getpid()} agent {server.address}")
    while True:  # until the test's signal
        signal.pause()
