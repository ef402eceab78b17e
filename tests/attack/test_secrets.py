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
    argv = [sys.executable, "-m", "tests.hosts.secrets", str(keys.directory), str(plan_file)]
    process = HostProcess([*argv, *plan.argv], env=plan.env)
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
    # the agent's own threads come and go with connections (and hold nothing planted)
    threads = [t["id"] for t in snapshot["threads"] if not t["is_agent"]]
    targets = threads + [t["id"] for t in snapshot["tasks"]]
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
    if os.environ.get("SECRETS_DUMP"):  # to read what every view showed
        Path(os.environ["SECRETS_DUMP"]).write_text(
            "".join(f"===== {view}\n{text}\n" for view, text in planted.outputs.items())
        )
    leaked, unseen = leak_report(planted)
    total = len(planted.plan.secrets)
    print(f"secrets leaked/planted: {len(leaked)}/{total} (seed {SEED})")
    assert not unseen, f"the views never showed these places, so the test proves nothing: {unseen}"
    assert not leaked, f"leaked {len(leaked)}/{total} (seed {SEED}):\n" + "\n".join(leaked)
    # the places were shown, redacted, and the host kept working all along
    assert "<redacted>" in planted.outputs["info"]
    assert planted.process.proc.poll() is None


def module_line(host: Planted, marker: str) -> int:
    """Line number of the first line of the planted settings module holding ``marker``."""
    lines = host.plan.module_source.splitlines()
    return next(i for i, text in enumerate(lines, 1) if marker in text)


def test_viewer_reads_source_only_around_reported_frames(planted):
    """A viewer may read lines near a frame the agent showed, never a whole module; an
    operator may read any loaded module (redacted like everything else)."""
    module = str(planted.module)
    hold = module_line(planted, "connect(stop, dsn=")  # where settings-hold stands
    top = module_line(planted, "from __future__")
    assert hold - top > 20, "the planted module must put its top out of the viewer's window"
    with planted.connect() as node:
        thread = next(t for t in node.threads() if t.name == "settings-hold")
        frames = node.stack(thread.id).frames  # the agent reports these lines to the viewer
        assert any(f.file == module and f.line == hold for f in frames)
        near = node.source(module, hold, 200)
        assert near.first >= hold - 20 and near.first + len(near.lines) - 1 <= hold + 20
        assert any("connect(stop" in text for text in near.lines)
        with pytest.raises(NotFound, match="not near a line the agent reported"):
            node.source(module, top, 3)
        json_file = json.__file__  # loaded by the host, on no stack
        with pytest.raises(NotFound):
            node.source(json_file, 1, 10)
        with pytest.raises(NotFound):
            node.source("/etc/passwd", 1, 10)
    with planted.connect("operator") as node:
        whole = node.source(module, top, 200)
        assert any("SECRET_KEY = '<redacted>'" in text for text in whole.lines)
        assert node.source(json_file, 1, 10).lines
        with pytest.raises(NotFound):
            node.source("/etc/passwd", 1, 10)
    assert not [s.label for s in planted.plan.secrets if leaks(s.needles, "\n".join(whole.lines))]


def gui_texts(tree) -> list[str]:
    """Every text of every column of every item of a QTreeWidget, expanded or not."""
    out = []
    stack = [tree.topLevelItem(i) for i in range(tree.topLevelItemCount())]
    while stack:
        item = stack.pop()
        out += [item.text(c) for c in range(tree.columnCount())]
        out += [item.toolTip(c) for c in range(tree.columnCount())]
        stack += [item.child(i) for i in range(item.childCount())]
    return out


def test_gui_shows_the_planted_host_redacted(qtbot, window, planted):
    """The desktop observer renders what the agent sends: its System tab (argv, exposed
    objects, environment) and the inspectors of the planted task, thread and exposed object
    show the places, never the secrets."""
    pytest.importorskip("pytestqt")
    from tests.helpers import node_spec

    wait = 20_000
    tab = window.show_tab("system")
    link = window.add_link(node_spec(planted.address, planted.keys, token="viewer"))
    qtbot.waitUntil(lambda: tab.info is not None, timeout=wait)
    texts = gui_texts(tab.view)
    with planted.connect() as node:
        snap = node.snapshot()
    ids = {t.name: (t.id, "thread") for t in snap.threads}
    ids |= {t.name: (t.id, "task") for t in snap.tasks}
    for name in ("keeper", "holder"):
        target, kind = ids[name]
        inspector = window.targets.inspect(link, target, kind, name)
        qtbot.addWidget(inspector)
        qtbot.waitUntil(lambda i=inspector: i.frames.topLevelItemCount() > 0, timeout=wait)
        texts += gui_texts(inspector.frames)
        for index in range(inspector.frames.topLevelItemCount()):
            inspector.frames.setCurrentItem(inspector.frames.topLevelItem(index))
            texts += gui_texts(inspector.variables)
    exposed = window.targets.inspect_exposed(link, "vault_settings")
    qtbot.addWidget(exposed)
    qtbot.waitUntil(lambda: exposed.variables.topLevelItemCount() > 0, timeout=wait)
    texts += gui_texts(exposed.variables)
    shown = "\n".join(texts)
    for marker in ("--password", "SENTRY_DSN", "vault_settings", "held_01", "st_cmd", "pair"):
        assert marker in shown, f"the GUI never showed {marker!r}"
    leaked = [s.label for s in planted.plan.secrets if leaks(s.needles, shown)]
    assert not leaked, f"the GUI showed {len(leaked)}/{len(planted.plan.secrets)}: {leaked}"
