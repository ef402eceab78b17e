"""One call to many workers at once: the master asks each worker over its relay link
(agent.relay) on a bounded set of threads and hands back each worker's reply bytes
untouched, or why that worker gave none, all within one deadline: a frozen or dead
worker costs the others nothing, and the caller no more than the deadline.

A worker's reply (or error) is its own encoded envelope, exactly what ``worker(pid, ...)``
returns for it; nothing is decoded here.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from agent.codec import MAX_PAYLOAD, encode_error
from agent.errors import AgentError, BadRequest
from agent.relay import CALL_TIMEOUT, MAX_LINKS, check_args
from agent.tlsqueue import finish_thread, prepare_thread

log = logging.getLogger("agent")

MAX_WORKERS = MAX_LINKS  # workers one fan-out asks at most (a session's links)
MAX_THREADS = 8  # threads one fan-out runs at most; they wait on sockets, not the CPU
DEFAULT_TIMEOUT = 5.0
MIN_TIMEOUT = 0.05
GRACE = 0.25  # past the deadline, for a thread to hand in the error its timeout raised
MAX_REPLIES = MAX_PAYLOAD  # bytes of every reply together (one frame to the observer)


def check_pids(pids: Any) -> tuple[int, ...]:
    """The workers asked for, each once, in the order given (at most MAX_WORKERS)."""
    if type(pids) is not tuple or len(pids) > MAX_WORKERS:
        raise BadRequest(f"pids must be a tuple of at most {MAX_WORKERS} ints")
    if any(type(pid) is not int or not 0 < pid < 1 << 31 for pid in pids):
        raise BadRequest("pids must be positive ints")
    return tuple(dict.fromkeys(pids))


def check_each(each: Any) -> dict[int, tuple[Any, ...]]:
    """Per-worker arguments, ``((pid, args), ...)``, each checked as a relayed call's."""
    if type(each) is not tuple or len(each) > MAX_WORKERS:
        raise BadRequest(f"each must be a tuple of at most {MAX_WORKERS} (pid, args) pairs")
    out: dict[int, tuple[Any, ...]] = {}
    for pair in each:
        if type(pair) is not tuple or len(pair) != 2:
            raise BadRequest("each must hold (pid, args) pairs")
        (pid,) = check_pids((pair[0],))
        out[pid] = check_args(pair[1])
    return out


def check_timeout(timeout: Any) -> float:
    """Seconds each worker gets, clamped to [MIN_TIMEOUT, the relay's CALL_TIMEOUT]."""
    if type(timeout) not in (int, float) or not math.isfinite(timeout):
        raise BadRequest("timeout must be a finite number")
    return min(max(float(timeout), MIN_TIMEOUT), CALL_TIMEOUT)


def fan_out(
    call: Callable[[int, float], bytes],
    pids: Iterable[int],
    timeout: float,
    while_waiting: Callable[[frozenset[int]], Any] = lambda idents: None,
    threads: int = MAX_THREADS,
    on_thread: Callable[[int, bool], None] = lambda ident, started: None,
    weigh: Callable[[Any], int] = lambda extra: 0,
) -> tuple[Any, tuple[tuple[int, bytes], ...]]:
    """``call(pid, seconds_left)`` for every pid on at most ``threads`` threads; returns
    what ``while_waiting(idents)`` (run by the caller meanwhile, given the idents of the
    fan-out's threads: a snapshot made then can leave them out) returned and
    ``((pid, reply), ...)`` in the order of ``pids``. A worker with no reply by the
    deadline, or whose turn comes after it, gets an ``unreachable`` error; one whose
    reply would take the whole past MAX_REPLIES, a ``too-large`` one (ask it alone).
    ``weigh(extra)``: bytes of what while_waiting returned that travel in the same reply
    (counted first)."""
    order = list(pids)
    started = time.monotonic()
    deadline = started + timeout
    queue = order[::-1]
    results: dict[int, bytes] = {}
    lock = threading.Lock()
    done = threading.Event()

    def run() -> None:
        ident = threading.get_ident()
        on_thread(ident, True)
        try:
            prepare_thread()  # its links' reads wait for workers, outside agent.forksafe
            while True:
                with lock:
                    if not queue:
                        return
                    pid = queue.pop()
                reply = _one(call, pid, deadline, timeout)
                with lock:
                    results[pid] = reply
                    if len(results) == len(order):
                        done.set()
        finally:
            finish_thread()
            on_thread(ident, False)

    if not order:
        done.set()
    idents: set[int] = set()
    for _ in range(min(max(threads, 1), len(order))):
        thread = threading.Thread(target=run, name="observer-agent-fanout", daemon=True)
        thread.start()
        idents.add(thread.ident or 0)
    try:
        extra = while_waiting(frozenset(idents))
    finally:
        done.wait(max(0.0, deadline + GRACE - time.monotonic()))
    with lock:
        got = dict(results)
    replies = []
    total = weigh(extra)
    for pid in order:
        reply = got.get(pid)
        if reply is None:
            reply = encode_error("unreachable", f"worker {pid} did not answer within {timeout:g} s")
        elif total + len(reply) > MAX_REPLIES:
            reply = encode_error(
                "too-large", f"worker {pid}'s reply does not fit with the others: ask it alone"
            )
        total += len(reply)
        replies.append((pid, reply))
    return extra, tuple(replies)


def _one(call: Callable[[int, float], bytes], pid: int, deadline: float, timeout: float) -> bytes:
    """One worker's reply or error envelope; never raises."""
    left = deadline - time.monotonic()
    if left <= 0:
        return encode_error(
            "unreachable", f"worker {pid} was not asked: the {timeout:g} s ran out first"
        )
    try:
        return call(pid, left)
    except AgentError as exc:
        return encode_error(exc.kind, exc.message)
    except Exception as exc:  # contained: never into the host
        log.exception("runtime-observer agent: fan-out to worker %s failed", pid)
        return encode_error("internal", f"agent error: {type(exc).__name__}")
