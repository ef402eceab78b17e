"""The window's nodes: one ``NodeLink`` per address, DNS names expanded, the nodes file kept.

A node given by a DNS name becomes one link per address it resolves to, re-resolved
every ``resolve_every`` seconds off the GUI thread (``observer.gui.resolver``); addresses
that leave the name's answers stay, marked gone. Qt views learn of every change through
signals, so this module knows nothing of the node list, the tabs or the menus.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from PyQt6.QtCore import QObject, pyqtSignal

from observer.errors import ObserverError
from observer.gui.link import NodeLink
from observer.gui.resolver import Resolver
from observer.gui.workerlink import WorkerHealth
from observer.nodesfile import NodeSpec, forget, load_nodes, remember
from observer.resolve import RESOLVE_EVERY, Change, expands


class NodeSet(QObject):
    """Every node of the window, in the order they were added."""

    added = pyqtSignal(object)  # NodeLink: a new node to show
    removed = pyqtSignal(object)  # NodeLink: no longer shown (closed right after)
    replaced = pyqtSignal(object, object)  # (old, new) NodeLink: an edited node
    link_changed = pyqtSignal(object)  # NodeLink: its status, name, role or rtt changed
    marked = pyqtSignal(object)  # NodeLink: its address left (or came back to) DNS
    resolved = pyqtSignal(str, bool)  # (name, first answer): a DNS name was resolved
    dns_errors = pyqtSignal(list)  # every name's current resolution errors (str)
    save_failed = pyqtSignal(str)  # the nodes file could not be written: why
    worker_added = pyqtSignal(object, object)  # (host, worker) NodeLink: a worker opened

    def __init__(self, nodes_file: Path | None, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.nodes_file = nodes_file
        self.links: list[NodeLink] = []
        self.named: dict[str, NodeSpec] = {}  # DNS names (host:port) -> the spec given
        self.resolver = Resolver(self)
        self.resolver.changed.connect(self._names_changed)
        self.resolve_every = RESOLVE_EVERY  # seconds between re-resolutions of the names
        self._resolved_at = time.monotonic()
        self.unanswered: set[str] = set()  # names not resolved yet
        self._dns_errors: dict[str, list[str]] = {}
        self.workers: dict[NodeLink, list[NodeLink]] = {}  # host -> its opened workers

    # ------------------------------------------------------------ adding and removing

    def add_spec(self, spec: NodeSpec) -> NodeLink | None:
        """Show a node, or every address of a DNS name (those appear once resolved, off
        the GUI thread). Returns the node's link, None for a name."""
        if not expands(spec):
            return self.add_link(spec)
        self.named[spec.address] = spec
        self.unanswered.add(spec.address)
        self.resolver.add(spec)
        return None

    def add_link(self, spec: NodeSpec, origin: str = "") -> NodeLink:
        """Start showing one node at ``spec.address`` (it connects in the background);
        ``origin`` is the DNS name it was resolved from."""
        link = self._new_link(spec)
        link.origin = origin
        self.links.append(link)
        self.added.emit(link)
        return link

    def edit(self, link: NodeLink, spec: NodeSpec) -> NodeLink | None:
        """Replace ``link`` (or every address of its DNS name) by ``spec``: an address keeps
        its place in the list; a name is resolved again. Returns the new link of an address."""
        name = self.name_of(link)
        if name:
            self.drop_name(name)
            self.add_spec(spec)  # each address comes back with the new spec
            return None
        new = self._new_link(spec)
        self._drop_workers(link)  # they ran through the old link's session
        self.links[self.links.index(link)] = new
        self.replaced.emit(link, new)
        link.close()
        return new

    def remove(self, link: NodeLink) -> None:
        """Stop showing ``link`` (every address of its DNS name) and forget it in the file."""
        name = self.name_of(link)
        if name:
            self.drop_name(name)
        else:
            self.drop_link(link)
        self.save(forget, name or link.spec.address)

    def drop_name(self, name: str) -> None:
        self.named.pop(name, None)
        self.unanswered.discard(name)
        self._dns_errors.pop(name, None)
        self.resolver.remove(name)
        for link in [link for link in self.links if self.name_of(link) == name]:
            self.drop_link(link)
        self._report_dns_errors()

    def drop_link(self, link: NodeLink) -> None:
        self._drop_workers(link)
        self.links.remove(link)
        self.removed.emit(link)
        link.close()

    def close(self) -> None:
        """Stop resolving and close every connection (the window is closing)."""
        self.resolver.close()
        for link in self.all_links():
            link.close()

    # ------------------------------------------------------------ workers opened as nodes

    def open_worker(self, host: NodeLink, pid: int, name: str, started: float = 0.0) -> NodeLink:
        """Show worker ``pid`` of ``host`` as a node of its own, reached through the host's
        session (``observer.gui.workerlink``); the entry already open for it if any."""
        for link in self.workers.get(host, []):
            if link.pid == pid and not link.health.exited:
                return link
        health = WorkerHealth(host.health, pid, name, started, taken=lambda: self._open_pids(host))
        link = NodeLink(health.spec, self, health=health)
        link.changed.connect(lambda link=link: self.link_changed.emit(link))
        self.workers.setdefault(host, []).append(link)
        self.worker_added.emit(host, link)
        return link

    def close_worker(self, link: NodeLink) -> None:
        """Stop showing an opened worker (its master's session stays)."""
        for host, opened in self.workers.items():
            if link in opened:
                opened.remove(link)
                self.removed.emit(link)
                link.close()
                if not opened:
                    del self.workers[host]
                return

    def host_of(self, link: NodeLink) -> NodeLink | None:
        """The master an opened worker is reached through (None: ``link`` is no worker)."""
        return next((host for host, opened in self.workers.items() if link in opened), None)

    def all_links(self) -> list[NodeLink]:
        """Every node, then every opened worker."""
        return [*self.links, *(w for opened in self.workers.values() for w in opened)]

    def _open_pids(self, host: NodeLink) -> set[int]:
        return {w.pid for w in list(self.workers.get(host, ())) if w.pid is not None}

    def _drop_workers(self, host: NodeLink) -> None:
        for link in self.workers.pop(host, []):
            self.removed.emit(link)
            link.close()

    def _new_link(self, spec: NodeSpec) -> NodeLink:
        link = NodeLink(spec, self)
        link.changed.connect(lambda link=link: self.link_changed.emit(link))
        return link

    # ------------------------------------------------------------ what is known

    def name_of(self, link: NodeLink) -> str:
        """The DNS name ``link`` stands for ('' for a node given by address)."""
        if link.origin:
            return link.origin
        return link.spec.address if link.spec.address in self.named else ""

    def given_spec(self, link: NodeLink) -> NodeSpec:
        """What the user gave for ``link``: its DNS name's spec, or its own."""
        name = self.name_of(link)
        return self.named[name] if name else link.spec

    def remembered(self, address: str) -> bool:
        """Whether the nodes file lists ``address``."""
        if self.nodes_file is None:
            return False
        try:
            return any(s.address == address for s in load_nodes(self.nodes_file))
        except ObserverError:
            return False

    def save(self, change: Callable[[Path, Any], object], what: NodeSpec | str) -> None:
        """``remember(file, spec)`` or ``forget(file, address)``; a failure is signalled."""
        if self.nodes_file is None:
            return
        try:
            change(self.nodes_file, what)
        except (OSError, ObserverError) as exc:
            self.save_failed.emit(f"could not save {self.nodes_file}: {exc}")

    def remember(self, spec: NodeSpec) -> None:
        self.save(remember, spec)

    # ------------------------------------------------------------ DNS names

    def resolve_now(self) -> None:
        """Resolve every DNS name again now (off the GUI thread); changes arrive later."""
        self._resolved_at = time.monotonic()
        self.resolver.resolve_all()

    def resolve_if_due(self) -> None:
        """Resolve again when ``resolve_every`` seconds passed since the last round."""
        if self.named and time.monotonic() - self._resolved_at >= self.resolve_every:
            self.resolve_now()

    def _names_changed(self, name: str, change: Change) -> None:
        """Apply one name's resolution (GUI thread): new addresses become nodes, addresses
        no longer listed are marked (kept, greyed), a stand-in gives way to the real ones."""
        spec = self.named.get(name)
        if spec is None:
            return
        for address in change.removed:
            for link in [k for k in self.links if self.name_of(k) == name]:
                if link.spec.address == address:
                    self.drop_link(link)
        for member in change.added:
            if member.address == name:  # not resolved yet: the name stands in, says why
                self.add_link(member)
                continue
            if spec.name:  # the same name on every address: say which one this is
                host = member.address.rsplit(":", 1)[0].strip("[]")
                member = replace(member, name=f"{spec.name}@{host}")
            self.add_link(member, name)
        now = time.time()
        for link in self.links:
            if link.origin != name:
                continue
            if link.spec.address in change.gone:
                link.gone_since = now
            elif link.spec.address in change.back:
                link.gone_since = 0.0
            else:
                continue
            self.marked.emit(link)
        self._dns_errors[name] = change.errors
        self._report_dns_errors()
        first = name in self.unanswered
        self.unanswered.discard(name)
        self.resolved.emit(name, first)

    def _report_dns_errors(self) -> None:
        self.dns_errors.emit([e for each in self._dns_errors.values() for e in each])
