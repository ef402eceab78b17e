"""A host for the listener attack tests: the agent, an echo service, and commands.

Usage: python -m tests.attack.host KEYDIR [--nofile N]
Prints ``agent: HOST:PORT`` and ``echo: HOST:PORT``; reads commands on stdin:
``status`` (does agent.running() say it serves), ``break-listener`` (close the agent's
listening descriptor behind its back, as a host bug closing the wrong fd would) and
``agent-start`` (agent.start() again, on any free port), ``fork-start`` (fork; the
child says what agent.running() is there, then starts an agent of its own) and
``fork-end`` (the child exits).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import resource
import socket
import sys
import threading

import agent
from tests.hosts.common import echo, start_agent


def say(line: str) -> None:
    print(line, flush=True)


def listening_fd(port: int) -> int:
    """The descriptor of this process's socket listening on ``port`` (found in /proc)."""
    for name in os.listdir("/proc/self/fd"):
        try:
            probe = socket.socket(fileno=os.dup(int(name)))
        except OSError:
            continue
        with probe:
            try:
                listening = probe.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
                bound = probe.getsockname()[1] == port
            except (OSError, IndexError, TypeError):
                continue
        if listening and bound:
            return int(name)
    raise LookupError(f"no socket listens on port {port}")


def fork_child(keys: str) -> int:
    """Fork a child that starts its own agent and lives until the returned fd closes."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid:
        os.close(read_end)
        return write_end
    os.close(write_end)
    code = 0
    try:
        inherited = agent.running()
        server = start_agent(keys, "attack-child")
        say(f"event: child {os.getpid()} inherited={inherited is not None} agent {server.address}")
        os.read(read_end, 1)  # until the parent closes its end
    except BaseException as exc:
        say(f"event: child failed {exc!r}")
        code = 1
    finally:
        os._exit(code)


def commands(keys: str) -> None:
    child_pipe = -1
    for line in sys.stdin:
        word = line.strip()
        if word == "status":
            server = agent.running()
            say(f"event: status running={server is not None}")
        elif word == "break-listener":
            server = agent.running()
            if server is not None:
                os.close(listening_fd(server.port))
            say("event: listener closed")
        elif word == "fork-start":
            child_pipe = fork_child(keys)
        elif word == "fork-end" and child_pipe >= 0:
            os.close(child_pipe)
            os.wait()
            say("event: child ended")
        elif word == "agent-start":
            server = start_agent(keys, "attack-host")
            say(f"event: agent started {server.address} running={agent.running() is server}")


async def main(args: argparse.Namespace) -> None:
    if args.nofile:
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (args.nofile, hard))
    server = start_agent(args.keys, "attack-host")
    echo_server = await asyncio.start_server(echo, "127.0.0.1", 0)
    host, port = echo_server.sockets[0].getsockname()[:2]
    say(f"agent: {server.address}")
    say(f"echo: {host}:{port}")
    threading.Thread(target=commands, args=(args.keys,), name="commands", daemon=True).start()
    async with echo_server:
        await echo_server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("keys")
    parser.add_argument("--nofile", type=int, default=0, help="RLIMIT_NOFILE soft limit")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(parser.parse_args()))
