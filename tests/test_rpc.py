"""observer.rpc, the observer's own half of rpyc's protocol, held against rpyc's.

The agent serves stock rpyc; the observer no longer imports it (a CLI call's largest
import). Here a stock rpyc service (as the agent's) answers observer.rpc over a real
socket pair: values come back as rpyc's own client gets them, exceptions as the same
types, a late reply is skipped, the service's ping and close are answered; and a peer
writing frames of its own making gets its connection closed (an EOFError), never a hang,
a huge allocation or another exception.
"""

from __future__ import annotations

import contextlib
import math
import os
import socket
import ssl
import threading
import time
import zlib
from collections.abc import Iterator
from typing import Any

import pytest
import rpyc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rpyc.core import brine, consts
from rpyc.core.channel import Channel
from rpyc.core.stream import SocketStream

from agent.channel import DeadlineStream, FrameTimeout
from agent.frames import FRAME_HEADER, MAX_REPLY_FRAME
from agent.tlsqueue import clear_tls_errors
from observer import rpc


class Custom(Exception):
    """An exception the observer has no class for (rpyc makes a generic one)."""


class Service(rpyc.Service):
    """What the agent's service is to the client: methods called by name, plain replies."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.conn: Any = None

    def on_connect(self, conn: Any) -> None:
        self.conn = conn

    def exposed_echo(self, *args: Any) -> Any:
        return args

    def exposed_blob(self, size: int) -> bytes:
        return bytes(range(256)) * (size // 256)

    def exposed_fail(self, kind: str) -> None:
        raise {"value": ValueError("bad value", 3), "key": KeyError("k"), "custom": Custom("c")}[
            kind
        ]

    def exposed_wait(self) -> bytes:
        self.gate.wait(30)
        return b"late"

    def exposed_ping_back(self) -> bytes:
        self.conn.ping("are you there", timeout=10)  # the service asks the client
        return b"pinged"

    def exposed_hang_up(self) -> None:
        threading.Thread(target=self.conn.close).start()  # rpyc's close: a request to us
        self.gate.wait(30)


class Pair:
    """A stock rpyc service on one end of a socket pair, observer.rpc on the other."""

    def __init__(self) -> None:
        theirs, ours = socket.socketpair()
        self.service = Service()
        self.server = self.service._connect(Channel(SocketStream(theirs)), {})
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()
        self.client = rpc.Connection(ours, timeout=10, max_frame=MAX_REPLY_FRAME)

    def _serve(self) -> None:
        try:
            self.server.serve_all()
        except Exception:  # the client hung up mid-request: the test says what it expected
            pass

    def close(self) -> None:
        self.service.gate.set()
        self.client.close()
        self.thread.join(10)
        assert not self.thread.is_alive()


@pytest.fixture
def pair() -> Iterator[Pair]:
    made = Pair()
    yield made
    made.close()


@pytest.fixture(scope="module")
def shared() -> Iterator[Pair]:
    made = Pair()
    yield made
    made.close()


def stock_call(method: str, *args: Any) -> Any:
    """What rpyc's own client gets from the same service for the same call."""
    made = Pair()
    ours, theirs = socket.socketpair()
    server = made.service._connect(Channel(SocketStream(theirs)), {})
    serving = threading.Thread(target=server.serve_all, daemon=True)
    serving.start()
    client = rpyc.connect_stream(SocketStream(ours))
    try:
        return getattr(client.root, method)(*args)
    except Exception as exc:
        return exc
    finally:
        client.close()
        serving.join(10)
        made.close()


plain = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**70), 2**70),
        st.floats(allow_nan=False),
        st.binary(max_size=300),
        st.text(max_size=300),
    ),
    lambda inner: st.lists(inner, max_size=300).map(tuple),
    max_leaves=50,
)


@settings(max_examples=300, deadline=None)
@given(value=plain)
def test_brine_as_rpyc_writes_and_reads_it(value):
    assert rpc.dump(value) == brine.dump(value)
    assert rpc.load(brine.dump(value)) == value
    assert rpc.dumpable(value) and brine.dumpable(value)


