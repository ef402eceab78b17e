"""A host planted with secrets in every form; nothing of them shows in any view.

What the attacker did: nothing clever. A viewer (the weakest role) and an operator read
every view the observer offers - ``observer info``, ``ps``, ``tree``, ``stack --locals``
for every thread and task, locals expanded value by value, the exposed objects, source
around every reported frame, and the GUI - of a host that holds secrets in its argv, its
child's argv, its environment, its locals (str, bytes, inside lists, tuples, dicts and
header pairs), its exposed objects and a settings module with hard-coded secrets. The
planted values are random (tests/attack/forms.py), so finding any 12 characters of one in
any output is a leak; the test counts them and names the view each leaked through.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from observer.client import Node
from observer.errors import NotFound
from tests.attack.forms import Plant, leaks, plant
from tests.helpers import HostProcess, wait_until
from tests.test_cli import observer

SEED = int(os.environ.get("SECRETS_SEED", "20240611"))
MAX_EXPANSIONS = 400  # locals expansion walks at most this many values per frame set


@dataclass
class Planted:
    """The running planted host and everything it was started with."""

    process: HostProcess
    address: str
    plan: Plant
    module: Path
    keys: object
    outputs: dict[str, str] = field(default_factory=dict)

    def creds(self, role: str = "viewer") -> list[str]:
        token = self.keys.operator_token if role == "operator" else self.keys.viewer_token
        return ["--token-file", str(token), "--fingerprint", self.keys.fingerprint]

    def connect(self, role: str = "viewer") -> Node:
        from observer.client import connect

        token = self.keys.operator_token if role == "operator" else self.keys.viewer_token
        return connect(self.address, token_file=token, fingerprint=self.keys.fingerprint)

    def cli(self, view: str, *args: str, role: str = "viewer") -> str:
        """Run one ``observer`` command and keep its output under ``view``."""
        out = observer(*args[:1], self.address, *self.creds(role), *args[1:])
        assert out.returncode == 0, f"{view}: {out.stderr}"
        self.outputs[view] = out.stdout + out.stderr
        return out.stdout


@pytest.fixture(scope="module")
def planted(keys, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Planted]:
    directory = tmp_path_factory.mktemp("planted")
    plan = plant(SEED)
    module = directory / "planted_settings.py"
    module.write_text(plan.module_source)
    plan_file = directory / "plan.json"
    plan_file.write_text(
        json.dumps({"values": plan.values, "child_argv": plan.child_argv, "module": str(module)})
    )
    process = HostProcess(
        [sys.executable, "-m", "tests.hosts.secrets", str(keys.directory), str(plan_file)]
        + plan.argv,
        env=plan.env,
    )
    try:
        process.wait_line(r"^ready$")
        address = process.wait_line(r"^agent: (\S+)").group(1)
        host = Planted(process, address, plan, module, keys)
        with host.connect() as node:
            wait_until(lambda: in_place(node), message="the planted locals and threads in place")
        yield host
    finally:
        process.stop()


def in_place(node: Node) -> bool:
    """Whether the keeper task, the holder thread and the settings thread stand where planted."""
    snap = node.snapshot()
    names = {t.name: t.id for t in snap.threads} | {t.name: t.id for t in snap.tasks}
    if not {"keeper", "holder", "settings-hold"} <= set(names) or not snap.children:
        return False
    lines = {
        name: [f.source for f in node.stack(names[name]).frames]
        for name in ("keeper", "holder", "settings-hold")
    }
    return (
        any("KEEPER-LINE" in s for s in lines["keeper"])
        and any("HOLDER-LINE" in s for s in lines["holder"])
        and any("connect(stop" in s for s in lines["settings-hold"])
    )


def expand_all(node: Node, target: str, frame: int, variables, path=(), budget=None) -> list[str]:
    """Reprs of every value reachable by expanding locals (depth-first, bounded)."""
    budget = budget if budget is not None else [MAX_EXPANSIONS]
    out = []
    for var in variables:
        out.append(f"{var.name} = {var.repr}")
        if not var.expandable or len(path) >= 4 or budget[0] <= 0:
            continue
        budget[0] -= 1
        try:
            info = node.locals(target, frame, (*path, var.name))
        except NotFound:  # the value moved on, or is redacted
            continue
        out += expand_all(node, target, frame, info.variables, (*path, var.name), budget)
    return out


def collect_every_view(host: Planted) -> None:
    """Run every view on the planted host as a viewer (source also as an operator)."""
    host.cli("info", "info")
    host.cli("info --json", "info", "--json")
    host.cli("ps", "ps")
    snapshot = json.loads(host.cli("ps --json", "ps", "--json"))
    host.cli("tree", "tree")
    host.cli("tree --json", "tree", "--json")
    targets = [t["id"] for t in snapshot["threads"]] + [t["id"] for t in snapshot["tasks"]]
    for target in targets:
        host.cli(f"stack {target} --locals", "stack", target, "--locals")
        host.cli(f"stack {target} --locals --json", "stack", target, "--locals", "--json")
    with host.connect() as node:
        expanded = []
        frames = set()
        for target in targets:
            try:
                stack = node.stack(target)
            except NotFound:
                continue
            for frame in stack.frames:
                frames.add((frame.file, frame.line))
                try:
                    info = node.locals(target, frame.index)
                except NotFound:
                    continue
                expanded += expand_all(node, target, frame.index, info.variables)
        host.outputs["locals expansion"] = "\n".join(expanded)
        process = node.process()
        exposed = []
        for item in process.exposed:
            exposed.append(f"{item.name}: {item.repr}")
            exposed += [f"  {v.name} = {v.repr}" for v in node.exposed(item.name)]
        host.outputs["exposed"] = "\n".join(exposed)
        viewer_source = []
        for file, line in sorted(frames):
            try:
                text = node.source(file, line, 200)
            except NotFound:
                continue
            viewer_source += text.lines
        host.outputs["source (viewer)"] = "\n".join(viewer_source)
    with host.connect("operator") as node:
        operator_source = []
        for file, line in sorted(frames | {(str(host.module), 1)}):
            try:
                operator_source += node.source(file, line, 200).lines
            except NotFound:
                continue
        host.outputs["source (operator)"] = "\n".join(operator_source)


def leak_report(host: Planted) -> tuple[list[str], list[str]]:
    """(leaked secrets with the views they showed in, secrets whose place no view showed)."""
    everything = "\n".join(host.outputs.values())
    leaked, unseen = [], []
    for secret in host.plan.secrets:
        views = [view for view, text in host.outputs.items() if leaks(secret.needles, text)]
        if views:
            leaked.append(f"{secret.label} in {', '.join(sorted(views))}")
        if secret.marker not in everything:
            unseen.append(f"{secret.label} (no {secret.marker!r} anywhere)")
    return leaked, unseen


def test_no_planted_secret_shows_in_any_view(planted):
    collect_every_view(planted)
    leaked, unseen = leak_report(planted)
    total = len(planted.plan.secrets)
    print(f"secrets leaked/planted: {len(leaked)}/{total} (seed {SEED})")
    assert not unseen, f"the views never showed these places, so the test proves nothing: {unseen}"
    assert not leaked, f"leaked {len(leaked)}/{total} (seed {SEED}):\n" + "\n".join(leaked)
    # the places were shown, redacted, and the host kept working all along
    assert "<redacted>" in planted.outputs["info"]
    assert planted.process.proc.poll() is None
