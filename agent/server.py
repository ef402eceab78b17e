"""Agent lifecycle: the listener (agent.gate) on one daemon thread, a thread per
authenticated session, fail-ignorant towards the host."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import ssl
import threading
from typing import Any

from agent import registry
from agent.certexpiry import warn_at_start
from agent.channel import serve_bounded
from agent.config import AgentConfig
from agent.core import AgentCore
from agent.exits import ExitWatch
from agent.gate import Gate, close_socket, hang_up
from agent.security import (
    Authenticator,
    ConfigError,
    Credentials,
    LoginLimiter,
    is_loopback_host,
    server_context,
)
from agent.service import make_service
from agent.tlsqueue import finish_thread, prepare_thread
from agent.wire import join_host_port
from agent.workers import relay_keys

log = logging.getLogger("agent")

# rpyc's restrictive defaults, made explicit, plus no tracebacks or versions leaked.
PROTOCOL_CONFIG: dict[str, Any] = {
    "allow_public_attrs": False,
    "allow_all_attrs": False,
    "allow_setattr": False,
    "allow_delattr": False,
    "allow_pickle": False,
    "include_local_traceback": False,
    "include_local_version": False,
    "instantiate_custom_exceptions": False,
    "import_custom_exceptions": False,
    "log_exceptions": False,
    "sync_request_timeout": 30,
}


def bind_listener(host: str, port: int) -> socket.socket:
    """A bound (not yet listening) TCP socket for ``host:port``; raises OSError, whose
    message names the address ("cannot listen on 127.0.0.1:7330: Address already in use")."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = None
    try:
        address = socket.getaddrinfo(
            host, port, family, socket.SOCK_STREAM, socket.IPPROTO_TCP, socket.AI_PASSIVE
        )[0][-1]
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        if sock is not None:
            sock.close()
        where = join_host_port(host, port)
        raise OSError(exc.errno, f"cannot listen on {where}: {exc.strerror or exc}") from exc
    except BaseException:
        if sock is not None:
            sock.close()
        raise
    return sock


class Sessions:
    """At most ``limit`` authenticated observers, each served by rpyc on its own thread."""

    def __init__(
        self, limit: int, service: Any, core: AgentCore, send_timeout: float | None = None
    ) -> None:
        self.limit = limit
        self._send_timeout = send_timeout
        self._service = service
        self._core = core
        self._lock = threading.Lock()
        self._taken = 0
        self._live: set[socket.socket] = set()
        self._logger = logging.getLogger("agent.rpyc")
        self._logger.setLevel(logging.WARNING)

    def reserve(self) -> bool:
        """Take a slot for a connection that just proved who it is; False when all are taken."""
        with self._lock:
            if self._taken >= self.limit:
                return False
            self._taken += 1
            return True

    def release(self) -> None:
        with self._lock:
            self._taken = max(0, self._taken - 1)

    def start(self, sock: socket.socket, credentials: Credentials, unsent: bytes) -> None:
        """Serve ``sock`` (its slot already reserved) on a new thread."""
        with self._lock:
            self._live.add(sock)
        thread = threading.Thread(
            target=self._serve,
            args=(sock, credentials, unsent),
            name="observer-agent-conn",
            daemon=True,
        )
        try:
            thread.start()
        except BaseException:
            with self._lock:
                self._live.discard(sock)
            raise

    def _serve(self, sock: socket.socket, credentials: Credentials, unsent: bytes) -> None:
        ident = threading.get_ident()
        self._core.add_agent_thread(ident)
        try:
            prepare_thread()
            sock.setblocking(True)
            if unsent:
                sock.sendall(unsent)
            config = dict(
                PROTOCOL_CONFIG,
                credentials=credentials,
                endpoints=(sock.getsockname(), sock.getpeername()),
                logger=self._logger,
            )
            serve_bounded(self._service, sock, config, self._core.audit, self._send_timeout)
        except Exception:
            log.debug("runtime-observer agent: connection ended with an error", exc_info=True)
        finally:
            with self._lock:
                self._live.discard(sock)
            close_socket(sock)
            self.release()
            finish_thread()
            self._core.remove_agent_thread(ident)

    def abandon(self) -> None:
        """In a forked child: close this process's copies of the sessions' sockets (never
        shutdown(): the parent's observers use them), under a fresh lock (a thread of the
        parent may have held the old one at the fork); the slots are the parent's."""
        self._lock = threading.Lock()
        live, self._live = list(self._live), set()
        self._taken = 0
        for sock in live:
            close_socket(sock, shutdown=False)

    def close_all(self, shutdown: bool = True) -> None:
        """Disconnect every observer: each socket is shut down, and its session's thread,
        woken, closes it as it ends and releases its slot (gate.hang_up: never closed
        under that thread's read). ``shutdown=False``: only close this process's
        descriptors (see Gate.stop; no session thread of theirs runs here)."""
        with self._lock:
            live = list(self._live)
            if not shutdown:
                self._live.clear()
        for sock in live:
            if shutdown:
                hang_up(sock)
            else:
                close_socket(sock, shutdown=False)