@given(value=st.one_of(st.lists(st.integers()), st.dictionaries(st.text(), st.integers())))
def test_what_rpyc_would_send_by_reference_is_refused(value):
    """rpyc sends a list or dict as a reference the agent could call back into; the
    observer sends values only."""
    assert not rpc.dumpable((1, value)) and not brine.dumpable((1, value))
    with pytest.raises(TypeError):
        rpc.box(("snapshot", (1, value)))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(args=st.lists(plain, max_size=4).map(tuple))
def test_a_stock_service_gets_the_arguments_and_the_client_its_reply(shared, args):
    assert shared.client.call("echo", args) == args


def test_a_large_reply_arrives_whole_through_rpyc_compression(shared):
    assert shared.client.call("blob", (3_000_000,)) == bytes(range(256)) * (3_000_000 // 256)


def test_one_root_fetch_then_one_request_per_call(pair):
    sent: list[int] = []
    send = pair.client._send
    pair.client._send = lambda msg, seq, args: (sent.append(args[0]), send(msg, seq, args))[1]
    pair.client.call("echo", ())
    pair.client.call("echo", ())
    assert sent == [consts.HANDLE_GETROOT, consts.HANDLE_CALLATTR, consts.HANDLE_CALLATTR]


def test_the_root_asked_with_the_login_is_read_by_the_first_call(pair):
    """transport sends GETROOT right after the login's proof; the first call then takes
    one request. A root request that could not be sent is asked again."""
    pair.client.ask_root()
    sent: list[int] = []
    send = pair.client._send
    pair.client._send = lambda msg, seq, args: (sent.append(args[0]), send(msg, seq, args))[1]
    assert pair.client.call("echo", (1,)) == (1,)
    assert sent == [consts.HANDLE_CALLATTR]
    theirs, ours = socket.socketpair()
    theirs.close()
    broken = rpc.Connection(ours, timeout=1, max_frame=MAX_REPLY_FRAME)
    broken.ask_root()  # the peer is gone: nothing raised here, the login says why
    assert broken._root_seq is None and not broken.closed
    with pytest.raises(EOFError):
        broken.call("echo", ())
    assert broken.closed


@pytest.mark.parametrize(
    ("method", "args"), [("fail", ("value",)), ("fail", ("key",)), ("fail", ("custom",))]
)
def test_an_exception_comes_back_as_rpyc_makes_it(pair, method, args):
    with pytest.raises(BaseException) as caught:
        pair.client.call(method, args)
    stock = stock_call(method, *args)
    assert type(caught.value).__name__ == type(stock).__name__
    assert type(caught.value).__mro__[1:] == type(stock).__mro__[1:]
    assert caught.value.args == stock.args
    assert pair.client.call("echo", (1,)) == (1,)  # the connection goes on


def test_an_unknown_method_is_an_attribute_error(pair):
    """What observer.client falls back on for an agent that predates a call."""
    with pytest.raises(AttributeError):
        pair.client.call("no_such_method", ())
    assert pair.client.call("echo", (b"x",)) == (b"x",)


def test_a_reply_later_than_the_timeout_is_skipped_and_the_next_call_answered(pair):
    pair.client.timeout = 0.2
    with pytest.raises(TimeoutError):
        pair.client.call("wait", ())
    pair.service.gate.set()  # the late reply is sent now
    pair.client.timeout = 10
    assert pair.client.call("echo", ("next",)) == ("next",)
    assert not pair.client.closed


def test_the_services_ping_is_answered_while_the_client_waits(pair):
    assert pair.client.call("ping_back", ()) == b"pinged"


def test_the_service_closing_ends_the_call_and_the_connection(pair):
    with pytest.raises(EOFError):
        pair.client.call("hang_up", ())
    assert pair.client.closed
    with pytest.raises(EOFError):
        pair.client.call("echo", ())


def test_close_says_goodbye_and_the_service_stops_serving(pair):
    pair.client.call("echo", ())
    pair.client.close()
    pair.thread.join(10)
    assert not pair.thread.is_alive() and pair.server.closed


# ---------------------------------------------------------------- a hostile peer


def reply(seq: int, boxed: Any, msg: int = consts.MSG_REPLY) -> bytes:
    body = brine.I1.pack(msg) + brine.dump((seq, boxed))
    return FRAME_HEADER.pack(len(body), 0) + body + b"\n"


ROOT = reply(0, (consts.LABEL_REMOTE_REF, ("agent.service.Root", 1, 2)))


def against(written: bytes, timeout: float = 0.5, max_frame: int = MAX_REPLY_FRAME) -> Any:
    """A call of a client whose peer already wrote ``written`` (the root's reply first)."""
    theirs, ours = socket.socketpair()
    with theirs:
        theirs.sendall(written)
        theirs.shutdown(socket.SHUT_WR)
        client = rpc.Connection(ours, timeout=timeout, max_frame=max_frame)
        try:
            return client.call("snapshot", (10, ""))
        finally:
            client.close(goodbye=False)


def test_a_frame_over_the_cap_is_refused_from_its_header():
    """The body never comes: the client must not wait for it (nor allocate it)."""
    theirs, ours = socket.socketpair()
    with theirs:
        theirs.sendall(ROOT + FRAME_HEADER.pack(2**32 - 1, 0))
        client = rpc.Connection(ours, timeout=30, max_frame=MAX_REPLY_FRAME)
        with pytest.raises(rpc.ProtocolError, match="limit"):
            client.call("snapshot", ())
        assert client.closed


def test_a_compression_bomb_is_refused():
    bomb = zlib.compress(b"\0" * (2 * 1024 * 1024))
    frame = FRAME_HEADER.pack(len(bomb), 1) + bomb + b"\n"
    with pytest.raises(rpc.ProtocolError, match="inflates beyond"):
        against(ROOT + frame, max_frame=1024 * 1024)


def test_nesting_and_references_are_refused():
    deep = b"\x10" * 10_000 + b"\x00"  # a tuple in a tuple ... 10,000 deep
    body = brine.I1.pack(consts.MSG_REPLY) + b"\x11\x51" + deep
    with pytest.raises(rpc.ProtocolError, match="deep"):
        against(ROOT + FRAME_HEADER.pack(len(body), 0) + body + b"\n")
    with pytest.raises(rpc.ProtocolError, match="reference"):
        against(ROOT + reply(1, (consts.LABEL_REMOTE_REF, ("builtins.list", 1, 2))))
    with pytest.raises(rpc.ProtocolError, match="root"):
        against(reply(0, (consts.LABEL_VALUE, b"not a reference")))


@settings(max_examples=300, deadline=None)
@given(
    body=st.one_of(
        st.binary(max_size=200),
        st.binary(max_size=60).map(lambda b: b"\x02\x11\x51" + b),  # a reply to seq 1, then
    ),
    compressed=st.booleans(),
)
def test_any_frame_a_peer_writes_ends_in_a_value_or_a_closed_connection(body, compressed):
    data = zlib.compress(body) if compressed else body
    frame = FRAME_HEADER.pack(len(data), int(compressed)) + data + b"\n"
    try:
        got = against(ROOT + frame, timeout=0.2)
    except (EOFError, TimeoutError):
        return
    except (ValueError, KeyError, AttributeError, TypeError) as exc:  # only as the agent's
        assert body[:1] == b"\x03", exc  # an exception the peer sent (vinegar)
        return
    assert rpc.dumpable(got) or (type(got) is float and math.isnan(got))


# ------------------------------------------------ TLS links sharing a thread (real agents)


def _broken_beside(make_host: Any) -> tuple[Any, Any, int]:
    """Two agents' links opened in this thread; the second agent's process stopped and
    a call to it failed (NodeDown), in this thread, as a chaos run or a poller meets it."""
    from observer.errors import NodeDown

    up, down = make_host(), make_host()
    alive, dying = up.connect(), down.connect()
    alive.snapshot()
    dying.snapshot()
    down.process.stop()
    with pytest.raises(NodeDown):
        dying.snapshot()
    return alive, dying, up.process.proc.pid


def test_a_node_going_down_leaves_the_other_links_of_its_thread_working(make_host):
    """An operator watches two nodes from one thread and one node goes down: the other
    keeps answering, call after call. On 3.14+ the dead link's failure stayed in the
    thread's OpenSSL error queue and the next read of the sound link took it for its
    own 'Broken pipe' (python/cpython#148594): a chaos run lost the node it was acting
    on, the GUI every node."""
    alive, dying, pid = _broken_beside(make_host)
    try:
        for _ in range(5):
            assert alive.snapshot().process.pid == pid
        assert not alive.closed
    finally:
        alive.close()
        dying.close()


def test_a_tls_failure_outside_the_client_does_not_fail_its_next_call(make_host):
    """Other code in the operator's thread (a library's own TLS link) fails on a dead
    peer and swallows the error without a word to agent.tlsqueue: the stale entry it
    leaves must not fail the next call of a sound link. A stock rpyc peer closing a
    link the agent had dropped did that to a 3.15 test run."""
    from observer.errors import NodeDown

    up, down = make_host(), make_host()
    alive, dying = up.connect(), down.connect()
    try:
        alive.snapshot()
        dying.snapshot()
        down.process.stop()
        foreign = dying._conn.sock  # written to as a library would, not through the client
        with pytest.raises(OSError):
            for _ in range(1000):
                foreign.sendall(b"x" * 65536)
        for _ in range(5):
            assert alive.snapshot().process.pid == up.process.proc.pid
        assert not alive.closed
        with pytest.raises(NodeDown):
            dying.snapshot()
    finally:
        alive.close()
        dying.close()


def test_clear_tls_errors_empties_the_queue_a_dead_link_filled(make_host):
    """What agent.tlsqueue rests on, on this Python: after a dead link's failure and
    clear_tls_errors, a sound link's read that finds nothing says 'want read' (nothing
    yet), not an error of the dead link's."""
    alive, dying, _ = _broken_beside(make_host)
    try:
        sock = alive._conn.sock
        sock.settimeout(0)
        clear_tls_errors()
        with pytest.raises(ssl.SSLWantReadError):
            sock.recv_into(bytearray(8), 8)
    finally:
        alive.close()
        dying.close()


def test_the_agents_timed_reads_are_not_failed_by_a_dead_link_of_their_thread(make_host):
    """The agent's side of it (a master's thread whose link to a killed worker failed,
    then a frame deadline on another link): a timed read of a sound link that gets
    nothing runs to its deadline (FrameTimeout), not into the dead link's error."""
    alive, dying, _ = _broken_beside(make_host)
    try:
        stream = DeadlineStream(alive._conn.sock)
        stream.arm(0.2, "reading a frame")
        with pytest.raises(EOFError) as caught:
            stream.read(1)
        assert type(caught.value) is FrameTimeout, repr(caught.value)
    finally:
        alive.close()
        dying.close()


CLOSE_TRIALS = 40  # links closed under their reader (before the fix ~30% of them misread)
FILES_OPENED = 8  # files opened right after each close: one takes the freed number


def test_a_link_closed_under_its_reader_never_reads_a_file_opened_after(make_host, tmp_path):
    """What a GUI did: one thread closes a link (Edit node, Remove node) while the link's
    worker waits for a long reply, then opens the nodes file. The descriptor number the
    link had is free again, and OpenSSL in the reader, which keeps the number, read its
    next record header from the file: the nodes file lost its first 5 bytes, as a test
    saw once. Now the descriptor is closed only as the reader lets go: every file
    opened meanwhile is still at its start, and each close ends its reader."""
    host = make_host("--tasks", "20000")
    data = tmp_path / "nodes.toml"
    data.write_bytes(b"# Nodes remembered by runtime-observer.\n" * 50)
    misread = []
    for trial in range(CLOSE_TRIALS):
        node = host.connect(timeout=30)
        node.snapshot(limit=100_000)
        node._tasks = type(node._tasks)()  # holding nothing: the next reply lists all
        ended = threading.Event()

        def read(node: Any = node, ended: threading.Event = ended) -> None:
            with contextlib.suppress(Exception):  # the close ends it: what error is moot
                node.snapshot(limit=100_000)
            ended.set()

        thread = threading.Thread(target=read, daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while not node._conn._recv_lock.locked():  # the reader waits for its reply
            assert time.monotonic() < deadline and thread.is_alive(), "no reply awaited"
            os.sched_yield()
        node.close(goodbye=False)
        fds = [os.open(data, os.O_RDONLY) for _ in range(FILES_OPENED)]
        try:
            assert ended.wait(30), "a close left its reader waiting"
            thread.join(10)
            misread += [trial for fd in fds if os.lseek(fd, 0, os.SEEK_CUR) != 0]
        finally:
            for fd in fds:
                os.close(fd)
    assert misread == [], f"closed links read from files opened after: trials {misread}"
