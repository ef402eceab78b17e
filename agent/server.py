"""Agent lifecycle: an rpyc ThreadedServer on a daemon thread, fail-ignorant towards the host."""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import threading
from typing import Any

from rpyc.utils.server import ThreadedServer

from agent import registry
from agent.config import AgentConfig
from agent.core import AgentCore
from agent.security import (
    Authenticator,
    AuthRejected,
    ConfigError,
    FailureLimiter,
    is_loopback_host,
    server_context,
)
from agent.service import make_service
from agent.wire import join_host_port

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


class _Server(ThreadedServer):
    """ThreadedServer that bounds connections, names its threads and never raises."""

    def __init__(
        self,
        *args: Any,
        core: AgentCore,
        max_connections: int,
        send_timeout: float | None = None,
        **kw: Any,
    ) -> None:
        super().__init__(*args, **kw)
        self._core = core
        self._send_timeout = send_timeout
        self._slots = threading.BoundedSemaphore(max_connections)

    def _authenticate_and_serve_client(self, sock: socket.socket) -> None:
        ident = threading.get_ident()
        self._core.add_agent_thread(ident)
        with contextlib.suppress(Exception):
            threading.current_thread().name = "observer-agent-conn"
        acquired = self._slots.acquire(blocking=False)
        live = sock  # after TLS wrapping, the SSL socket owns the descriptor
        try:
            if not acquired:
                log.warning("runtime-observer agent: too many connections, refusing one")
                return
            try:
                live, credentials = self.authenticator(sock)  # type: ignore[misc]
            except AuthRejected:
                return
            if live is not sock:  # so that close() (agent.stop) reaches this connection
                self.clients.discard(sock)
                self.clients.add(live)
            self._serve(live, credentials)
        except Exception:
            log.debug("runtime-observer agent: connection ended with an error", exc_info=True)
        finally:
            if acquired:
                self._slots.release()
            for s in {sock, live}:
                with contextlib.suppress(Exception):
                    s.shutdown(socket.SHUT_RDWR)
                with contextlib.suppress(Exception):
                    s.close()
                self.clients.discard(s)
            self._core.remove_agent_thread(ident)

    def _serve(self, sock: socket.socket, credentials: Any) -> None:
        """Serve one logged-in peer (requests capped, every frame within send_timeout)."""
        config = dict(
            self.protocol_config,
            credentials=credentials,
            endpoints=(sock.getsockname(), sock.getpeername()),
            logger=self.logger,
        )
        from agent.channel import serve_bounded

        serve_bounded(self.service, sock, config, self._core.audit, self._send_timeout)


class AgentServer:
    """A running agent: core state, sampler thread and the rpyc server thread."""

    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        remote = not is_loopback_host(config.host)
        if remote and not (config.tls_cert and config.tokens):
            raise ConfigError(
                f"refusing to bind {config.host}:{config.port} without TLS and a token: "
                "binding anything but loopback needs tls_cert, tls_key and tokens "
                "(run `observer keygen DIR` to make them)"
            )
        self.core = AgentCore(config.name, history_idle_interval=config.history_idle_interval)
        tls: ssl.SSLContext | None = None
        cert_der = None
        if config.tls_cert and config.tls_key:
            tls = server_context(config.tls_cert, config.tls_key, config.client_cafile)
            with open(config.tls_cert, encoding="ascii") as fh:
                cert_der = ssl.PEM_cert_to_DER_cert(fh.read())
        self.tls = tls is not None
        authenticator = Authenticator(
            tls, config.tokens, FailureLimiter(config.auth_failure_limit), cert_der
        )
        rpyc_log = logging.getLogger("agent.rpyc")
        rpyc_log.setLevel(logging.WARNING)
        self._server = _Server(
            make_service(self.core),
            hostname=config.host,
            port=config.port,
            ipv6=":" in config.host,
            authenticator=authenticator,
            protocol_config=dict(PROTOCOL_CONFIG),
            logger=rpyc_log,
            listener_timeout=0.5,
            core=self.core,
            max_connections=config.max_connections,
            send_timeout=config.send_timeout,
        )
        self._thread: threading.Thread | None = None

    @property
    def host(self) -> str:
        return self._server.host

    @property
    def port(self) -> int:
        return int(self._server.port)

    @property
    def address(self) -> str:
        return join_host_port(self._server.host, self.port)

    def start(self) -> None:
        self._server._listen()
        self._thread = threading.Thread(
            target=self._serve_forever, name="observer-agent-server", daemon=True
        )
        self._thread.start()
        self.core.sampler.start()
        registry.register(self.address)
        log.info(
            "runtime-observer agent %r listening on %s (%s, %s)",
            self.config.name,
            self.address,
            "TLS" if self.tls else "plain loopback",
            f"roles: {', '.join(self.config.tokens)}" if self.config.tokens else "anonymous viewer",
        )

    def _serve_forever(self) -> None:
        self.core.add_agent_thread(threading.get_ident())
        try:
            self._server.start()
        except Exception:
            if self._server.active:
                log.exception("runtime-observer agent: server thread stopped")

    def stop(self) -> None:
        """Close the listener and every connection; the port is free when this returns."""
        with contextlib.suppress(Exception):
            self._server.close()
        self.core.sampler.stop()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=2.0)
        registry.unregister()