class AgentServer:
    """A running agent: core state, sampler thread, the listener and the sessions."""

    def __init__(
        self,
        config: AgentConfig,
        tls_parts: tuple[ssl.SSLContext | None, bytes | None] | None = None,
        listener: socket.socket | None = None,
    ) -> None:
        """``tls_parts``: the TLS context and certificate (DER) of the agent this one forks
        from (agent.workers), used instead of reading the files again; ``listener``: a
        socket already bound (and maybe listening) to serve on instead of binding one."""
        self.config = config
        self._pid = os.getpid()  # a forked child inherits this object, not its threads
        remote = not is_loopback_host(config.host)
        if remote and not (config.tls_cert and config.tokens):
            raise ConfigError(
                f"refusing to bind {config.host}:{config.port} without TLS and a token: "
                "binding anything but loopback needs tls_cert, tls_key and tokens "
                "(run `observer keygen DIR` to make them)"
            )
        tls: ssl.SSLContext | None = None
        cert_der = None
        if tls_parts is not None:
            tls, cert_der = tls_parts
        elif config.tls_cert and config.tls_key:
            tls = server_context(config.tls_cert, config.tls_key, config.client_cafile)
            with open(config.tls_cert, encoding="ascii") as fh:
                cert_der = ssl.PEM_cert_to_DER_cert(fh.read())
            warn_at_start(cert_der, config.tls_cert)
        self.tls = tls is not None
        self.tls_parts = (tls, cert_der)
        limiter = LoginLimiter(
            config.auth_failure_limit, config.auth_failure_total, config.auth_window
        )
        if listener is None:
            listener = bind_listener(config.host, config.port)
        metrics_listener = None
        if config.metrics is not None:
            try:
                metrics_listener = bind_listener(config.metrics.host, config.metrics.port)
            except BaseException:
                listener.close()
                raise
        # Last, once nothing else can fail: the core starts the audit file's writer thread.
        self.core = AgentCore(
            config.name,
            history_idle_interval=config.history_idle_interval,
            audit_file=config.audit_file,
            stall_threshold=config.stall_threshold,
            task_factory=config.task_factory,
        )
        self.relay_keys = relay_keys(config.tokens, cert_der)  # to log in to its workers
        # how its workers ended (agent.exits)
        self.exits = ExitWatch(on_thread=self.core.add_agent_thread) if config.workers else None
        self.sessions = Sessions(
            config.max_sessions,
            make_service(self.core, self.relay_keys, self.exits),
            self.core,
            config.send_timeout,
        )
        self._host, self._port = listener.getsockname()[:2]
        self._gate = Gate(
            listener,
            tls,
            Authenticator(config.tokens, limiter, cert_der),
            self.sessions,
            on_thread=self.core.add_agent_thread,
        )
        self.metrics = None
        if metrics_listener is not None and config.metrics is not None:
            from agent.metrics.endpoint import MetricsEndpoint

            self.metrics = MetricsEndpoint(
                config.metrics, self.core, metrics_listener, tls, self.relay_keys
            )
            self.core.metrics = self.metrics  # observers read it too (observer metrics NODE)

    @property
    def host(self) -> str:
        return str(self._host)

    @property
    def port(self) -> int:
        return int(self._port)

    @property
    def address(self) -> str:
        return join_host_port(self.host, self.port)

    @property
    def serving(self) -> bool:
        """True while the agent really accepts connections (its listener thread lives)."""
        return self._gate.serving

    def start(self) -> None:
        self._gate.start()
        if self.metrics is not None:
            self.metrics.start()
            log.info("runtime-observer agent: metrics at %s", self.metrics.url)
        self.core.stall_watch.start()
        if self.exits is not None:
            self.exits.start()
        self.core.sampler.start()  # last: its first sample counts the agent's threads apart
        registry.register(self.address)
        log.info(
            "runtime-observer agent %r listening on %s (%s, %s, up to %d sessions)",
            self.config.name,
            self.address,
            "TLS" if self.tls else "plain loopback",
            f"roles: {', '.join(self.config.tokens)}" if self.config.tokens else "anonymous viewer",
            self.config.max_sessions,
        )

    def abandon(self) -> None:
        """In a forked child, at once (agent.forking): close the child's copies of every
        descriptor this server holds, without shutdown() and without waiting for threads
        (the child has none of them); the parent's agent keeps serving. Later calls to
        stop() in the child touch nothing of the parent's either."""
        self._gate.abandon()
        if self.metrics is not None:
            self.metrics.abandon()
        if self.exits is not None:
            self.exits.abandon()
        self.sessions.abandon()
        self.core.stall_watch.abandon()  # its syscall files name the parent's threads

    def stop(self) -> None:
        """Close the listener and every connection; the port is free when this returns.

        In a forked child (agent.start() replacing the inherited agent, which serves
        nothing there) only the child's copies of the descriptors are closed: the
        parent's agent, which shares them, keeps serving."""
        inherited = os.getpid() != self._pid
        with contextlib.suppress(Exception):
            self._gate.stop(shutdown=not inherited)
        if self.metrics is not None:
            with contextlib.suppress(Exception):
                self.metrics.stop(shutdown=not inherited)
        self.sessions.close_all(shutdown=not inherited)
        self.core.sampler.stop()
        self.core.stall_watch.stop()
        self.core.profiler.shutdown()
        if self.exits is not None:
            if inherited:
                self.exits.abandon()
            else:
                self.exits.stop()
        if getattr(self.core, "own_series", None) is not None:  # a worker's, agent.metrics.own
            self.core.own_series.stop()
        if not inherited:
            registry.unregister()
            self.core.close()  # stops the tracemalloc the agent started; flushes the audit file
