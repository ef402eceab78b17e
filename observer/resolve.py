"""Node addresses that are names: one node per address the name resolves to.

A service scaled out behind one DNS name (``api.internal`` on Fly.io's private network
answers with every instance's address) becomes one node per instance. The name is
re-resolved periodically: new instances appear, instances that left are marked.

Resolution goes through ``socket.getaddrinfo``, except that a hosts(5)-format file
named by ``$OBSERVER_HOSTS_FILE`` is consulted first. That is how the tests give a name
several loopback addresses without touching ``/etc/hosts``, and how an engineer can
point a name at a tunnel's addresses by hand.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from agent.wire import join_host_port, split_host_port
from observer.errors import ObserverError
from observer.nodesfile import NodeSpec

HOSTS_ENV = "OBSERVER_HOSTS_FILE"
RESOLVE_EVERY = 30.0  # seconds between re-resolutions of every name


def is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def hosts_file_lookup(host: str, path: str | None = None) -> list[str]:
    """Addresses ``host`` has in the hosts file named by ``$OBSERVER_HOSTS_FILE``, in order."""
    path = path if path is not None else os.environ.get(HOSTS_ENV, "")
    if not path:
        return []
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ObserverError(f"cannot read {HOSTS_ENV} file {path}: {exc.strerror}") from exc
    found: list[str] = []
    for line in text.splitlines():
        words = line.split("#", 1)[0].split()
        if len(words) >= 2 and host in words[1:] and is_ip(words[0]) and words[0] not in found:
            found.append(words[0])
    return found


def resolve_host(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to, without duplicates, in the resolver's order."""
    if is_ip(host):
        return [host]
    listed = hosts_file_lookup(host)
    if listed:
        return listed
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ObserverError(f"cannot resolve {host}: {exc.strerror}") from exc
    found: list[str] = []
    for info in infos:
        ip = str(info[4][0])
        if ip not in found:
            found.append(ip)
    return found


def expands(spec: NodeSpec) -> bool:
    """Whether ``spec`` names a host to resolve into one node per address.

    Not for IP literals, not for ``localhost`` (its 127.0.0.1 and ::1 are one machine),
    and not when the nodes file says ``expand = false``.
    """
    parts = split_host_port(spec.address)
    if parts is None or not spec.expand:
        return False
    host = parts[0]
    return not is_ip(host) and host.lower() != "localhost"


def expand(spec: NodeSpec) -> list[NodeSpec]:
    """One spec per address of ``spec``'s host name (the spec itself if it does not expand).

    Each keeps the name in ``server_name``, so a CA-verified certificate is still checked
    against the name the user wrote, not the bare address.
    """
    if not expands(spec):
        return [spec]
    parts = split_host_port(spec.address)
    assert parts is not None
    host, port = parts
    return [
        replace(spec, address=join_host_port(ip, port), server_name=spec.server_name or host)
        for ip in resolve_host(host, port)
    ]


@dataclass
class Change:
    """What one resolution round found."""

    added: list[NodeSpec] = field(default_factory=list)  # new addresses
    gone: list[str] = field(default_factory=list)  # addresses no longer listed
    back: list[str] = field(default_factory=list)  # listed again after being gone
    removed: list[str] = field(default_factory=list)  # stand-ins for names that now resolve
    errors: list[str] = field(default_factory=list)  # names that did not resolve this time


class Roster:
    """The nodes a list of specs stands for, kept up to date by ``update()``.

    A name that fails to resolve keeps its previous addresses (a DNS hiccup must not
    mark a healthy fleet gone); the failure is reported in ``Change.errors``.
    """

    def __init__(self, specs: list[NodeSpec]) -> None:
        self.specs = list(specs)
        self.members: dict[str, NodeSpec] = {}  # address -> spec, in first-seen order
        self.origin: dict[str, str] = {}  # member address -> the address the user wrote
        self.gone: dict[str, float] = {}  # member address -> time.time() it left DNS
        self.stand_ins: set[str] = set()  # names shown as one node until they first resolve
        self.resolved_at = 0.0

    def update(self) -> Change:
        change = Change()
        listed_by: dict[str, set[str]] = {}
        for spec in self.specs:
            try:
                members = expand(spec)
            except ObserverError as exc:
                change.errors.append(str(exc))
                known = {a for a, o in self.origin.items() if o == spec.address}
                if known:
                    listed_by[spec.address] = known - set(self.gone)
                    continue
                members = [spec]  # never resolved: one node that shows why it is down
                self.stand_ins.add(spec.address)
            else:
                if spec.address in self.stand_ins and members != [spec]:
                    self.stand_ins.discard(spec.address)
                    del self.members[spec.address], self.origin[spec.address]
                    change.removed.append(spec.address)
            listed_by[spec.address] = {m.address for m in members}
            for member in members:
                if member.address not in self.members:
                    self.members[member.address] = member
                    self.origin[member.address] = spec.address
                    change.added.append(member)
        listed = set().union(*listed_by.values()) if listed_by else set()
        now = time.time()
        for address, origin in self.origin.items():
            if origin not in listed_by:
                continue
            if address not in listed and address not in self.gone:
                self.gone[address] = now
                change.gone.append(address)
            elif address in listed and address in self.gone:
                del self.gone[address]
                change.back.append(address)
        self.resolved_at = now
        return change
