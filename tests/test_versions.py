"""asyncio features that differ between Python versions, seen through a real agent.

The host (tests/hosts/modern.py) uses eager tasks, TaskGroup, asyncio.timeout, several
asyncio.Runner loops in threads, shield, wait_for and gather; each test skips, saying
which Python it needs, where the feature does not exist.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from observer.client import Node, connect
from observer.tree import TreeNode, build_tree
from tests.helpers import HostProcess, echo_ok, line_value, wait_until

RUNNING = f"Python {sys.version.split()[0]}"


@dataclass
class Modern:
    process: HostProcess
    address: str
    echo: str
    features: dict[str, bool]
    keys: Any

    def connect(self) -> Node:
        return connect(
            self.address, token_file=self.keys.operator_token, fingerprint=self.keys.fingerprint
        )

    def need(self, feature: str, version: str) -> None:
        if not self.features[feature]:
            pytest.skip(f"{feature} needs Python {version}+ ({RUNNING} has none)")


@pytest.fixture(scope="module")
def modern(keys: Any) -> Iterator[Modern]:
    proc = HostProcess([sys.executable, "-m", "tests.hosts.modern", str(keys.directory)])
    proc.wait_line(r"^echo: ")
    features = {}
    for line in proc.lines:
        if line.startswith("feature: "):
            name, value = line.split()[1:3]
            features[name] = value == "yes"
    yield Modern(proc, line_value(proc, "agent"), line_value(proc, "echo"), features, keys)
    proc.stop()


@pytest.fixture
def node(modern: Modern) -> Iterator[Node]:
    with modern.connect() as n:
        yield n


def nodes_by_name(node: Node) -> dict[str, TreeNode]:
    root = build_tree(node.snapshot())
    return {n.name: n for _depth, n in root.walk() if n.kind == "task"}


def nested(node: Node, owner: str, children: set[str]) -> dict[str, TreeNode]:
    """Wait until ``children`` are listed under ``owner`` in the tree; the tree's tasks."""

    def check() -> dict[str, TreeNode] | None:
        tasks = nodes_by_name(node)
        under = {c.name for c in tasks[owner].children} if owner in tasks else set()
        return tasks if children <= under else None

    return wait_until(check, message=f"{sorted(children)} nested under {owner}")


def test_every_version_nests_shield_wait_for_and_gather(node):
    nested(node, "shield-owner", {"shielded"})
    nested(node, "waitfor-owner", {"waitfor-child"})
    tasks = nested(node, "gather-owner", {"gathered-1", "gathered-2"})
    assert tasks["gather-owner"].function.endswith("gather_owner")


def test_taskgroup_children_nest_under_the_task_awaiting_the_group(modern, node):
    modern.need("taskgroup", "3.11")
    tasks = nested(node, "tg-owner", {"tg-child-1", "tg-child-2"})
    assert tasks["tg-owner"].function.endswith("taskgroup_owner")
    assert "modern.py" in tasks["tg-child-1"].location


def test_timeout_scope_child_nests_under_its_owner(modern, node):
    modern.need("timeout", "3.11")
    tasks = nested(node, "timeout-owner", {"timeout-child"})
    assert tasks["timeout-owner"].function.endswith("timeout_owner")


def test_runner_loops_in_threads_are_each_found_with_their_tasks(modern, node):
    modern.need("runner", "3.11")
    snap = node.snapshot()
    threads = {t.name: t for t in snap.threads}
    tasks = {t.name: t for t in snap.tasks}
    loops = {lp.id: lp for lp in snap.loops}
    for index in (1, 2):
        task = tasks[f"runner-{index}-task"]
        loop = loops[task.loop]
        assert loop.thread_ident == threads[f"runner-{index}"].ident
        assert threads[f"runner-{index}"].loop == task.loop
    assert tasks["runner-1-task"].loop != tasks["runner-2-task"].loop
    assert len({lp.id for lp in snap.loops}) >= 3  # main, runner-1, runner-2 at least


def test_eager_task_is_listed_and_cancellable(modern, node):
    modern.need("eager", "3.12")
    tasks = {t.name: t for t in node.tasks()}
    eager = tasks["eager-sleeper"]
    assert eager.state == "pending" and eager.file.endswith("modern.py")
    mark = modern.process.mark()
    result = node.cancel(eager.id)
    assert result.ok, result.message
    modern.process.wait_line(r"^event: eager-sleeper ended cancelled=True", start=mark)
    wait_until(
        lambda: "eager-sleeper" not in {t.name for t in node.tasks() if t.state == "pending"},
        message="eager-sleeper gone from the pending tasks",
    )
    assert echo_ok(modern.echo)
