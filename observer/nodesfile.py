"""The remembered nodes: a small TOML file in the user's config dir, Qt-free.

    # ~/.config/runtime-observer/nodes.toml
    [[node]]
    name = "api-eu"
    address = "10.0.0.5:7330"
    token_file = "~/.config/runtime-observer/api.token"
    fingerprint = "sha256:..."
    role = "viewer"          # optional: hold an operator token read-only

    [[node]]
    address = "api.internal:7330"   # a name with several addresses: one node each

Tokens themselves never go in this file, only the path of the file that holds them.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import fields
from pathlib import Path
from typing import Any

from agent.record import record
from observer.errors import ObserverError

ROLE_CHOICES = ("", "viewer", "operator", "admin")


@record
class NodeSpec:
    """How to reach one node: what ``observer.client.connect`` needs, plus a display name."""

    address: str
    name: str = ""
    token_file: str = ""
    fingerprint: str = ""
    cafile: str = ""
    certfile: str = ""
    keyfile: str = ""
    tls: bool = True
    timeout: float = 10.0
    role: str = ""  # "viewer" asks the agent for less than the token allows; "" = the token's
    expand: bool = True  # a name resolving to several addresses becomes one node per address
    server_name: str = ""  # the name the certificate is checked against (set for each address)

    @property
    def label(self) -> str:
        """What the user calls this node: its name, else its address."""
        return self.name or self.address

    def connect_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``observer.client.connect`` (after the address)."""
        return {
            "token_file": _expand(self.token_file) or None,
            "fingerprint": self.fingerprint or None,
            "cafile": _expand(self.cafile) or None,
            "certfile": _expand(self.certfile) or None,
            "keyfile": _expand(self.keyfile) or None,
            "tls": self.tls,
            "timeout": self.timeout,
            "role": self.role or None,
            "server_name": self.server_name or None,
        }


def _expand(path: str) -> str:
    return os.path.expanduser(path) if path else ""


def config_dir() -> Path:
    """``$OBSERVER_CONFIG_DIR``, else ``$XDG_CONFIG_HOME/runtime-observer`` (~/.config)."""
    explicit = os.environ.get("OBSERVER_CONFIG_DIR")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "runtime-observer"


def default_nodes_path() -> Path:
    """Where remembered nodes live unless ``--nodes FILE`` says otherwise."""
    return config_dir() / "nodes.toml"


def load_nodes(path: Path) -> list[NodeSpec]:
    """Read a nodes file; a missing file is an empty list, a broken one a clear error."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise ObserverError(f"cannot read nodes file {path}: {exc.strerror}") from exc
    try:  # imported here: every CLI command builds a NodeSpec, few read this file
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ObserverError(f"nodes file {path} is not valid TOML: {exc}") from exc
    entries = data.get("node", [])
    if not isinstance(entries, list):
        raise ObserverError(f"nodes file {path}: 'node' must be an array of tables ([[node]])")
    return [_spec(entry, path, i) for i, entry in enumerate(entries, 1)]


def _spec(entry: Any, path: Path, number: int) -> NodeSpec:
    where = f"nodes file {path}, node {number}"
    if not isinstance(entry, dict) or not isinstance(entry.get("address"), str):
        raise ObserverError(f'{where}: every [[node]] needs an address = "host:port"')
    known = {f.name for f in fields(NodeSpec)}
    unknown = sorted(set(entry) - known)
    if unknown:
        raise ObserverError(f"{where}: unknown key {unknown[0]!r}")
    values: dict[str, Any] = {}
    for key, value in entry.items():
        expected: type | tuple[type, ...] = str
        if key in ("tls", "expand"):
            expected = bool
        elif key == "timeout":
            expected = (int, float)
        if not isinstance(value, expected) or (key == "timeout" and isinstance(value, bool)):
            raise ObserverError(f"{where}: {key} has the wrong type")
        values[key] = float(value) if key == "timeout" else value
    if values.get("role", "") not in ROLE_CHOICES:
        raise ObserverError(f"{where}: role must be one of {', '.join(ROLE_CHOICES[1:])}")
    return NodeSpec(**values)


def dumps_nodes(specs: Iterable[NodeSpec]) -> str:
    """TOML text for ``specs``; default values are left out to keep the file readable."""
    default = NodeSpec(address="")
    out = ["# Nodes remembered by runtime-observer. Tokens stay in their own files.\n"]
    for spec in specs:
        out.append("\n[[node]]\n")
        for f in fields(NodeSpec):
            value = getattr(spec, f.name)
            if f.name != "address" and value == getattr(default, f.name):
                continue
            if isinstance(value, bool):
                text = "true" if value else "false"
            elif isinstance(value, float):
                text = repr(value)
            else:
                text = toml_string(value)
            out.append(f"{f.name} = {text}\n")
    return "".join(out)


def toml_string(value: str) -> str:
    """A TOML basic string: quotes, backslashes and control characters escaped."""
    out = []
    for ch in value:
        if ch in ('"', "\\"):
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def save_nodes(path: Path, specs: Iterable[NodeSpec]) -> None:
    """Write the nodes file atomically (0600: it names credential files)."""
    text = dumps_nodes(specs)
    import tempfile  # here: every CLI command builds a NodeSpec, few write this file

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".nodes-", suffix=".toml")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def remember(path: Path, spec: NodeSpec) -> list[NodeSpec]:
    """Add or replace (by address) one node in the file; return the new list."""
    specs = [s for s in load_nodes(path) if s.address != spec.address] + [spec]
    save_nodes(path, specs)
    return specs


def forget(path: Path, address: str) -> list[NodeSpec]:
    """Remove a node (by address) from the file; return the new list."""
    specs = [s for s in load_nodes(path) if s.address != address]
    save_nodes(path, specs)
    return specs
